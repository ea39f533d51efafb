import { availableParallelism } from 'node:os';
import type { Command } from 'commander';
import { GatewayConfig, UsageError, loadConfigFile } from '../../mesh/index.js';
import { Balancers, isGatewayWorker, runGateway, runGatewayWorker, type Balancer, type RunGatewayOptions, type RunningGateway, type TargetAddress } from '../../gateway/index.js';
import { runUntilStopped } from '../lifecycle.js';
import { namingConfigFile, observabilityOverrides, observabilityPortOptions, parsePortFlag, type ObservabilityPortFlags } from '../port-flags.js';

interface GatewayFlags extends ObservabilityPortFlags {
  config?: string;
  routes?: string;
  host?: string;
  port?: number;
  workers: string;
  id?: string;
  controller: string[];
  balancer?: string;
}

/** What a gateway's stop may take beyond its connections' drain (deregistering, closing the route source). */
const DRAIN_MARGIN_MS = 5_000;

function hostPort(text: string): TargetAddress {
  const match = /^(.+):(\d{1,5})$/.exec(text);
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) throw new UsageError(`--controller must be host:port (got "${text}")`);
  return { address: match[1]!.replace(/^\[|\]$/g, ''), port: Number(match[2]) };
}

function optionsFrom(flags: GatewayFlags): RunGatewayOptions {
  if (!flags.config && !flags.routes) throw new UsageError('give a route source: --config cluster.yaml (etcd catalog) or --routes routes.yaml (static)');
  const workers = flags.workers === 'auto' ? availableParallelism() : Number(flags.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) throw new UsageError(`--workers must be "auto" or an integer 1-256 (got "${flags.workers}")`);
  if (flags.balancer !== undefined && !Balancers.includes(flags.balancer as Balancer)) {
    throw new UsageError(`--balancer must be one of ${Balancers.join(', ')} (got "${flags.balancer}")`);
  }
  const gateway: RunGatewayOptions['gateway'] = {};
  if (flags.port !== undefined) Object.assign(gateway, { port: flags.port });
  if (flags.host !== undefined) Object.assign(gateway, { host: flags.host });
  if (flags.balancer !== undefined) Object.assign(gateway, { balancer: flags.balancer });
  const observability = observabilityOverrides(flags);
  return {
    cluster: flags.config ? loadConfigFile('cluster', flags.config) : undefined,
    routesFile: flags.routes,
    gateway,
    observability,
    workers,
    id: flags.id,
    controllers: flags.controller.length > 0 ? flags.controller.map(hostPort) : undefined,
  };
}

export function registerGatewayCommands(program: Command): void {
  const command = program
    .command('gateway')
    .description('run the east-west gateway: SNI passthrough on :15443 that never terminates TLS')
    .option('-c, --config <file>', 'cluster config (YAML): routes from the cluster catalog in etcd')
    .option('-r, --routes <file>', 'static routes file (YAML), instead of the etcd catalog')
    .option('--host <host>', 'listen address (default: gateway.host, 0.0.0.0)')
    .option('-p, --port <port>', 'listen port, 0 picks one (default: gateway.port, 15443)', parsePortFlag('--port'));
  observabilityPortOptions(command)
    .option('-w, --workers <n>', 'listener processes sharing the port, or "auto" for one per core', 'auto')
    .option('--id <id>', 'gateway id under /causeway/v1/gateways/ (default: <hostname>-<port>)')
    .option('--controller <host:port>', 'controller gRPC address when the catalog lists none (repeatable)', (v: string, all: string[]) => [...all, v], [] as string[])
    .option('--balancer <name>', `endpoint choice: ${Balancers.join(' | ')}`)
    .action(async (flags: GatewayFlags) => {
      const options = optionsFrom(flags);
      if (isGatewayWorker()) {
        await runGatewayWorker(options);
        return;
      }
      // The connections' drain has gateway.drainTimeoutMs; deregistering and closing the
      // route source (etcd) get DRAIN_MARGIN_MS on top before the process is forced out.
      const drainTimeoutMs = (options.cluster?.gateway.drainTimeoutMs ?? GatewayConfig.parse({}).drainTimeoutMs) + DRAIN_MARGIN_MS;
      await runUntilStopped<RunningGateway>({
        component: 'gateway',
        drainTimeoutMs,
        start: () => namingConfigFile(flags.config, () => runGateway(options)),
        stop: (running, steps) =>
          steps.run('gateway drain', async () => {
            await running?.stop();
            if (running) process.stdout.write('gateway stopped\n');
          }),
        announce: (running) => process.stdout.write(`gateway listening on port ${running.port} (ready :${running.readyPort}, metrics :${running.metricsPort})\n`),
      });
    });
}
