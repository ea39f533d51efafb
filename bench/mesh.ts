/**
 * `npm run bench:mesh`: the full cross-cluster path against the direct path at a fixed
 * request rate.
 *
 *   direct: load → app
 *   mesh:   load → east sidecar (127.0.0.1 upstream) ─mTLS─► west gateway (SNI passthrough) ─► west sidecar :inbound → app
 *
 * Every hop is its own process (sidecars, gateway, app), as in a deployment; the load
 * generator is open-loop (latency measured from each request's scheduled send time, so
 * a stall is not hidden by coordinated omission). Reports added p50/p99, sidecar CPU per
 * 1000 requests/s (from /proc) and memory: RSS (the goal's measure) and, from
 * /proc/<pid>/smaps_rollup, PSS and USS (private pages; the node binary's text and data
 * are shared by every sidecar on a host), once idle after start-up and once after the load.
 * Options: --rps 1000 --seconds 10 --warmup 2 --sidecar bundle|bundle-plain|tsx.
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
 */
import 'reflect-metadata';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createIntermediateCa, createRootCa, splitCertificates } from '../ca/index.js';
import { ensureSidecarBundle, SIDECAR_ENTRY, sidecarEnv } from '../scripts/sidecar-bundle.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1] ?? '');
const rps = Number(args.get('rps') ?? 1000);
const seconds = Number(args.get('seconds') ?? 10);
const warmup = Number(args.get('warmup') ?? 2);
const sidecarMode = args.get('sidecar') ?? 'bundle';
if (!['bundle', 'bundle-plain', 'tsx'].includes(sidecarMode)) throw new Error(`--sidecar ${sidecarMode}: expected bundle, bundle-plain or tsx`);
const TD = 'causeway.internal';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const children: ChildProcess[] = [];
/** Starts `node [CAUSEWAY_BENCH_NODE_OPTIONS] <nodeArgs>` (TypeScript entries with `--import tsx` in nodeArgs). */
function start(name: string, nodeArgs: string[], readyText: RegExp, env: NodeJS.ProcessEnv = process.env): Promise<ChildProcess> {
  // node itself (not the tsx wrapper), so that /proc/<pid> is the process doing the work.
  const extra = (process.env.CAUSEWAY_BENCH_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...extra, ...nodeArgs], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, CAUSEWAY_LOG_LEVEL: 'warn' } });
  children.push(child);
  let output = '';
  let ready = false;
  // CAUSEWAY_BENCH_LOG_DIR keeps each hop's whole output (e.g. with --trace-deopt) in <dir>/<name>.log.
  const logDir = process.env.CAUSEWAY_BENCH_LOG_DIR;
  const log = logDir ? createWriteStream(join(logDir, `${name.replace(/\W+/g, '-')}.log`)) : undefined;
  return new Promise((resolve, reject) => {
    const onData = (d: Buffer) => {
      log?.write(d);
      if (ready) return;
      output += d.toString();
      if (readyText.test(output)) {
        ready = true;
        resolve(child);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${name} exited (${code}) before it was ready:\n${output.slice(-2000)}`)));
    setTimeout(() => reject(new Error(`${name} not ready after 30 s:\n${output.slice(-2000)}`)), 30_000).unref();
  });
}

/** CPU seconds all processes of the machine used (all cores), from /proc/stat. */
function machineBusySeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal …: processes' time only (user, nice,
  // system) — interrupt and softirq time is largely this benchmark's own loopback traffic.
  return (fields[0]! + fields[1]! + fields[2]!) / 100;
}

/** Seconds a process's main thread spent runnable but waiting for a CPU (schedstat's second field, ns). */
function runQueueSeconds(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
  } catch {
    return 0;
  }
}

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in USER_HZ (100)
}

interface Memory {
  /** Resident set size, MB: every resident page the process maps, shared or not. */
  rssMb: number;
  /** Proportional set size, MB: shared pages divided among the processes mapping them. */
  pssMb: number;
  /** Unique set size, MB: pages only this process maps (Private_Clean + Private_Dirty). */
  ussMb: number;
}

function memory(pid: number): Memory {
  const kb = new Map<string, number>();
  for (const line of readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) kb.set(m[1]!, Number(m[2]));
  }
  const mb = (n: number) => n / 1024;
  return { rssMb: mb(kb.get('Rss')!), pssMb: mb(kb.get('Pss')!), ussMb: mb(kb.get('Private_Clean')! + kb.get('Private_Dirty')!) };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** The latency percentiles reported for a path. */
function tail(sorted: number[]): { p50Ms: number; p90Ms: number; p99Ms: number; p999Ms: number; maxMs: number } {
  return { p50Ms: percentile(sorted, 50), p90Ms: percentile(sorted, 90), p99Ms: percentile(sorted, 99), p999Ms: percentile(sorted, 99.9), maxMs: sorted[sorted.length - 1] ?? NaN };
}

/** Open-loop load at `rate`/s for `durationS`; returns latencies (ms) of the measured window and the error count. */
async function drive(port: number, rate: number, durationS: number, warmupS: number, timelineFile?: string): Promise<{ latencies: number[]; errors: number; sent: number; errorKinds: Record<string, number> }> {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const latencies: number[] = [];
  // With CAUSEWAY_BENCH_LOG_DIR: "<ms since start of the run> <latency ms>" per measured request, to see when the tail happened.
  const timeline: string[] | undefined = timelineFile ? [] : undefined;
  let errors = 0;
  let sent = 0;
  const errorKinds: Record<string, number> = {};
  const failed = (kind: string) => {
    errors++;
    errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
  };
  const start = performance.now();
  const total = Math.round(rate * (durationS + warmupS));
  const interval = 1000 / rate;
  const inflight: Promise<void>[] = [];
  const fire = (i: number) => {
    const scheduled = start + i * interval;
    const measured = i >= rate * warmupS;
    sent++;
    inflight.push(
      new Promise<void>((resolve) => {
        const req = request({ host: '127.0.0.1', port, path: '/bench', agent }, (res) => {
          res.resume();
          res.once('end', () => {
            if (res.statusCode !== 200) failed(`${res.statusCode} ${String(res.headers['x-causeway-error'] ?? '')}`.trim());
            else if (measured) {
              latencies.push(performance.now() - scheduled);
              timeline?.push(`${(scheduled - start).toFixed(2)} ${(performance.now() - scheduled).toFixed(3)}`);
            }
            resolve();
          });
        });
        req.once('error', (error: NodeJS.ErrnoException) => {
          failed(error.code ?? error.message);
          resolve();
        });
        req.end();
      }),
    );
  };
  // Each turn of the event loop sends every request that is due, then yields, so
  // responses are read between sends and a late request still counts from its schedule.
  for (let next = 0; next < total; ) {
    const due = Math.min(total, Math.floor((performance.now() - start) / interval) + 1);
    while (next < due) fire(next++);
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(inflight);
  agent.destroy();
  if (timeline && timelineFile) writeFileSync(timelineFile, timeline.join('\n') + '\n');
  return { latencies: latencies.sort((a, b) => a - b), errors, sent, errorKinds };
}

async function main(): Promise<void> {
  const logDir = process.env.CAUSEWAY_BENCH_LOG_DIR;
  if (sidecarMode !== 'tsx') await ensureSidecarBundle();
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-mesh-'));
  try {
    const rootCa = await createRootCa({ trustDomain: TD });
    const eastCa = await createIntermediateCa(rootCa, { cluster: 'east' });
    const westCa = await createIntermediateCa(rootCa, { cluster: 'west' });
    const [appPort, gatewayPort, serverInbound, clientLocal, dnsA, dnsB] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort(), freePort()]);
    const echo = { name: 'echo', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' as const }], serviceAccounts: [`spiffe://${TD}/ns/default/sa/echo`], subsets: {} };
    const snapshot = (cluster: string, targets: unknown[]) => ({ schema: 1, version: '1', cluster, trustDomain: TD, trustBundle: [], services: [{ ...echo, targets }], authorization: [], traffic: [] });
    const sidecarSpec = async (name: string, cluster: string, ca: typeof eastCa, extra: Record<string, unknown>, snap: unknown) => {
      const cert = await ca.issue({ spiffeId: `spiffe://${TD}/ns/default/sa/${name}` });
      const file = join(dir, `${name}.json`);
      const config = {
        cluster,
        locality: { region: cluster === 'east' ? 'eu' : 'us', zone: 'z1' },
        namespace: 'default',
        service: name,
        serviceAccount: name,
        controller: { address: '127.0.0.1:1' },
        advertiseAddress: '127.0.0.1',
        stateDir: join(dir, name),
        sidecar: { inboundHost: '127.0.0.1', accessLog: false, dns: { outside: 'refuse' }, outboundRange: cluster === 'east' ? '127.61.0.0/16' : '127.62.0.0/16' },
        ...extra,
      };
      writeFileSync(file, JSON.stringify({ config, keyPem: cert.privateKeyPem, chainPem: [...cert.certChain], trustBundlePem: splitCertificates(cert.trustBundlePem), snapshot: snap }));
      return file;
    };
    const serverFile = await sidecarSpec('echo', 'west', westCa, { ports: [{ name: 'http', port: 9080, targetPort: appPort, protocol: 'http' }], inboundPort: serverInbound, dnsPort: dnsB }, snapshot('west', []));
    const gatewayTarget = { kind: 'gateway', cluster: 'west', address: '127.0.0.1', port: gatewayPort, locality: { region: 'us', zone: 'z1' }, priority: 2, weight: 1, labels: {}, healthy: true, stale: false };
    const clientFile = await sidecarSpec('load', 'east', eastCa, { inboundPort: 0, dnsPort: dnsA, upstreams: [{ service: 'echo.default', port: 9080, localPort: clientLocal }] }, snapshot('east', [gatewayTarget]));
    const routesFile = join(dir, 'routes.yaml');
    writeFileSync(routesFile, `cluster: west\ntrustDomain: ${TD}\nroutes:\n  - service: echo.default\n    endpoints: [127.0.0.1:${serverInbound}]\n`);

    const app = await start('app', ['--import', 'tsx', 'cli/main.ts', 'app', 'echo', '--host', '127.0.0.1', '--port', String(appPort), '--name', 'echo', '--cluster', 'west'], /listening/);
    const gateway = await start('gateway', ['--import', 'tsx', 'cli/main.ts', 'gateway', '--routes', routesFile, '--host', '127.0.0.1', '--port', String(gatewayPort), '--ready-port', '0', '--metrics-port', '0', '--workers', '1'], /listening|"gateway listening"/);
    const harness = join(root, 'bench', 'mesh-sidecar.mjs');
    const sidecarFlags = (process.env.CAUSEWAY_BENCH_SIDECAR_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
    const sidecarArgs = (file: string) => [...sidecarFlags, ...(sidecarMode === 'tsx' ? ['--import', 'tsx', harness, file, SIDECAR_ENTRY] : [harness, file])];
    const envOfSidecars = sidecarMode === 'bundle' ? sidecarEnv(process.env) : process.env;
    const sidecarSettings = [envOfSidecars.NODE_OPTIONS && `NODE_OPTIONS=${envOfSidecars.NODE_OPTIONS}`, envOfSidecars.MALLOC_ARENA_MAX && `MALLOC_ARENA_MAX=${envOfSidecars.MALLOC_ARENA_MAX}`, ...sidecarFlags].filter(Boolean).join(' ') || 'none';
    const server = await start('server sidecar', sidecarArgs(serverFile), /READY/, envOfSidecars);
    const client = await start('client sidecar', sidecarArgs(clientFile), /READY/, envOfSidecars);
    void app;
    // Idle, a moment after start-up: what a sidecar costs before any traffic.
    await new Promise((r) => setTimeout(r, 1000));
    const idle = { clientSidecar: memory(client.pid!), serverSidecar: memory(server.pid!), gateway: memory(gateway.pid!) };

    process.stderr.write(`direct path: ${rps} req/s for ${seconds} s (+${warmup} s warm-up)…\n`);
    const direct = await drive(appPort, rps, seconds, warmup, logDir && join(logDir, 'direct-latencies.txt'));
    process.stderr.write(`mesh path: ${rps} req/s for ${seconds} s (+${warmup} s warm-up)…\n`);
    await drive(clientLocal, Math.min(rps, 200), 1, 0); // open pools and JIT before measuring
    const ours = [client.pid!, server.pid!, gateway.pid!, app.pid!];
    const cpuBefore = { client: cpuSeconds(client.pid!), server: cpuSeconds(server.pid!), gateway: cpuSeconds(gateway.pid!) };
    const oursBefore = ours.reduce((a, pid) => a + cpuSeconds(pid), 0) + process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6;
    const machineBefore = machineBusySeconds();
    const waitBefore = ours.reduce((a, pid) => a + runQueueSeconds(pid), 0);
    const t0 = performance.now();
    const mesh = await drive(clientLocal, rps, seconds, warmup, logDir && join(logDir, 'mesh-latencies.txt'));
    const elapsed = (performance.now() - t0) / 1000;
    // Work on the machine that is not this benchmark's (other sessions, builds…): the
    // numbers below only mean something when it is near zero.
    const oursAfter = ours.reduce((a, pid) => a + cpuSeconds(pid), 0) + process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6;
    const otherCpuShare = Math.max(0, machineBusySeconds() - machineBefore - (oursAfter - oursBefore)) / (elapsed * availableParallelism());
    const runQueueWaitPerSecond = (ours.reduce((a, pid) => a + runQueueSeconds(pid), 0) - waitBefore) / elapsed;
    const loaded = { clientSidecar: memory(client.pid!), serverSidecar: memory(server.pid!), gateway: memory(gateway.pid!) };
    const cpu = { client: cpuSeconds(client.pid!) - cpuBefore.client, server: cpuSeconds(server.pid!) - cpuBefore.server, gateway: cpuSeconds(gateway.pid!) - cpuBefore.gateway };
    // Per request actually answered (a starved run answers fewer than it sent).
    const answered = Math.max(1, mesh.sent - mesh.errors);
    const perRequest = (seconds: number) => (seconds / answered) * 1000;
    const perSidecarVcpuPer1000 = perRequest((cpu.client + cpu.server) / 2);
    const result = {
      rps,
      seconds,
      sidecar: sidecarMode,
      sidecarSettings,
      direct: { ...tail(direct.latencies), errors: direct.errors },
      mesh: { ...tail(mesh.latencies), errors: mesh.errors, errorKinds: mesh.errorKinds },
      loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
      otherCpuShare,
      runQueueWaitPerSecond,
      addedP50Ms: percentile(mesh.latencies, 50) - percentile(direct.latencies, 50),
      addedP99Ms: percentile(mesh.latencies, 99) - percentile(direct.latencies, 99),
      sidecarVcpuPer1000Rps: perSidecarVcpuPer1000,
      clientSidecarVcpuPer1000Rps: perRequest(cpu.client),
      serverSidecarVcpuPer1000Rps: perRequest(cpu.server),
      gatewayVcpuPer1000Rps: perRequest(cpu.gateway),
      meshPhaseSeconds: elapsed,
      rssMb: { clientSidecar: loaded.clientSidecar.rssMb, serverSidecar: loaded.serverSidecar.rssMb, gateway: loaded.gateway.rssMb },
      memory: { afterLoad: loaded, idle },
    };
    const f = (n: number) => n.toFixed(3);
    const m = (x: Memory) => `${x.rssMb.toFixed(1)} / ${x.pssMb.toFixed(1)} / ${x.ussMb.toFixed(1)}`;
    process.stdout.write(
      [
        `path    p50 ms   p90 ms   p99 ms   p99.9 ms  max ms   errors`,
        `direct  ${f(result.direct.p50Ms)}    ${f(result.direct.p90Ms)}    ${f(result.direct.p99Ms)}    ${f(result.direct.p999Ms)}    ${f(result.direct.maxMs)}    ${result.direct.errors}`,
        `mesh    ${f(result.mesh.p50Ms)}    ${f(result.mesh.p90Ms)}    ${f(result.mesh.p99Ms)}    ${f(result.mesh.p999Ms)}    ${f(result.mesh.maxMs)}    ${result.mesh.errors}`,
        `added   p50 ${f(result.addedP50Ms)} ms (goal ≤ 0.5)   p99 ${f(result.addedP99Ms)} ms (goal ≤ 1.5)`,
        `sidecar CPU per 1000 req/s: ${f(perSidecarVcpuPer1000)} vCPU (client ${f(result.clientSidecarVcpuPer1000Rps)}, server ${f(result.serverSidecarVcpuPer1000Rps)}; goal ≤ 0.15); gateway ${f(result.gatewayVcpuPer1000Rps)}`,
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
    // SIGTERM first so that a profiled run (CAUSEWAY_BENCH_NODE_OPTIONS=--cpu-prof) can write its profile.
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((resolve) => {
            if (c.exitCode !== null || c.signalCode !== null) return resolve();
            const kill = setTimeout(() => c.kill('SIGKILL'), 3000);
            c.once('exit', () => {
              clearTimeout(kill);
              resolve();
            });
            c.kill('SIGTERM');
          }),
      ),
    );
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
