/**
 * `npm run bench:grpc`: unary gRPC calls at a fixed rate on ONE HTTP/2 connection (one
 * channel, as a gRPC app holds it), through the full cross-cluster path, against the
 * direct path and against HAProxy in HTTP/2 mode as both sidecars:
 *
 *   direct:  load ─h2c─► app
 *   mesh:    load ─h2c─► east sidecar (grpc port) ─mTLS, ALPN h2─► west gateway (SNI passthrough) ─► west sidecar inbound ─h2c─► app
 *   haproxy: load ─h2c─► HAProxy (proto h2, TLS origination with the client certificate,
 *            the SNI and ALPN h2) ─► west gateway ─► HAProxy (TLS termination, client
 *            certificate required, ALPN h2) ─h2c─► app
 *   node:    the same hops as haproxy, with bench/h2-relay-floor.mjs (a bare relay on
 *            Node's http2 module, nothing else) as both sidecars: the floor a sidecar on
 *            that module cannot go below
 *
 * Every hop is its own process; the load generator is open-loop (latency from each call's
 * scheduled send time) on node:http2 with gRPC framing, the app a node:http2 gRPC echo
 * (bench/grpc-app.mjs). Reports added p50/p99, sidecar CPU per 1000 calls/s, RSS, and
 * the goals: added p50 ≤ 0.5 ms, sidecar CPU ≤ 1.5× HAProxy's. Writes
 * bench/results/grpc-<time>.{md,json}.
 * Options: --rps 1000 --seconds 10 --warmup 2 --peer haproxy,node (a comma list, or none).
 */
import 'reflect-metadata';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as h2connect, type IncomingHttpHeaders } from 'node:http2';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCommandBundle, ensureSidecarBundle, sidecarEnv } from '../scripts/bundles.mjs';
import { writeTwoClusters } from './two-clusters.js';
import { freePort, measurePath, openLoop, type OpenLoopResult, root, start, startHaproxy, stopHops, stopProcesses, tail } from './hops.js';

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i]!.replace(/^--/, ''), process.argv[i + 1] ?? '');
const rps = Number(args.get('rps') ?? 1000);
const seconds = Number(args.get('seconds') ?? 10);
const warmup = Number(args.get('warmup') ?? 2);
const peers = (args.get('peer') ?? 'haproxy,node').split(',').filter((p) => p !== 'none');
for (const p of peers) if (!['haproxy', 'node'].includes(p)) throw new Error(`--peer ${p}: expected haproxy, node (comma-separated) or none`);
const GOALS = { addedP50Ms: 0.5, cpuVsHaproxy: 1.5 };

/** One gRPC message (5-byte length prefix), ~100 bytes like a small unary request. */
const MESSAGE = (() => {
  const payload = Buffer.alloc(100, 0x61);
  const frame = Buffer.alloc(5 + payload.length);
  frame.writeUInt32BE(payload.length, 1);
  payload.copy(frame, 5);
  return frame;
})();

/** Open-loop unary calls at `rate`/s on one HTTP/2 session (see {@link openLoop}). */
async function drive(port: number, rate: number, durationS: number, warmupS: number): Promise<OpenLoopResult> {
  const session = h2connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    session.once('connect', () => resolve());
    session.once('error', reject);
  });
  const call = () =>
    new Promise<string | undefined>((resolve) => {
      const stream = session.request({ ':method': 'POST', ':path': '/bench.Echo/Echo', 'content-type': 'application/grpc', te: 'trailers' });
      let status: string | undefined;
      stream.on('response', (headers: IncomingHttpHeaders) => (status = (headers['grpc-status'] as string | undefined) ?? status));
      stream.on('trailers', (trailers: IncomingHttpHeaders) => (status = trailers['grpc-status'] as string | undefined));
      stream.on('error', () => {});
      stream.resume();
      stream.once('close', () => resolve(status === '0' ? undefined : `grpc-status ${status ?? 'none'} (rst ${stream.rstCode})`));
      stream.end(MESSAGE);
    });
  const result = await openLoop(rate, durationS, warmupS, call);
  session.close();
  return result;
}

async function main(): Promise<void> {
  await ensureSidecarBundle();
  const gatewayBundle = await ensureCommandBundle('gateway');
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-grpc-'));
  try {
    const [appPort, gatewayPort, serverInbound, clientLocal, dnsA, dnsB, haproxyLocal, haproxyInbound] = (await Promise.all(Array.from({ length: 8 }, () => freePort()))) as [number, number, number, number, number, number, number, number];
    const topology = await writeTwoClusters(dir, { name: 'grpc', port: 9090, protocol: 'grpc' }, { app: appPort, gateway: gatewayPort, serverInbound, clientLocal, dnsEast: dnsA, dnsWest: dnsB, haproxyInbound }, { east: '127.63.0.0/16', west: '127.64.0.0/16' });
    const { serverFile, clientFile, routesFile } = topology;

    const app = await start('app', [join(root, 'bench', 'grpc-app.mjs'), String(appPort)], /listening/);
    const gateway = await start('gateway', [gatewayBundle, 'gateway', '--routes', routesFile, '--host', '127.0.0.1', '--port', String(gatewayPort), '--ready-port', '0', '--metrics-port', '0', '--workers', '1'], /listening|"gateway listening"/);
    const harness = join(root, 'bench', 'mesh-sidecar.mjs');
    const env = sidecarEnv(process.env);
    const server = await start('server sidecar', [harness, serverFile], /READY/, env);
    const client = await start('client sidecar', [harness, clientFile], /READY/, env);
    // The peers take turns on the same ports: the gateway routes the peers' SNI to haproxyInbound.
    const files = peers.length > 0 ? await topology.haproxyFiles() : undefined;
    const startPeer = async (name: string): Promise<{ client: ChildProcess; server: ChildProcess; version: string }> => {
      const { sni, clientPem, serverPem, caFile } = files!;
      if (name === 'node') {
        const floor = join(root, 'bench', 'h2-relay-floor.mjs');
        return {
          server: await start('node floor server side', [floor, 'server', String(haproxyInbound), String(appPort), serverPem, caFile], /READY/),
          client: await start('node floor client side', [floor, 'client', String(haproxyLocal), String(gatewayPort), sni, clientPem, caFile], /READY/),
          version: `Node ${process.version} http2 bare relay (floor)`,
        };
      }
      const common = `global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n`;
      const clientConfig = join(dir, 'haproxy-client.cfg');
      writeFileSync(clientConfig, `${common}frontend out\n  bind 127.0.0.1:${haproxyLocal} proto h2\n  default_backend gateway\nbackend gateway\n  http-reuse always\n  server gw 127.0.0.1:${gatewayPort} ssl crt ${clientPem} ca-file ${caFile} verify required sni str(${sni}) alpn h2\n`);
      const serverConfig = join(dir, 'haproxy-server.cfg');
      writeFileSync(serverConfig, `${common}frontend in\n  bind 127.0.0.1:${haproxyInbound} ssl crt ${serverPem} ca-file ${caFile} verify required alpn h2\n  default_backend app\nbackend app\n  http-reuse always\n  server app 127.0.0.1:${appPort} proto h2\n`);
      return {
        server: await startHaproxy('haproxy server side', serverConfig, haproxyInbound),
        client: await startHaproxy('haproxy client side', clientConfig, haproxyLocal),
        version: execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0]!,
      };
    };
    await new Promise((r) => setTimeout(r, 1000));

    process.stderr.write(`direct path: ${rps} calls/s for ${seconds} s (+${warmup} s warm-up)…\n`);
    const direct = await drive(appPort, rps, seconds, warmup);
    const measure = async (name: string, localPort: number, clientPid: number, serverPid: number) => {
      process.stderr.write(`${name} path: ${rps} calls/s for ${seconds} s (+${warmup} s warm-up)…\n`);
      await drive(localPort, Math.min(rps, 200), 1, 0); // sessions up and JIT warm before measuring
      return measurePath({ client: clientPid, server: serverPid, gateway: gateway.pid!, app: app.pid! }, direct, () => drive(localPort, rps, seconds, warmup));
    };
    const peerRuns: { name: string; version: string; run: Awaited<ReturnType<typeof measure>> }[] = [];
    for (const name of peers) {
      const hops = await startPeer(name);
      peerRuns.push({ name, version: hops.version, run: await measure(name, haproxyLocal, hops.client.pid!, hops.server.pid!) });
      await stopProcesses([hops.client, hops.server]);
    }
    const mesh = await measure('mesh', clientLocal, client.pid!, server.pid!);
    const haproxyRun = peerRuns.find((p) => p.name === 'haproxy')?.run;
    const cpuRatio = haproxyRun ? mesh.sidecarVcpuPer1000Rps / haproxyRun.sidecarVcpuPer1000Rps : undefined;
    const nodeRun = peerRuns.find((p) => p.name === 'node')?.run;
    const goals = {
      addedP50: { goalMs: GOALS.addedP50Ms, met: mesh.addedP50Ms <= GOALS.addedP50Ms },
      cpuVsHaproxy: { goal: GOALS.cpuVsHaproxy, ratio: cpuRatio, met: cpuRatio === undefined ? undefined : cpuRatio <= GOALS.cpuVsHaproxy },
      ...(nodeRun && haproxyRun ? { nodeFloorVsHaproxy: nodeRun.sidecarVcpuPer1000Rps / haproxyRun.sidecarVcpuPer1000Rps } : {}),
      ...(nodeRun ? { meshVsNodeFloor: mesh.sidecarVcpuPer1000Rps / nodeRun.sidecarVcpuPer1000Rps } : {}),
    };
    const when = new Date().toISOString();
    const loadAverage = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    const result = { when, rps, seconds, warmup, direct: { ...tail(direct.latencies), errors: direct.errors }, mesh, peers: Object.fromEntries(peerRuns.map((p) => [p.name, { version: p.version, ...p.run }])), goals, loadAverage };
    const f = (n: number) => n.toFixed(3);
    const row = (name: string, l: ReturnType<typeof tail> & { errors: number }) => `| ${name} | ${f(l.p50Ms)} | ${f(l.p90Ms)} | ${f(l.p99Ms)} | ${f(l.p999Ms)} | ${f(l.maxMs)} | ${l.errors} |`;
    const side = (name: string, r: typeof mesh) => `| ${name} | ${f(r.addedP50Ms)} | ${f(r.addedP99Ms)} | ${f(r.sidecarVcpuPer1000Rps)} (client ${f(r.clientSidecarVcpuPer1000Rps)}, server ${f(r.serverSidecarVcpuPer1000Rps)}) | ${r.afterLoad.client.rssMb.toFixed(1)} / ${r.afterLoad.server.rssMb.toFixed(1)} | ${(r.otherCpuShare * 100).toFixed(1)} % |`;
    const markdown = [
      `# gRPC benchmark ${when}`,
      '',
      `${rps} unary calls/s on one HTTP/2 connection for ${seconds} s (+${warmup} s warm-up); load average ${loadAverage} on ${availableParallelism()} cores.`,
      '',
      '| path | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |',
      '|---|---|---|---|---|---|---|',
      row('direct', result.direct),
      row('mesh', mesh.latency),
      ...peerRuns.map((p) => row(p.name, p.run.latency)),
      '',
      '| sidecars | added p50 ms | added p99 ms | vCPU per 1000 calls/s per sidecar | RSS MB client / server | other work on the machine |',
      '|---|---|---|---|---|---|',
      side('causeway', mesh),
      ...peerRuns.map((p) => side(p.version, p.run)),
      '',
      `- added p50 ${f(mesh.addedP50Ms)} ms (goal ≤ ${GOALS.addedP50Ms}: ${goals.addedP50.met ? 'met' : 'not met'})`,
      ...(cpuRatio !== undefined ? [`- sidecar CPU ${cpuRatio.toFixed(2)}× HAProxy's (goal ≤ ${GOALS.cpuVsHaproxy}×: ${goals.cpuVsHaproxy.met ? 'met' : 'not met'})`] : []),
      ...(goals.nodeFloorVsHaproxy !== undefined ? [`- a bare relay on Node's http2 (the floor for a sidecar on that module) costs ${goals.nodeFloorVsHaproxy.toFixed(2)}× HAProxy's CPU`] : []),
      ...(goals.meshVsNodeFloor !== undefined ? [`- the Causeway sidecar costs ${goals.meshVsNodeFloor.toFixed(2)}× that floor (what the policy, metrics and logs add)`] : []),
      ...(mesh.otherCpuShare > 0.1 ? [`- other work used ${(mesh.otherCpuShare * 100).toFixed(0)} % of the machine during the mesh phase: TOO BUSY, latencies and CPU per call are inflated`] : []),
      '',
    ].join('\n');
    const out = join(root, 'bench', 'results');
    mkdirSync(out, { recursive: true });
    const stamp = when.replace(/[:.]/g, '-');
    writeFileSync(join(out, `grpc-${stamp}.md`), markdown);
    writeFileSync(join(out, `grpc-${stamp}.json`), `${JSON.stringify(result, null, 2)}\n`);
    process.stdout.write(`${markdown}\nwritten: bench/results/grpc-${stamp}.{md,json}\n`);
  } finally {
    await stopHops();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
