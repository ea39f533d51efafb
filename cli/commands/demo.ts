import { join } from 'node:path';
import type { Command } from 'commander';
import { UsageError } from '../../mesh/index.js';
import { TopologyRun, loadComposeFile, parseComposeDurationMs, requireRoot, resolveTopology } from '../../topologies/index.js';
import { forwardLoopbackToSocket, UI_DEFAULT_PORT, type SocketForward } from '../../ui/index.js';
import { parsePortFlag } from '../port-flags.js';

/**
 * `causeway demo` — the README's main job: the two-clusters topology in network
 * namespaces, requests crossing from east to west with the caller's SPIFFE ID visible at
 * the server, and `causeway status`. Ctrl-C tears everything down.
 */
const TOPOLOGY = 'two-clusters';
const CALLER = 'productpage-east';
const MESH_NAME = 'reviews.default.svc.causeway.internal';
const SIDECAR_DNS = '127.0.0.1:15053';

// Runs inside productpage's namespace, as the app would: resolve the natural name with the
// sidecar's DNS, call the natural port, print the echo's JSON answer and the address used.
const ONE_REQUEST = `const dns = new (require('node:dns').promises.Resolver)({ timeout: 2000, tries: 1 });
dns.setServers([${JSON.stringify(SIDECAR_DNS)}]);
dns.resolve4(${JSON.stringify(MESH_NAME)})
  .then(([address]) => fetch('http://' + address + ':9080/', { signal: AbortSignal.timeout(3000) })
    .then(async (r) => process.stdout.write(JSON.stringify({ address, status: r.status, body: await r.json() }))))
  .catch((e) => { process.stdout.write(JSON.stringify({ error: String(e.cause?.code ?? e.code ?? e.message) })); process.exitCode = 1; });`;

interface EchoAnswer {
  address?: string;
  status?: number;
  body?: { service?: string; cluster?: string; version?: string; peerIdentity?: string; peerCluster?: string };
  error?: string;
}

function describeAnswer(n: number, raw: string): string {
  let answer: EchoAnswer;
  try {
    answer = JSON.parse(raw) as EchoAnswer;
  } catch {
    return `#${n} unreadable answer: ${raw.slice(0, 200)}`;
  }
  if (answer.error) return `#${n} FAILED: ${answer.error}`;
  const b = answer.body ?? {};
  return `#${n} ${MESH_NAME} → ${answer.address ?? '?'}: ${answer.status} from ${b.service ?? '?'} in cluster ${b.cluster ?? '?'} (${b.version ?? '?'}); the server saw caller ${b.peerIdentity ?? '(none)'} from cluster ${b.peerCluster ?? '?'}`;
}

/** How long the demo's view may run: until the demo ends (its namespace's teardown stops it). */
const VIEW_LIFETIME_MS = 7 * 24 * 3600_000;

/**
 * `causeway ui` for east, run inside controller-east's namespace (it reads east's etcd,
 * which only that network reaches) on a Unix socket in the run folder, and forwarded to
 * the host's 127.0.0.1:`port`. Resolves once the forwarded URL answers /api/mesh.
 */
async function startDemoView(run: TopologyRun, port: number): Promise<SocketForward> {
  const socketPath = join(run.runDir, 'mesh-view.sock');
  let exited: string | undefined;
  void run.exec('controller-east', ['causeway', 'ui', '-c', '/config/east.yaml', '--socket', socketPath], { timeoutMs: VIEW_LIFETIME_MS }).then((r) => {
    exited = `causeway ui exited ${r.exitCode}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' | ')}`;
  });
  const forward = await forwardLoopbackToSocket({ socketPath, port });
  const deadline = Date.now() + 60_000;
  for (;;) {
    const status = await fetch(new URL('api/mesh', forward.url), { signal: AbortSignal.timeout(5000) }).then((r) => r.status, () => 0);
    if (status === 200) return forward;
    if (exited !== undefined || Date.now() > deadline) {
      await forward.close();
      throw new Error(`the mesh view did not answer at ${forward.url}: ${exited ?? `no answer within 60 s (status ${status}); see ${run.runDir}/logs`}`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(`the main job: bring up the ${TOPOLOGY} topology (east and west on separate networks, gateways on a shared WAN; each cluster's export store reached by its peer only through its gateway), show requests crossing from east to west with the caller's identity, causeway status, and the live mesh view (causeway ui) on the host's 127.0.0.1:15080; Ctrl-C tears it down. Needs root (network namespaces)`)
    .option('--once', 'show it once and tear down instead of waiting for Ctrl-C')
    .option('--interval <d>', 'time between requests while running', '2s')
    .option('--timeout <d>', 'give up if the topology is not up within this long', '180s')
    .option('--ui-port <port>', `host loopback port of the live mesh view (causeway ui), 0 picks one`, parsePortFlag('--ui-port'), UI_DEFAULT_PORT)
    .action(async (options: { once?: boolean; interval: string; timeout: string; uiPort: number }) => {
      const intervalMs = parseComposeDurationMs(options.interval);
      const timeoutMs = parseComposeDurationMs(options.timeout);
      if (intervalMs === undefined || intervalMs <= 0) throw new UsageError(`--interval must be a duration such as 2s (got "${options.interval}")`);
      if (timeoutMs === undefined || timeoutMs <= 0) throw new UsageError(`--timeout must be a duration such as 180s (got "${options.timeout}")`);
      requireRoot('demo');
      // Its own project name, so the demo never collides with a test run of the same topology.
      const project = loadComposeFile(resolveTopology(TOPOLOGY).composeFile, { projectName: 'causeway-demo' });
      let run: TopologyRun | undefined;
      let view: SocketForward | undefined;
      let stopping = false;
      const tearDown = async (code: number) => {
        if (stopping) return;
        stopping = true;
        process.stdout.write('\ntearing the demo down…\n');
        await view?.close();
        const left = run ? await run.down() : [];
        process.stdout.write(left.length === 0 ? 'all namespaces, bridges and processes removed\n' : `left behind: ${left.join('; ')}\n`);
        process.exit(left.length === 0 ? code : 1);
      };
      process.once('SIGINT', () => void tearDown(0));
      process.once('SIGTERM', () => void tearDown(0));
      try {
        process.stdout.write(`bringing up ${TOPOLOGY} in network namespaces (etcd, export stores and their grants, CA, controllers, federation links through the gateways, gateways, sidecars, apps)…\n`);
        run = await TopologyRun.up(project, { timeoutMs, onCreated: (r) => (run = r) });
        for (const s of run.view()) {
          const where = Object.entries(s.addresses).map(([n, a]) => `${n}=${a}`).join(' ') || `(shares ${s.namespace})`;
          process.stdout.write(`  ${s.name.padEnd(20)} ${s.status.padEnd(8)} ${where}\n`);
        }
        process.stdout.write(`\n${CALLER} calls reviews.default (it lives only in west) by its natural name and port — the sidecar's DNS (${SIDECAR_DNS}) answers with a loopback address where the sidecar listens — through west's gateway (SNI passthrough) to reviews' sidecar:\n`);
        const ask = async (n: number) => {
          const result = await run!.exec(CALLER, ['node', '-e', ONE_REQUEST], { timeoutMs: 10_000 });
          process.stdout.write(`  ${describeAnswer(n, result.stdout)}\n`);
          return result.exitCode === 0;
        };
        // The first requests may race the first snapshot; give the mesh a moment to settle.
        const deadline = Date.now() + 60_000;
        while (!(await run.exec(CALLER, ['node', '-e', ONE_REQUEST], { timeoutMs: 10_000 })).stdout.includes('"status":200')) {
          if (Date.now() > deadline) throw new Error(`${CALLER} never reached reviews; see logs in ${run.runDir}/logs`);
          await new Promise((r) => setTimeout(r, 500));
        }
        let failures = 0;
        for (let n = 1; n <= 5; n++) if (!(await ask(n))) failures++;
        process.stdout.write('\ncauseway status, as east sees the mesh:\n');
        const status = await run.exec('controller-east', ['causeway', 'status', '-c', '/config/east.yaml'], { timeoutMs: 30_000 });
        process.stdout.write(status.stdout.replace(/^/gm, '  '));
        if (status.exitCode !== 0) process.stdout.write(`  (causeway status exited ${status.exitCode}: ${status.stderr.trim().split('\n').pop() ?? 'no output'})\n`);
        view = await startDemoView(run, options.uiPort);
        process.stdout.write(`\nthe live view of the mesh, as east sees it (clusters, links, services, events; updates itself): ${view.url}\n`);
        if (options.once) return await tearDown(failures === 0 ? 0 : 1);
        process.stdout.write(`\nthe mesh is up; one request every ${options.interval} (Ctrl-C tears everything down)\n`);
        process.stdout.write(`  logs: ${run.runDir}/logs   more: causeway topology exec ${TOPOLOGY} ${CALLER} -- …\n`);
        for (let n = 6; !stopping; n++) {
          await ask(n);
          await new Promise((r) => setTimeout(r, intervalMs));
        }
      } catch (error) {
        process.stderr.write(`causeway: error: ${(error as Error).message}\n`);
        await tearDown(1);
      }
    });
}
