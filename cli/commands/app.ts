import { isIP } from 'node:net';
import type { Command } from 'commander';
import { CausewayError, ErrorCodes, UsageError } from '../../mesh/index.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, runUntilStopped } from '../lifecycle.js';
import { PEER_IDENTITY_HEADER, parseComposeDurationMs, runLoad, startEchoServer } from '../../topologies/index.js';

function intOption(name: string, min: number, max: number) {
  return (text: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`${name} must be an integer ${min}-${max} (got "${text}")`);
    return n;
  };
}

function durationOption(name: string) {
  return (text: string): number => {
    const ms = parseComposeDurationMs(text);
    if (ms === undefined) throw new UsageError(`${name} must be a duration such as 500ms, 10s or 1m (got "${text}")`);
    return ms;
  };
}

function urlOption(text: string): string {
  try {
    const url = new URL(text);
    if (url.protocol !== 'http:') throw new Error('not http');
    return text;
  } catch {
    throw new UsageError(`--url must be an http:// URL (got "${text}")`);
  }
}

/** `--dns 127.0.0.1:15053`: an IP address and a port, which is what a node:dns Resolver takes. */
function dnsServerOption(text: string): string {
  const match = /^(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):(\d{1,5})$/.exec(text);
  const port = Number(match?.[2]);
  if (!match || isIP(match[1]!.replace(/^\[|\]$/g, '')) === 0 || port < 1 || port > 65535) {
    throw new UsageError(`--dns must be a DNS server as ip:port, e.g. 127.0.0.1:15053 (got "${text}")`);
  }
  return text;
}

const DNS_HELP = "resolve the URL's host through this DNS server (ip:port, e.g. a sidecar's dnsPort: 127.0.0.1:15053) instead of the host's resolver";

function expectOption(text: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = text.indexOf('=');
  if (eq <= 0) throw new UsageError(`--expect must be FIELD=VALUE (got "${text}")`);
  return { ...previous, [text.slice(0, eq)]: text.slice(eq + 1) };
}

/** Raised when a load run misses its threshold; its report is already on stdout. */
class LoadThresholdError extends CausewayError {
  constructor(message: string) {
    super(ErrorCodes.appLoadThreshold, message);
  }
}

export function registerAppCommands(program: Command): void {
  // `causeway app echo --version v2` names the app's version; without positional options the
  // program's own -V/--version would swallow it anywhere on the line. Only `causeway --version`
  // (before any subcommand) prints Causeway's version then, which is what it means anyway.
  program.enablePositionalOptions();
  const app = program.command('app').description('the demo application used by the topologies: an HTTP echo service and a load client');

  app
    .command('echo')
    .description(`HTTP echo service: answers JSON {service, cluster, version, hostname, peerIdentity, peerCluster, method, path}; peerIdentity is the caller's SPIFFE ID from the sidecar's ${PEER_IDENTITY_HEADER} header; GET /healthz answers ok`)
    .requiredOption('--port <port>', 'port to listen on', intOption('--port', 1, 65535))
    .option('--host <address>', 'address to listen on', '0.0.0.0')
    .option('--name <service>', 'service name to report', 'echo')
    .option('--cluster <cluster>', 'cluster name to report', process.env.CAUSEWAY_CLUSTER ?? 'local')
    .option('--version <version>', 'version label to report', 'v1')
    .action(async (options: { port: number; host: string; name: string; cluster: string; version: string }) => {
      await runUntilStopped({
        component: 'echo',
        drainTimeoutMs: DEFAULT_DRAIN_TIMEOUT_MS,
        start: () => startEchoServer(options),
        stop: (server, steps) =>
          steps.run('echo server', async () => {
            if (!server) return;
            const closed = new Promise<void>((resolve) => server.close(() => resolve()));
            server.closeAllConnections();
            await closed;
          }),
        announce: () => process.stderr.write(`echo ${options.name} (cluster ${options.cluster}, version ${options.version}) listening on ${options.host}:${options.port}\n`),
      });
    });

  app
    .command('load')
    .description('load client: paced HTTP GETs; prints a JSON report {requests, successes, failures, failuresBy, byService, byCluster, byVersion, byPeerIdentity, byPeerCluster, latencyMs}; exits 1 when a threshold is missed')
    .requiredOption('--url <url>', 'URL to call', urlOption)
    .option('--rps <n>', 'requests per second', intOption('--rps', 1, 100_000), 10)
    .option('--duration <d>', 'how long to send (e.g. 10s)', durationOption('--duration'))
    .option('--requests <n>', 'how many requests to send', intOption('--requests', 1, 10_000_000))
    .option('--timeout <d>', 'per-request timeout', durationOption('--timeout'), 2000)
    .option('--keep-alive', 'reuse connections (default: a new connection per request)')
    .option('--dns <ip:port>', DNS_HELP, dnsServerOption)
    .option('--progress', 'also print `progress {"requests":…,"successes":…,"failures":…}` lines to stderr twice a second')
    .option('--expect <field=value>', "count a reply as a success only if its JSON has this field value (repeatable), e.g. --expect cluster=west", expectOption)
    .option('--min-successes <n>', 'exit 1 when fewer requests succeed', intOption('--min-successes', 0, 10_000_000))
    .option('--min-success-ratio <r>', 'exit 1 when the share of successes is lower (0-1)', (t: string) => {
      const r = Number(t);
      if (!(r >= 0 && r <= 1)) throw new UsageError(`--min-success-ratio must be between 0 and 1 (got "${t}")`);
      return r;
    })
    .option('--max-failures <n>', 'exit 1 when more requests fail', intOption('--max-failures', 0, 10_000_000))
    .action(async (options: { url: string; rps: number; duration?: number; requests?: number; timeout: number; keepAlive?: boolean; dns?: string; progress?: boolean; expect?: Record<string, string>; minSuccesses?: number; minSuccessRatio?: number; maxFailures?: number }) => {
      if (options.duration === undefined && options.requests === undefined) throw new UsageError('give --duration or --requests (or both)');
      const report = await runLoad({
        url: options.url,
        rps: options.rps,
        timeoutMs: options.timeout,
        ...(options.duration === undefined ? {} : { durationMs: options.duration }),
        ...(options.requests === undefined ? {} : { requests: options.requests }),
        ...(options.expect ? { expect: options.expect } : {}),
        keepAlive: options.keepAlive ?? false,
        ...(options.dns === undefined ? {} : { dnsServer: options.dns }),
        ...(options.progress ? { onProgress: (p: object) => process.stderr.write(`progress ${JSON.stringify(p)}\n`) } : {}),
      });
      process.stdout.write(`${JSON.stringify(report)}\n`);
      const problems: string[] = [];
      if (options.minSuccesses !== undefined && report.successes < options.minSuccesses) problems.push(`${report.successes} successes < ${options.minSuccesses}`);
      if (options.minSuccessRatio !== undefined && report.successes < options.minSuccessRatio * report.requests) problems.push(`success ratio ${(report.successes / Math.max(1, report.requests)).toFixed(3)} < ${options.minSuccessRatio}`);
      if (options.maxFailures !== undefined && report.failures > options.maxFailures) problems.push(`${report.failures} failures > ${options.maxFailures}`);
      if (problems.length > 0) throw new LoadThresholdError(`load on ${options.url} missed its threshold: ${problems.join('; ')}`);
    });

  app
    .command('probe')
    .description('one HTTP GET that must answer 2xx (for healthchecks); with --wait, retries until it does or the time is up')
    .requiredOption('--url <url>', 'URL to call', urlOption)
    .option('--timeout <d>', 'per-request timeout', durationOption('--timeout'), 1000)
    .option('--wait <d>', 'keep trying for this long', durationOption('--wait'))
    .option('--dns <ip:port>', DNS_HELP, dnsServerOption)
    .action(async (options: { url: string; timeout: number; wait?: number; dns?: string }) => {
      const deadline = Date.now() + (options.wait ?? 0);
      for (;;) {
        const report = await runLoad({ url: options.url, rps: 1, requests: 1, timeoutMs: options.timeout, ...(options.dns === undefined ? {} : { dnsServer: options.dns }) });
        if (report.successes === 1) return;
        if (Date.now() >= deadline) throw new LoadThresholdError(`${options.url} did not answer 2xx: ${Object.keys(report.failuresBy).join(', ')}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    });
}
