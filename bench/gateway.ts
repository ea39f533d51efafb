/**
 * East-west gateway benchmark (`npm run bench:gateway`): Causeway's SNI passthrough side
 * by side with HAProxy (`req.ssl_sni`) and nginx (`stream` + `ssl_preread`), all routing
 * the same SNI to the same TLS backend (nginx, HTTPS), and the no-hop direct path as the
 * physical limit. In one run it measures, per path:
 *
 * - CPU per TLS passthrough connection: curl opens fresh TLS 1.3 connections (no session
 *   resumption, `Connection: close`), 16 in parallel; proxy CPU from /proc/<pid>/stat of
 *   every process of that server (master + workers/threads), divided by connections.
 * - CPU per GB: curl downloads a large body through the path; proxy CPU per GB moved.
 * - Added round trip p50/p99: keep-alive TLS request/response ping-pong on 8 connections
 *   per path (a Node client in its own process, rounds interleaved across the paths so
 *   background noise hits all alike), minus the direct path's.
 * - Idle memory per connection: RSS growth of the proxy's processes with N established,
 *   idle TLS connections through it.
 *
 * Every server gets the same worker count (BENCH_WORKERS, default: the core count).
 * Writes bench/results/gateway-<time>.{md,json} and prints the table and the ratios.
 * Environment: BENCH_CONNECTIONS (2000), BENCH_BULK_MB (512), BENCH_PINGS (1500 per
 * connection), BENCH_IDLE (2000), BENCH_ROUNDS (2: connection-rate rounds; the median is kept).
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { freePorts } from '../testkit/ports.js';
import { createTestPki } from '../testkit/test-pki.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SNI = '8443.all.echo.default.east.cw1.causeway.internal';
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
const WORKERS = Number(process.env.BENCH_WORKERS ?? availableParallelism());
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 2000);
const BULK_MB = Number(process.env.BENCH_BULK_MB ?? 512);
const PINGS = Number(process.env.BENCH_PINGS ?? 1500);
const PING_CONNECTIONS = 8;
const IDLE = Number(process.env.BENCH_IDLE ?? 2000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const BIG_FILE_MB = 256;

type PathName = 'direct' | 'haproxy' | 'nginx' | 'causeway';
const PROXIES: PathName[] = ['haproxy', 'nginx', 'causeway'];
const PATHS: PathName[] = ['direct', ...PROXIES];

interface Server {
  readonly name: string;
  readonly port: number;
  readonly proc: ChildProcess;
  stop(): Promise<void>;
}

// ---------------------------------------------------------------- child-process clients

/**
 * `--ping CA PORT...`: PING_CONNECTIONS keep-alive TLS connections to each port, then
 * request/response rounds interleaved across the ports (so background noise hits every
 * path alike); prints the RTTs (µs) per port as JSON.
 */
async function pingClient(ca: string, ports: number[]): Promise<void> {
  const request = Buffer.from(`GET /ping HTTP/1.1\r\nHost: ${SNI}\r\n\r\n`);
  const caPem = readFileSync(ca);
  const open = async (port: number) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: SNI, ca: caPem });
    socket.setNoDelay(true);
    await new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    // Learn the response size once, then count bytes.
    let responseBytes = 0;
    let received = 0;
    let done: (() => void) | undefined;
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (responseBytes === 0 && chunk.includes('pong\n')) responseBytes = received;
      if (responseBytes > 0 && received >= responseBytes) {
        received -= responseBytes;
        done?.();
      }
    });
    return async (): Promise<number> => {
      const start = process.hrtime.bigint();
      await new Promise<void>((resolve) => {
        done = resolve;
        socket.write(request);
      });
      return Number(process.hrtime.bigint() - start) / 1000;
    };
  };
  const pingers = await Promise.all(ports.map((port) => Promise.all(Array.from({ length: PING_CONNECTIONS }, () => open(port)))));
  const rtts: number[][] = ports.map(() => []);
  for (let i = 0; i < PINGS + 50; i++) {
    for (let k = 0; k < ports.length; k++) {
      const p = (i + k) % ports.length;
      const samples = await Promise.all(pingers[p]!.map((ping) => ping()));
      if (i >= 50) rtts[p]!.push(...samples);
    }
  }
  // stdout is a pipe: exit only once it is flushed.
  process.stdout.write(JSON.stringify(rtts), () => process.exit(0));
}

/** `--idle PORT N`: opens N TLS connections, prints `ready`, holds them until stdin closes. */
async function idleClient(port: number, count: number, ca: string): Promise<void> {
  const caPem = readFileSync(ca);
  const sockets: TLSSocket[] = [];
  let open = 0;
  const batch = 50;
  for (let i = 0; i < count; i += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, count - i) }, async () => {
        const socket = tlsConnect({ host: '127.0.0.1', port, servername: SNI, ca: caPem });
        socket.on('error', () => undefined);
        sockets.push(socket);
        await new Promise((resolve) => socket.once('secureConnect', resolve).once('close', resolve));
        if (!socket.destroyed) open++;
      }),
    );
  }
  process.stdout.write(`ready ${open}\n`);
  process.stdin.resume();
  process.stdin.on('end', () => {
    for (const s of sockets) s.destroy();
    process.exit(0);
  });
}

// ---------------------------------------------------------------- measurement helpers

function descendants(pid: number): number[] {
  const parents = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const list = parents.get(ppid) ?? [];
      list.push(Number(entry));
      parents.set(ppid, list);
    } catch {
      // The process ended while we looked.
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...(parents.get(out[i]!) ?? []));
  return out;
}

/** CPU seconds (user + system, all threads) of a server's processes. */
function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // gone
    }
  }
  return ticks / CLK_TCK;
}

function rssKb(pids: number[]): number {
  let kb = 0;
  for (const pid of pids) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
      kb += Number(match?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function run(command: string, args: string[], options: { input?: string } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(options.input ?? '');
  });
}

async function waitForPort(port: number, proc: ChildProcess, name: string): Promise<void> {
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${name} exited with ${proc.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = tcpConnect({ host: '127.0.0.1', port });
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${name} did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function start(name: string, command: string, args: string[], port: number, env: NodeJS.ProcessEnv = process.env): Server & { ready: Promise<void> } {
  const proc = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env });
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 20_000) stderr = stderr.slice(-10_000);
  });
  const ready = waitForPort(port, proc, name).catch((error: Error) => {
    throw new Error(`${error.message}\n${stderr}`);
  });
  return {
    name,
    port,
    proc,
    ready,
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exitCode !== null) return resolve();
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
        setTimeout(() => proc.kill('SIGKILL'), 5000).unref();
      }),
  };
}

// ---------------------------------------------------------------- the run

async function main(): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'causeway-bench-gw-'));
  const servers: Server[] = [];
  const cleanup = async () => {
    await Promise.all(servers.map((s) => s.stop()));
    rmSync(work, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    await bench(work, servers);
  } finally {
    await cleanup();
  }
}

async function bench(work: string, servers: Server[]): Promise<void> {
  const log = (text: string) => process.stderr.write(`${text}\n`);
  chmodSync(work, 0o755);
  const pki = createTestPki(join(work, 'pki'));
  const cert = pki.issue('echo-backend', { server: true, dnsSans: [SNI] });
  const big = join(work, 'big.bin');
  execFileSync('truncate', ['-s', `${BIG_FILE_MB}M`, big]);
  const [backendPort, haproxyPort, nginxPort, causewayPort] = await freePorts(4);
  const ports: Record<PathName, number> = { direct: backendPort!, haproxy: haproxyPort!, nginx: nginxPort!, causeway: causewayPort! };

  // The TLS backend: nginx serving HTTPS (keep-alive, a small page, a ping and a big body).
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `${t}_temp_path ${join(work, `${t}-temp`)};`).join(' ');
  writeFileSync(
    join(work, 'backend.conf'),
    `worker_processes ${WORKERS}; daemon off; pid ${join(work, 'backend.pid')}; error_log ${join(work, 'backend-error.log')} warn;
events { worker_connections 9000; }
http { access_log off; ${temp}
  server { listen 127.0.0.1:${backendPort} ssl; ssl_certificate ${cert.certFile}; ssl_certificate_key ${cert.keyFile};
    ssl_protocols TLSv1.3; ssl_session_tickets off; keepalive_requests 10000000; keepalive_timeout 300s;
    location = /ping { return 200 "pong\\n"; }
    location = /big { alias ${big}; }
    location / { return 200 "ok\\n"; } } }\n`,
  );
  writeFileSync(
    join(work, 'haproxy.cfg'),
    `global
  maxconn 9000
  nbthread ${WORKERS}
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend sni
  bind 127.0.0.1:${haproxyPort}
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend echo if { req.ssl_sni -i ${SNI} }
backend echo
  server s1 127.0.0.1:${backendPort}
`,
  );
  writeFileSync(
    join(work, 'nginx-proxy.conf'),
    `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes ${WORKERS}; daemon off; pid ${join(work, 'proxy.pid')}; error_log ${join(work, 'proxy-error.log')} warn;
events { worker_connections 9000; }
stream {
  map_hash_bucket_size 128;
  map $ssl_preread_server_name $upstream { ${SNI} 127.0.0.1:${backendPort}; default 127.0.0.1:9; }
  server { listen 127.0.0.1:${nginxPort}; ssl_preread on; proxy_pass $upstream; proxy_timeout 1h; }
}\n`,
  );
  writeFileSync(join(work, 'routes.yaml'), `cluster: east\nroutes:\n  - service: echo.default\n    endpoints: [127.0.0.1:${backendPort}]\n`);

  const versions = {
    node: process.version,
    haproxy: execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0],
    nginx: execFileSync('nginx', ['-v'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim() || 'nginx',
    curl: execFileSync('curl', ['--version'], { encoding: 'utf8' }).split('\n')[0],
  };
  const started = [
    start('backend', 'nginx', ['-p', work, '-c', join(work, 'backend.conf')], backendPort!),
    start('haproxy', 'haproxy', ['-db', '-f', join(work, 'haproxy.cfg')], haproxyPort!),
    start('nginx', 'nginx', ['-p', work, '-c', join(work, 'nginx-proxy.conf')], nginxPort!),
    start(
      'causeway',
      process.execPath,
      [join(ROOT, 'bin', 'causeway.js'), 'gateway', '--routes', join(work, 'routes.yaml'), '--host', '127.0.0.1', '--port', String(causewayPort), '--ready-port', '0', '--metrics-port', '0', '--workers', String(WORKERS)],
      causewayPort!,
      { ...process.env, CAUSEWAY_LOG_LEVEL: 'warn' },
    ),
  ];
  servers.push(...started);
  await Promise.all(started.map((s) => s.ready));
  await new Promise((r) => setTimeout(r, 500));
  const serverOf: Record<PathName, Server | undefined> = { direct: undefined, haproxy: started[1], nginx: started[2], causeway: started[3] };
  const pidsOf = (path: PathName) => descendants(serverOf[path]!.proc.pid!);
  const self = fileURLToPath(import.meta.url);
  log(`gateway bench: ${WORKERS} workers each; ${CONNECTIONS} connections × ${ROUNDS} rounds, ${BULK_MB} MB bulk, ${PING_CONNECTIONS}×${PINGS} pings, ${IDLE} idle`);

  // Idle memory per established connection, first, while every server's heap is fresh.
  const idleBytes: Partial<Record<PathName, number>> = {};
  for (const path of PROXIES) {
    const pids = pidsOf(path);
    const before = rssKb(pids);
    const client = spawn(process.execPath, ['--import', 'tsx', self, '--idle', String(ports[path]), String(IDLE), pki.caCertFile], { stdio: ['pipe', 'pipe', 'inherit'] });
    const opened = await new Promise<number>((resolve, reject) => {
      let out = '';
      client.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const match = /ready (\d+)/.exec(out);
        if (match) resolve(Number(match[1]));
      });
      client.once('exit', (code) => reject(new Error(`${path} idle client exited ${code}`)));
    });
    await new Promise((r) => setTimeout(r, 1500));
    const after = rssKb(descendants(serverOf[path]!.proc.pid!));
    idleBytes[path] = ((after - before) * 1024) / opened;
    client.stdin.end();
    await new Promise((r) => client.once('exit', r));
    log(`  idle ${path}: ${opened} connections, ${(idleBytes[path]! / 1024).toFixed(2)} kB each`);
    await new Promise((r) => setTimeout(r, 500));
  }

  const curlBase = (port: number) => ['-sS', '--cacert', pki.caCertFile, '--connect-to', `${SNI}:443:127.0.0.1:${port}`, '--no-sessionid'];

  // Connection rate: fresh TLS connections, each one request with Connection: close.
  const connCfg = join(work, 'conns.cfg');
  writeFileSync(connCfg, `${Array.from({ length: CONNECTIONS }, () => `url = "https://${SNI}/"\noutput = "/dev/null"\n`).join('')}`);
  // Warm-up (unmeasured): lets V8 compile the gateway's hot path before it is measured.
  const warmCfg = join(work, 'warm.cfg');
  writeFileSync(warmCfg, `${Array.from({ length: 300 }, () => `url = "https://${SNI}/"\noutput = "/dev/null"\n`).join('')}`);
  for (const path of PATHS) await run('curl', [...curlBase(ports[path]), '--parallel', '--parallel-max', '16', '-H', 'Connection: close', '--config', warmCfg]);
  const perConnection: Record<PathName, number[]> = { direct: [], haproxy: [], nginx: [], causeway: [] };
  const connRate: Record<PathName, number[]> = { direct: [], haproxy: [], nginx: [], causeway: [] };
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? PATHS : [...PATHS].reverse();
    for (const path of order) {
      const pids = path === 'direct' ? [] : pidsOf(path);
      const cpu0 = cpuSeconds(pids);
      const t0 = performance.now();
      const result = await run('curl', [
        ...curlBase(ports[path]), '--parallel', '--parallel-max', '16', '-H', 'Connection: close', '-w', '%{http_code}\n', '--config', connCfg,
      ]);
      const seconds = (performance.now() - t0) / 1000;
      const ok = result.stdout.split('\n').filter((l) => l === '200').length;
      if (ok !== CONNECTIONS) throw new Error(`${path}: ${ok}/${CONNECTIONS} connections succeeded: ${result.stderr.slice(0, 500)}`);
      if (path !== 'direct') perConnection[path].push(((cpuSeconds(pids) - cpu0) / CONNECTIONS) * 1e6);
      connRate[path].push(CONNECTIONS / seconds);
      log(`  connections ${path}: ${(CONNECTIONS / seconds).toFixed(0)}/s${path === 'direct' ? '' : `, ${perConnection[path].at(-1)!.toFixed(0)} CPU-µs/conn`}`);
    }
  }

  // Bulk: parallel downloads of the big body.
  const downloads = Math.max(1, Math.round(BULK_MB / BIG_FILE_MB));
  const perGb: Partial<Record<PathName, number>> = {};
  const throughput: Partial<Record<PathName, number>> = {};
  for (const path of PATHS) {
    const pids = path === 'direct' ? [] : pidsOf(path);
    const cpu0 = cpuSeconds(pids);
    const t0 = performance.now();
    const args = [...curlBase(ports[path]), '--parallel', '--parallel-max', '4', '-w', '%{size_download}\n'];
    for (let i = 0; i < downloads; i++) args.push(`https://${SNI}/big`, '-o', '/dev/null');
    const result = await run('curl', args);
    const seconds = (performance.now() - t0) / 1000;
    const bytes = result.stdout.split('\n').filter(Boolean).reduce((sum, l) => sum + Number(l), 0);
    if (bytes < downloads * BIG_FILE_MB * 1024 * 1024) throw new Error(`${path}: downloaded ${bytes} bytes: ${result.stderr.slice(0, 500)}`);
    const gb = bytes / 1e9;
    if (path !== 'direct') perGb[path] = (cpuSeconds(pids) - cpu0) / gb;
    throughput[path] = (bytes * 8) / seconds / 1e9;
    log(`  bulk ${path}: ${throughput[path]!.toFixed(2)} Gbit/s${path === 'direct' ? '' : `, ${perGb[path]!.toFixed(3)} CPU-s/GB`}`);
  }

  // Round trips on established keep-alive connections, all paths interleaved.
  const rtt: Partial<Record<PathName, { p50: number; p99: number }>> = {};
  {
    const result = await run(process.execPath, ['--import', 'tsx', self, '--ping', pki.caCertFile, ...PATHS.map((path) => String(ports[path]))]);
    if (result.code !== 0) throw new Error(`ping client failed: ${result.stderr.slice(0, 2000)}`);
    const perPath = JSON.parse(result.stdout) as number[][];
    PATHS.forEach((path, i) => {
      const samples = perPath[i]!.sort((x, y) => x - y);
      rtt[path] = { p50: percentile(samples, 50), p99: percentile(samples, 99) };
      log(`  round trip ${path}: p50 ${rtt[path]!.p50.toFixed(0)} µs, p99 ${rtt[path]!.p99.toFixed(0)} µs`);
    });
  }

  // Report.
  const row = (path: PathName) => {
    const cpuConn = path === 'direct' ? undefined : median(perConnection[path]);
    return {
      path,
      connectionsPerSecond: Math.round(median(connRate[path])),
      cpuMicrosPerConnection: cpuConn === undefined ? undefined : Math.round(cpuConn),
      cpuSecondsPerGb: perGb[path] === undefined ? undefined : Number(perGb[path]!.toFixed(3)),
      throughputGbps: Number(throughput[path]!.toFixed(2)),
      rttP50Micros: Math.round(rtt[path]!.p50),
      rttP99Micros: Math.round(rtt[path]!.p99),
      addedP50Micros: path === 'direct' ? undefined : Math.round(rtt[path]!.p50 - rtt.direct!.p50),
      addedP99Micros: path === 'direct' ? undefined : Math.round(rtt[path]!.p99 - rtt.direct!.p99),
      idleBytesPerConnection: idleBytes[path] === undefined ? undefined : Math.round(idleBytes[path]!),
    };
  };
  const rows = PATHS.map(row);
  const cw = rows[3]!;
  const hap = rows[1]!;
  const ratios = {
    cpuPerConnectionVsHaproxy: Number((cw.cpuMicrosPerConnection! / hap.cpuMicrosPerConnection!).toFixed(2)),
    cpuPerGbVsHaproxy: Number((cw.cpuSecondsPerGb! / hap.cpuSecondsPerGb!).toFixed(2)),
    cpuPerConnectionVsNginx: Number((cw.cpuMicrosPerConnection! / rows[2]!.cpuMicrosPerConnection!).toFixed(2)),
    cpuPerGbVsNginx: Number((cw.cpuSecondsPerGb! / rows[2]!.cpuSecondsPerGb!).toFixed(2)),
  };
  const goals = {
    cpuPerConnection: { goal: '≤ 1.2× HAProxy', met: ratios.cpuPerConnectionVsHaproxy <= 1.2 },
    cpuPerGb: { goal: '≤ 1.05× HAProxy', met: ratios.cpuPerGbVsHaproxy <= 1.05 },
    addedP99: { goal: '≤ 300 µs', met: (cw.addedP99Micros ?? Infinity) <= 300 },
    idleMemory: { goal: '≤ 4 kB per connection', met: (cw.idleBytesPerConnection ?? Infinity) <= 4096 },
  };
  const fmt = (v: number | undefined, digits = 0) => (v === undefined ? '—' : v.toFixed(digits));
  const table = [
    '| path | conn/s | CPU-µs / conn | CPU-s / GB | Gbit/s | RTT p50 µs | RTT p99 µs | added p50 µs | added p99 µs | idle kB / conn |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.path} | ${r.connectionsPerSecond} | ${fmt(r.cpuMicrosPerConnection)} | ${fmt(r.cpuSecondsPerGb, 3)} | ${r.throughputGbps.toFixed(2)} | ${r.rttP50Micros} | ${r.rttP99Micros} | ${fmt(r.addedP50Micros)} | ${fmt(r.addedP99Micros)} | ${fmt(r.idleBytesPerConnection === undefined ? undefined : r.idleBytesPerConnection / 1024, 2)} |`,
    ),
  ].join('\n');
  const ratioText = [
    `Causeway / HAProxy: CPU per connection ${ratios.cpuPerConnectionVsHaproxy}× (goal ≤ 1.2: ${goals.cpuPerConnection.met ? 'met' : 'not met'}), CPU per GB ${ratios.cpuPerGbVsHaproxy}× (goal ≤ 1.05: ${goals.cpuPerGb.met ? 'met' : 'not met'})`,
    `Causeway / nginx: CPU per connection ${ratios.cpuPerConnectionVsNginx}×, CPU per GB ${ratios.cpuPerGbVsNginx}×`,
    `Causeway added p99 ${cw.addedP99Micros} µs (goal ≤ 300: ${goals.addedP99.met ? 'met' : 'not met'}); idle ${fmt((cw.idleBytesPerConnection ?? 0) / 1024, 2)} kB per connection (goal ≤ 4: ${goals.idleMemory.met ? 'met' : 'not met'})`,
  ].join('\n');
  const when = new Date().toISOString();
  const settings = { workers: WORKERS, connections: CONNECTIONS, rounds: ROUNDS, bulkMb: downloads * BIG_FILE_MB, pingConnections: PING_CONNECTIONS, pings: PINGS, idle: IDLE };
  const loadavg = readFileSync('/proc/loadavg', 'utf8').trim();
  const markdown = `# Gateway benchmark ${when}\n\n${table}\n\n${ratioText.split('\n').map((l) => `- ${l}`).join('\n')}\n\nSettings: ${JSON.stringify(settings)}; versions: ${JSON.stringify(versions)}; load average at the end: ${loadavg}\n`;
  const dir = join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const stamp = when.replace(/[:.]/g, '-');
  writeFileSync(join(dir, `gateway-${stamp}.md`), markdown);
  writeFileSync(join(dir, `gateway-${stamp}.json`), `${JSON.stringify({ when, settings, versions, rows, ratios, goals, raw: { perConnection, connRate }, loadavg }, null, 2)}\n`);
  process.stdout.write(`${table}\n\n${ratioText}\n\nwritten: bench/results/gateway-${stamp}.{md,json}\n`);
}

const args = process.argv.slice(2);
if (args[0] === '--ping') await pingClient(args[1]!, args.slice(2).map(Number));
else if (args[0] === '--idle') await idleClient(Number(args[1]), Number(args[2]), args[3]!);
else await main();
