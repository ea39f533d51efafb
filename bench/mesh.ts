/**
 * `npm run bench:mesh`: the full cross-cluster path against the direct path at a fixed
 * request rate.
 *
 *   direct: load → app
 *   mesh:   load → east sidecar (127.0.0.1 upstream) ─mTLS─► west gateway (SNI passthrough) ─► west sidecar :inbound → app
 *
 * Every hop is its own process (sidecars, gateway, app), as in a deployment, the gateway
 * from its bundle as `causeway gateway` runs it; the load generator is open-loop (latency
 * measured from each request's scheduled send time, so a stall is not hidden by
 * coordinated omission). Reports added p50/p99, sidecar CPU per
 * 1000 requests/s (from /proc) and memory: RSS (the goal's measure) and, from
 * /proc/<pid>/smaps_rollup, PSS and USS (private pages; the node binary's text and data
 * are shared by every sidecar on a host), once idle after start-up and once after the load.
 * Options: --rps 1000 --seconds 10 --warmup 2 --sidecar bundle|bundle-plain|tsx --peer haproxy|none.
 *
 * --peer haproxy (default) also runs the same topology with HAProxy as both sidecars, in
 * the same run and against the same gateway, app and load generator:
 *
 *   haproxy: load → HAProxy (http, TLS origination with the client certificate and the
 *            SNI) ─mTLS─► west gateway ─► HAProxy (TLS termination, client certificate
 *            required) → app
 *
 * so the added latency, CPU per 1000 req/s and memory have a reference measured on this
 * machine, and our numbers are reported as ratios to it. HAProxy does less than a
 * sidecar: no secure naming (it checks the chain, not the SPIFFE ID), no authorization
 * policy, no failover or outlier detection, a certificate hash rather than the SPIFFE ID
 * for the app. Each HAProxy runs one thread, like a sidecar's one event loop.
 *
 * --sidecar bundle (default) runs the sidecars as `causeway sidecar` does: the sidecar's
 * bundle (dist/sidecar.mjs, built here when missing or stale) on bare Node, in SIDECAR_ENV
 * (V8 young-generation cap, MALLOC_ARENA_MAX); bundle-plain is the bundle without
 * SIDECAR_ENV; tsx runs the TypeScript sources through tsx, as sidecars ran before. For
 * comparisons: CAUSEWAY_BENCH_SIDECAR_NODE_OPTIONS adds node flags to the sidecars (after
 * NODE_OPTIONS, so they win), CAUSEWAY_BENCH_NODE_OPTIONS to every hop process.
 * CAUSEWAY_BENCH_LOG_DIR=<dir> keeps each hop's output (<hop>.log, e.g. with --trace-gc)
 * and one line per measured request (direct-latencies.txt, mesh-latencies.txt: ms since
 * the start of the run, latency ms), to see when the tail happened.
 * CAUSEWAY_BENCH_LAG_MS=<ms> loads bench/event-loop-lag.mjs into every hop and this load
 * generator: event-loop stalls longer than that, with their times, in the hops' logs
 * (this process's on stdout).
 */
import 'reflect-metadata';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ensureCommandBundle, ensureSidecarBundle, SIDECAR_ENTRY, sidecarEnv } from '../scripts/bundles.mjs';
import { writeTwoClusters } from './two-clusters.js';
import { freePort, LAG_MONITOR, measurePath, openLoop, type OpenLoopResult, memory, root, start, startHaproxy, stopHops, tail, type Memory } from './hops.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1] ?? '');
const rps = Number(args.get('rps') ?? 1000);
const seconds = Number(args.get('seconds') ?? 10);
const warmup = Number(args.get('warmup') ?? 2);
const sidecarMode = args.get('sidecar') ?? 'bundle';
if (!['bundle', 'bundle-plain', 'tsx'].includes(sidecarMode)) throw new Error(`--sidecar ${sidecarMode}: expected bundle, bundle-plain or tsx`);
const peer = args.get('peer') ?? 'haproxy';
if (!['haproxy', 'none'].includes(peer)) throw new Error(`--peer ${peer}: expected haproxy or none`);
if (process.env.CAUSEWAY_BENCH_LAG_MS) await import(pathToFileURL(LAG_MONITOR).href);

/** Open-loop HTTP/1.1 GETs at `rate`/s for `durationS` (see {@link openLoop}); with `timelineFile`, one line per measured request. */
async function drive(port: number, rate: number, durationS: number, warmupS: number, timelineFile?: string): Promise<OpenLoopResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  // With CAUSEWAY_BENCH_LOG_DIR: "<ms since start of the run> <latency ms>" per measured request, to see when the tail happened.
  const timeline: string[] | undefined = timelineFile ? [] : undefined;
  const get = () =>
    new Promise<string | undefined>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/bench', agent }, (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode !== 200 ? `${res.statusCode} ${String(res.headers['x-causeway-error'] ?? '')}`.trim() : undefined));
      });
      req.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
      req.end();
    });
  const startedAt = performance.now();
  const result = await openLoop(rate, durationS, warmupS, get, timeline && ((at, latency) => timeline.push(`${at.toFixed(2)} ${latency.toFixed(3)}`)));
  agent.destroy();
  if (timeline && timelineFile) writeFileSync(timelineFile, `# start ${(performance.timeOrigin + startedAt).toFixed(1)} (epoch ms)\n` + timeline.join('\n') + '\n');
  return result;
}

async function main(): Promise<void> {
  const logDir = process.env.CAUSEWAY_BENCH_LOG_DIR;
  if (sidecarMode !== 'tsx') await ensureSidecarBundle();
  // The gateway runs as `causeway gateway` does: its own bundle on bare Node.
  const gatewayBundle = await ensureCommandBundle('gateway');
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-mesh-'));
  try {
    const [appPort, gatewayPort, serverInbound, clientLocal, dnsA, dnsB, haproxyLocal, haproxyInbound] = (await Promise.all(Array.from({ length: 8 }, () => freePort()))) as [number, number, number, number, number, number, number, number];
    const topology = await writeTwoClusters(dir, { name: 'http', port: 9080, protocol: 'http' }, { app: appPort, gateway: gatewayPort, serverInbound, clientLocal, dnsEast: dnsA, dnsWest: dnsB, haproxyInbound }, { east: '127.61.0.0/16', west: '127.62.0.0/16' });
    const { serverFile, clientFile, routesFile } = topology;

    const app = await start('app', ['--import', 'tsx', 'cli/main.ts', 'app', 'echo', '--host', '127.0.0.1', '--port', String(appPort), '--name', 'echo', '--cluster', 'west'], /listening/);
    const gateway = await start('gateway', [gatewayBundle, 'gateway', '--routes', routesFile, '--host', '127.0.0.1', '--port', String(gatewayPort), '--ready-port', '0', '--metrics-port', '0', '--workers', '1'], /listening|"gateway listening"/);
    const harness = join(root, 'bench', 'mesh-sidecar.mjs');
    const sidecarFlags = (process.env.CAUSEWAY_BENCH_SIDECAR_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
    const sidecarArgs = (file: string) => [...sidecarFlags, ...(sidecarMode === 'tsx' ? ['--import', 'tsx', harness, file, SIDECAR_ENTRY] : [harness, file])];
    const envOfSidecars = sidecarMode === 'bundle' ? sidecarEnv(process.env) : process.env;
    const sidecarSettings = [envOfSidecars.NODE_OPTIONS && `NODE_OPTIONS=${envOfSidecars.NODE_OPTIONS}`, envOfSidecars.MALLOC_ARENA_MAX && `MALLOC_ARENA_MAX=${envOfSidecars.MALLOC_ARENA_MAX}`, ...sidecarFlags].filter(Boolean).join(' ') || 'none';
    const server = await start('server sidecar', sidecarArgs(serverFile), /READY/, envOfSidecars);
    const client = await start('client sidecar', sidecarArgs(clientFile), /READY/, envOfSidecars);
    let haproxy: { client: ChildProcess; server: ChildProcess; version: string } | undefined;
    if (peer === 'haproxy') {
      const { sni, clientPem, serverPem, caFile } = await topology.haproxyFiles();
      // With CAUSEWAY_BENCH_LOG_DIR, one log line per request on stderr (kept in <dir>/haproxy-*.log).
      const logging = logDir ? `  log stderr format raw local0\n` : '';
      const common = `global\n  nbthread 1\n  maxconn 4096\n${logging}defaults\n  mode http\n${logDir ? '  log global\n  option httplog\n' : ''}  option http-keep-alive\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout http-keep-alive 1h\n`;
      const clientConfig = join(dir, 'haproxy-client.cfg');
      writeFileSync(
        clientConfig,
        `${common}frontend out\n  bind 127.0.0.1:${haproxyLocal}\n  default_backend gateway\nbackend gateway\n  http-reuse always\n  server gw 127.0.0.1:${gatewayPort} ssl crt ${clientPem} ca-file ${caFile} verify required sni str(${sni}) alpn http/1.1\n`,
      );
      const serverConfig = join(dir, 'haproxy-server.cfg');
      writeFileSync(
        serverConfig,
        `${common}frontend in\n  bind 127.0.0.1:${haproxyInbound} ssl crt ${serverPem} ca-file ${caFile} verify required alpn http/1.1\n  http-request set-header x-client-cert-sha1 %[ssl_c_sha1,hex]\n  default_backend app\nbackend app\n  http-reuse always\n  server app 127.0.0.1:${appPort}\n`,
      );
      haproxy = {
        server: await startHaproxy('haproxy server side', serverConfig, haproxyInbound),
        client: await startHaproxy('haproxy client side', clientConfig, haproxyLocal),
        version: execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0]!,
      };
    }
    // Idle, a moment after start-up: what a sidecar costs before any traffic.
    await new Promise((r) => setTimeout(r, 1000));
    const idle = { clientSidecar: memory(client.pid!), serverSidecar: memory(server.pid!), gateway: memory(gateway.pid!) };
    const idleHaproxy = haproxy && { client: memory(haproxy.client.pid!), server: memory(haproxy.server.pid!) };

    process.stderr.write(`direct path: ${rps} req/s for ${seconds} s (+${warmup} s warm-up)…\n`);
    const direct = await drive(appPort, rps, seconds, warmup, logDir && join(logDir, 'direct-latencies.txt'));

    /** One proxied path under load: latencies, and CPU per 1000 req/s of its two sidecars and of the gateway. */
    const measure = async (name: string, localPort: number, clientPid: number, serverPid: number) => {
      process.stderr.write(`${name} path: ${rps} req/s for ${seconds} s (+${warmup} s warm-up)…\n`);
      await drive(localPort, Math.min(rps, 200), 1, 0); // open pools and JIT before measuring
      return measurePath({ client: clientPid, server: serverPid, gateway: gateway.pid!, app: app.pid! }, direct, () => drive(localPort, rps, seconds, warmup, logDir && join(logDir, `${name}-latencies.txt`)));
    };
    const peerRun = haproxy && (await measure('haproxy', haproxyLocal, haproxy.client.pid!, haproxy.server.pid!));
    const mesh = await measure('mesh', clientLocal, client.pid!, server.pid!);
    const loaded = { clientSidecar: mesh.afterLoad.client, serverSidecar: mesh.afterLoad.server, gateway: memory(gateway.pid!) };
    const perSidecarVcpuPer1000 = mesh.sidecarVcpuPer1000Rps;
    const otherCpuShare = mesh.otherCpuShare;
    const runQueueWaitPerSecond = mesh.runQueueWaitPerSecond;
    const result = {
      rps,
      seconds,
      sidecar: sidecarMode,
      sidecarSettings,
      direct: { ...tail(direct.latencies), errors: direct.errors },
      mesh: mesh.latency,
      loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
      otherCpuShare,
      runQueueWaitPerSecond,
      addedP50Ms: mesh.addedP50Ms,
      addedP99Ms: mesh.addedP99Ms,
      sidecarVcpuPer1000Rps: perSidecarVcpuPer1000,
      clientSidecarVcpuPer1000Rps: mesh.clientSidecarVcpuPer1000Rps,
      serverSidecarVcpuPer1000Rps: mesh.serverSidecarVcpuPer1000Rps,
      gatewayVcpuPer1000Rps: mesh.gatewayVcpuPer1000Rps,
      meshPhaseSeconds: mesh.phaseSeconds,
      rssMb: { clientSidecar: loaded.clientSidecar.rssMb, serverSidecar: loaded.serverSidecar.rssMb, gateway: loaded.gateway.rssMb },
      memory: { afterLoad: loaded, idle },
      haproxy: peerRun && haproxy && {
        version: haproxy.version,
        ...peerRun,
        idleMemory: idleHaproxy,
        // ours ÷ HAProxy's, measured in this run (below 1: we do better). Latencies of the
        // whole path: the added ones are differences of noisy percentiles, near zero or
        // below it in some runs, and make no ratio.
        ratios: {
          p50: mesh.latency.p50Ms / peerRun.latency.p50Ms,
          p99: mesh.latency.p99Ms / peerRun.latency.p99Ms,
          p999: mesh.latency.p999Ms / peerRun.latency.p999Ms,
          sidecarCpu: mesh.sidecarVcpuPer1000Rps / peerRun.sidecarVcpuPer1000Rps,
          rss: (loaded.clientSidecar.rssMb + loaded.serverSidecar.rssMb) / (peerRun.afterLoad.client.rssMb + peerRun.afterLoad.server.rssMb),
        },
      },
    };
    const f = (n: number) => n.toFixed(3);
    const m = (x: Memory) => `${x.rssMb.toFixed(1)} / ${x.pssMb.toFixed(1)} / ${x.ussMb.toFixed(1)}`;
    process.stdout.write(
      [
        `path    p50 ms   p90 ms   p99 ms   p99.9 ms  max ms   errors`,
        `direct  ${f(result.direct.p50Ms)}    ${f(result.direct.p90Ms)}    ${f(result.direct.p99Ms)}    ${f(result.direct.p999Ms)}    ${f(result.direct.maxMs)}    ${result.direct.errors}`,
        `mesh    ${f(result.mesh.p50Ms)}    ${f(result.mesh.p90Ms)}    ${f(result.mesh.p99Ms)}    ${f(result.mesh.p999Ms)}    ${f(result.mesh.maxMs)}    ${result.mesh.errors}`,
        ...(peerRun ? [`haproxy ${f(peerRun.latency.p50Ms)}    ${f(peerRun.latency.p90Ms)}    ${f(peerRun.latency.p99Ms)}    ${f(peerRun.latency.p999Ms)}    ${f(peerRun.latency.maxMs)}    ${peerRun.latency.errors}`] : []),
        `added   p50 ${f(result.addedP50Ms)} ms (goal ≤ 0.5)   p99 ${f(result.addedP99Ms)} ms (goal ≤ 1.5)`,
        `sidecar CPU per 1000 req/s: ${f(perSidecarVcpuPer1000)} vCPU (client ${f(result.clientSidecarVcpuPer1000Rps)}, server ${f(result.serverSidecarVcpuPer1000Rps)}; goal ≤ 0.15); gateway ${f(result.gatewayVcpuPer1000Rps)}`,
        ...(peerRun && result.haproxy
          ? [
              `HAProxy as both sidecars (${result.haproxy.version}), same gateway, app and load, this run:`,
              `  added p50 ${f(peerRun.addedP50Ms)} ms, p99 ${f(peerRun.addedP99Ms)} ms; CPU per 1000 req/s ${f(peerRun.sidecarVcpuPer1000Rps)} vCPU (client ${f(peerRun.clientSidecarVcpuPer1000Rps)}, server ${f(peerRun.serverSidecarVcpuPer1000Rps)}); RSS client ${peerRun.afterLoad.client.rssMb.toFixed(1)} MB, server ${peerRun.afterLoad.server.rssMb.toFixed(1)} MB; host waited for a CPU ${peerRun.runQueueWaitPerSecond.toFixed(2)} s/s`,
              ...(peerRun.latency.errors > 0 ? [`  HAPROXY PATH HAD ${peerRun.latency.errors} FAILED REQUESTS (${JSON.stringify(peerRun.latency.errorKinds)}): its numbers and the ratios mean nothing; CAUSEWAY_BENCH_LOG_DIR=<dir> keeps its logs`] : []),
              `  causeway ÷ haproxy: path p50 ${result.haproxy.ratios.p50.toFixed(2)}×, p99 ${result.haproxy.ratios.p99.toFixed(2)}×, p99.9 ${result.haproxy.ratios.p999.toFixed(2)}×, sidecar CPU ${result.haproxy.ratios.sidecarCpu.toFixed(2)}×, RSS ${result.haproxy.ratios.rss.toFixed(2)}×`,
            ]
          : []),
        `machine load average during the run: ${result.loadAverage} (on ${availableParallelism()} cores); CPU used by other work during the mesh phase: ${(otherCpuShare * 100).toFixed(1)} % of the machine${otherCpuShare > 0.1 ? ' — TOO BUSY: latencies and CPU per request are inflated, run again on a quiet machine' : ''}`,
        `hop processes' main threads waited for a CPU ${runQueueWaitPerSecond.toFixed(2)} s per second (runnable but not running: the queueing behind the p99)`,
        `RSS: client sidecar ${result.rssMb.clientSidecar.toFixed(1)} MB, server sidecar ${result.rssMb.serverSidecar.toFixed(1)} MB (goal ≤ 50), gateway ${result.rssMb.gateway.toFixed(1)} MB  (sidecars: ${sidecarMode}; ${sidecarSettings})`,
        `memory MB, RSS / PSS / USS   after load: client sidecar ${m(loaded.clientSidecar)}, server sidecar ${m(loaded.serverSidecar)}, gateway ${m(loaded.gateway)}`,
        `                             idle after start: client sidecar ${m(idle.clientSidecar)}, server sidecar ${m(idle.serverSidecar)}, gateway ${m(idle.gateway)}`,
        JSON.stringify(result),
        '',
      ].join('\n'),
    );
  } finally {
    await stopHops();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
