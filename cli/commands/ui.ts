import type { Command } from 'commander';
import { UsageError, loadConfigFile } from '../../mesh/index.js';
import { runMeshView, UI_DEFAULT_PORT, type RunningMeshView } from '../../ui/index.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, runUntilStopped } from '../lifecycle.js';
import { namingConfigFile, parsePortFlag } from '../port-flags.js';

interface UiFlags {
  config: string;
  port?: number;
  host?: string;
  allowRemote?: boolean;
  prometheus?: string;
  scrape: string[];
  socket?: string;
  refresh?: string;
}

function refreshFlag(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 100 || value > 60_000) throw new UsageError(`--refresh must be a whole number of milliseconds from 100 to 60000 (got "${text}")`);
  return value;
}

export function registerUiCommands(program: Command): void {
  program
    .command('ui')
    .description('serve the live view of the mesh as this cluster sees it: a page with the clusters, federation links, services, traffic and events, updated as they change (GET only; JSON at /api/mesh, server-sent events at /api/events)')
    .option('-c, --config <file>', "cluster config (YAML): the local etcd to read, and defaults from its ui: section", 'cluster.yaml')
    .option('-p, --port <port>', `port of the page, 0 picks one (default: ui.port, ${UI_DEFAULT_PORT})`, parsePortFlag('--port'))
    .option('--host <host>', 'listen address (default: ui.host, 127.0.0.1); anything but loopback also needs --allow-remote, as the page has no login')
    .option('--allow-remote', 'allow --host to be a non-loopback address such as 0.0.0.0: everyone who reaches it sees the mesh topology')
    .option('--prometheus <url>', 'a Prometheus server scraping the sidecars (e.g. http://127.0.0.1:9090): request rate, 5xx ratio and p99 between clusters (default: ui.prometheus)')
    .option('--scrape <url>', "without a Prometheus: a sidecar's /metrics URL to scrape on every read for the traffic numbers (repeatable; default: ui.scrape, else the metrics ports the local catalog's endpoints registered)", (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--socket <path>', 'listen on this Unix socket instead of --host/--port (for a port forward from another network namespace, as npm run demo does)')
    .option('--refresh <ms>', 'how often the local etcd is read, in ms (default: ui.refreshMs, 1000)')
    .action(async (flags: UiFlags) => {
      const refreshMs = refreshFlag(flags.refresh);
      const config = loadConfigFile('cluster', flags.config);
      await runUntilStopped<RunningMeshView>({
        component: 'ui',
        drainTimeoutMs: DEFAULT_DRAIN_TIMEOUT_MS,
        start: () =>
          namingConfigFile(flags.config, () =>
            runMeshView({
              config,
              ...(flags.host !== undefined ? { host: flags.host } : {}),
              ...(flags.port !== undefined ? { port: flags.port } : {}),
              ...(flags.allowRemote ? { allowRemote: true } : {}),
              ...(flags.prometheus !== undefined ? { prometheus: flags.prometheus } : {}),
              ...(flags.scrape.length > 0 ? { scrape: flags.scrape } : {}),
              ...(flags.socket !== undefined ? { socketPath: flags.socket } : {}),
              ...(refreshMs !== undefined ? { refreshMs } : {}),
            }),
          ),
        stop: (running, steps) => steps.run('mesh view', async () => running?.stop()),
        announce: (running) => process.stdout.write(`mesh view of ${config.cluster.name} at ${running.url}\n`),
      });
    });
}
