/**
 * What the request-path benchmarks (bench/mesh.ts, bench/grpc.ts) share: their hop
 * processes (started, logged, stopped), HAProxy as a peer, and what they read of a
 * process or the machine in /proc (CPU, run-queue wait, memory), plus percentiles.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { connect as netConnect, createServer } from 'node:net';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('..', import.meta.url));
/** Loaded into every hop, and into the benchmark, with CAUSEWAY_BENCH_LAG_MS: see bench/mesh.ts. */
export const LAG_MONITOR = join(root, 'bench', 'event-loop-lag.mjs');

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Every hop process started, for {@link stopHops}. */
const children: ChildProcess[] = [];

/** With CAUSEWAY_BENCH_LOG_DIR, where a hop's whole output goes (e.g. with --trace-gc): <dir>/<name>.log. */
export function hopLog(name: string): ReturnType<typeof createWriteStream> | undefined {
  const logDir = process.env.CAUSEWAY_BENCH_LOG_DIR;
  return logDir ? createWriteStream(join(logDir, `${name.replace(/\W+/g, '-')}.log`)) : undefined;
}
/** Starts `node [CAUSEWAY_BENCH_NODE_OPTIONS] <nodeArgs>` (TypeScript entries with `--import tsx` in nodeArgs). */
export function start(name: string, nodeArgs: string[], readyText: RegExp, env: NodeJS.ProcessEnv = process.env): Promise<ChildProcess> {
  // node itself (not the tsx wrapper), so that /proc/<pid> is the process doing the work.
  const extra = (process.env.CAUSEWAY_BENCH_NODE_OPTIONS ?? '').split(' ').filter(Boolean);
  if (process.env.CAUSEWAY_BENCH_LAG_MS) extra.push('--import', LAG_MONITOR);
  const child = spawn(process.execPath, [...extra, ...nodeArgs], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...env, CAUSEWAY_LOG_LEVEL: 'warn' } });
  children.push(child);
  let output = '';
  let ready = false;
  const log = hopLog(name);
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

/** Starts `haproxy -db -f <config>` and resolves once `port` accepts connections. */
export async function startHaproxy(name: string, config: string, port: number): Promise<ChildProcess> {
  const child = spawn('haproxy', ['-db', '-f', config], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let output = '';
  const log = hopLog(name);
  const onData = (d: Buffer) => {
    log?.write(d);
    if (output.length < 20_000) output += d.toString();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${name} exited (${child.exitCode}) before it listened on ${port}:\n${output.slice(-2000)}`);
    const open = await new Promise<boolean>((resolve) => {
      const s = netConnect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (open) return child;
    if (Date.now() > deadline) throw new Error(`${name} not listening on ${port} after 10 s:\n${output.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** CPU seconds all processes of the machine used (all cores), from /proc/stat. */
export function machineBusySeconds(): number {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal …: processes' time only (user, nice,
  // system) — interrupt and softirq time is largely this benchmark's own loopback traffic.
  return (fields[0]! + fields[1]! + fields[2]!) / 100;
}

/** Seconds a process's main thread spent runnable but waiting for a CPU (schedstat's second field, ns). */
export function runQueueSeconds(pid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
  } catch {
    return 0;
  }
}

export function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in USER_HZ (100)
}

export interface Memory {
  /** Resident set size, MB: every resident page the process maps, shared or not. */
  rssMb: number;
  /** Proportional set size, MB: shared pages divided among the processes mapping them. */
  pssMb: number;
  /** Unique set size, MB: pages only this process maps (Private_Clean + Private_Dirty). */
  ussMb: number;
}

export function memory(pid: number): Memory {
  const kb = new Map<string, number>();
  for (const line of readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')) {
    const m = /^(\w+):\s+(\d+) kB/.exec(line);
    if (m) kb.set(m[1]!, Number(m[2]));
  }
  const mb = (n: number) => n / 1024;
  return { rssMb: mb(kb.get('Rss')!), pssMb: mb(kb.get('Pss')!), ussMb: mb(kb.get('Private_Clean')! + kb.get('Private_Dirty')!) };
}

export function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** The latency percentiles reported for a path. */
export function tail(sorted: number[]): { p50Ms: number; p90Ms: number; p99Ms: number; p999Ms: number; maxMs: number } {
  return { p50Ms: percentile(sorted, 50), p90Ms: percentile(sorted, 90), p99Ms: percentile(sorted, 99), p999Ms: percentile(sorted, 99.9), maxMs: sorted[sorted.length - 1] ?? NaN };
}

/** Stops every hop: SIGTERM first so that a profiled run (CAUSEWAY_BENCH_NODE_OPTIONS=--cpu-prof) can write its profile. */
/** Stops the given hop processes (SIGTERM, SIGKILL after 3 s) and waits for them to exit. */
export async function stopProcesses(processes: readonly ChildProcess[]): Promise<void> {
  await Promise.all(
    processes.map(
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
}

/** Stops every hop process started. */
export async function stopHops(): Promise<void> {
  await stopProcesses(children);
}

/** What an open-loop run measured: latencies (ms, sorted) of the measured window, and the failures by kind. */
export interface OpenLoopResult {
  latencies: number[];
  errors: number;
  sent: number;
  errorKinds: Record<string, number>;
}

/**
 * Open-loop load at `rate`/s for `warmupS` + `durationS`: `call` starts one request and
 * resolves with a failure kind, or undefined when it succeeded. Latency counts from each
 * request's scheduled send time, so a stall is not hidden by coordinated omission; each
 * turn of the event loop sends every request that is due, then yields, so responses are
 * read between sends. `measured` gets each measured request (ms since the start, latency).
 */
export async function openLoop(rate: number, durationS: number, warmupS: number, call: () => Promise<string | undefined>, measured?: (sinceStartMs: number, latencyMs: number) => void): Promise<OpenLoopResult> {
  const latencies: number[] = [];
  let errors = 0;
  let sent = 0;
  const errorKinds: Record<string, number> = {};
  const startedAt = performance.now();
  const total = Math.round(rate * (durationS + warmupS));
  const interval = 1000 / rate;
  const inflight: Promise<void>[] = [];
  const fire = (i: number) => {
    const scheduled = startedAt + i * interval;
    const inWindow = i >= rate * warmupS;
    sent++;
    inflight.push(
      call().then((failure) => {
        if (failure !== undefined) {
          errors++;
          errorKinds[failure] = (errorKinds[failure] ?? 0) + 1;
        } else if (inWindow) {
          const latency = performance.now() - scheduled;
          latencies.push(latency);
          measured?.(scheduled - startedAt, latency);
        }
      }),
    );
  };
  for (let next = 0; next < total; ) {
    const due = Math.min(total, Math.floor((performance.now() - startedAt) / interval) + 1);
    while (next < due) fire(next++);
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(inflight);
  return { latencies: latencies.sort((a, b) => a - b), errors, sent, errorKinds };
}

/** The pids of one proxied path under load: its two sidecars (or HAProxies), the gateway and the app. */
export interface PathHops {
  readonly client: number;
  readonly server: number;
  readonly gateway: number;
  readonly app: number;
}

/**
 * One proxied path under load (`run`, an open loop): its latencies, what it adds to the
 * direct path's, CPU per 1000 requests/s of its two sidecars and of the gateway (per
 * request actually answered: a starved run answers fewer than it sent), the CPU other
 * work used meanwhile, the time the hops waited for a CPU, and the sidecars' memory after.
 */
export async function measurePath(hops: PathHops, direct: OpenLoopResult, run: () => Promise<OpenLoopResult>) {
  const pids = [hops.client, hops.server, hops.gateway, hops.app];
  const ours = () => pids.reduce((a, pid) => a + cpuSeconds(pid), 0) + (process.cpuUsage().user + process.cpuUsage().system) / 1e6;
  const before = { client: cpuSeconds(hops.client), server: cpuSeconds(hops.server), gateway: cpuSeconds(hops.gateway), ours: ours(), machine: machineBusySeconds(), wait: pids.reduce((a, pid) => a + runQueueSeconds(pid), 0) };
  const t0 = performance.now();
  const load = await run();
  const elapsed = (performance.now() - t0) / 1000;
  // Work on the machine that is not this benchmark's (other sessions, builds…): the
  // numbers only mean something when it is near zero.
  const otherCpuShare = Math.max(0, machineBusySeconds() - before.machine - (ours() - before.ours)) / (elapsed * availableParallelism());
  const runQueueWaitPerSecond = (pids.reduce((a, pid) => a + runQueueSeconds(pid), 0) - before.wait) / elapsed;
  const answered = Math.max(1, load.sent - load.errors);
  const per1000 = (cpuS: number) => (cpuS / answered) * 1000;
  const client = per1000(cpuSeconds(hops.client) - before.client);
  const server = per1000(cpuSeconds(hops.server) - before.server);
  return {
    latency: { ...tail(load.latencies), errors: load.errors, errorKinds: load.errorKinds },
    addedP50Ms: percentile(load.latencies, 50) - percentile(direct.latencies, 50),
    addedP99Ms: percentile(load.latencies, 99) - percentile(direct.latencies, 99),
    sidecarVcpuPer1000Rps: (client + server) / 2,
    clientSidecarVcpuPer1000Rps: client,
    serverSidecarVcpuPer1000Rps: server,
    gatewayVcpuPer1000Rps: per1000(cpuSeconds(hops.gateway) - before.gateway),
    otherCpuShare,
    runQueueWaitPerSecond,
    phaseSeconds: elapsed,
    afterLoad: { client: memory(hops.client), server: memory(hops.server) },
  };
}
