import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import { mintJoinToken } from '../../ca/index.js';
import { CatalogAdmin, Controller } from '../../controller/index.js';
import { Etcd3Store } from '../../store/index.js';
import { EtcdKeys, parseConfig } from '../../mesh/index.js';
import { startEtcd, startProcess, waitFor, type ManagedProcess } from '../../testkit/index.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';

/**
 * The process a user starts is not the one that runs the component: `npx causeway sidecar`
 * is npm (on the system Node) → `sh -c causeway …` → node (node_modules' Node 24, via npm's
 * PATH) → execve into dist/sidecar.mjs; `causeway …` under an old system Node is the
 * launcher (bin/causeway.js on Node 20) → node_modules' Node 24 child. These tests signal
 * the process the user started — with the system's own npx and Node, not a stand-in — and
 * then look for any process of the chain left.
 *
 * The sidecar waits for a controller that is not there (its first certificate): a real,
 * long-running sidecar that needs no etcd or controller.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SYSTEM_NODE = '/usr/bin/node';
const SYSTEM_NPX = '/usr/bin/npx';
const DRAIN_TIMEOUT_MS = 5000;

function systemNodeVersion(): string | undefined {
  try {
    return execFileSync(SYSTEM_NODE, ['--version'], { encoding: 'utf8' }).trim();
  } catch {
    return undefined;
  }
}

/** A workload config whose sidecar waits for a controller on a closed port; its path marks its processes. */
function sidecarConfig(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'cw-signals-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'root-key.pem'), '-out', join(dir, 'root.pem'), '-subj', '/CN=signals-test-root', '-days', '1'], { stdio: 'ignore' });
  writeFileSync(join(dir, 'token'), 'not-a-real-token\n');
  const file = join(dir, 'workload.yaml');
  writeFileSync(
    file,
    [
      'cluster: east',
      'locality: { region: eu, zone: eu-1 }',
      'namespace: default',
      'service: reviews',
      'serviceAccount: reviews',
      'controller: { address: 127.0.0.1:1 }',
      'advertiseAddress: 127.0.0.1',
      'inboundPort: 0',
      'dnsPort: 0',
      `stateDir: ${join(dir, 'state')}`,
      `trustBundleFile: ${join(dir, 'root.pem')}`,
      `joinTokenFile: ${join(dir, 'token')}`,
      'observability: { host: 127.0.0.1, readyPort: 0, metricsPort: 0 }',
    ].join('\n'),
  );
  return file;
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
  } catch {
    return '';
  }
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

/** Every live process whose command line names `marker` (the config path): the chain, wherever it was re-parented to. */
function processesNaming(marker: string): Array<{ pid: number; cmd: string }> {
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const cmd = commandLine(pid);
    if (cmd.includes(marker) && !isZombie(pid)) found.push({ pid, cmd });
  }
  return found;
}

function descendants(pid: number): number[] {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
  return children.flatMap((child) => [child, ...descendants(child)]);
}

async function waitUntilGone(marker: string, withinMs: number): Promise<Array<{ pid: number; cmd: string }>> {
  const deadline = Date.now() + withinMs;
  let left = processesNaming(marker);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    left = processesNaming(marker);
  }
  return left;
}

/**
 * Starts `command` in a process group of its own (a signal from the test reaches only the
 * process it names), waits until the sidecar bundle runs, and returns the chain's pids.
 * Teardown SIGKILLs whatever of the chain is left.
 */
async function startChain(t: ExecutionContext, command: string, args: string[], config: string): Promise<{ proc: ManagedProcess; chain: number[] }> {
  const env = { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' };
  const proc = startProcess(command, args, { cwd: ROOT, env, detached: true, name: `${command} ${args.slice(0, 2).join(' ')}` });
  t.teardown(() => {
    for (const { pid } of processesNaming(config)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    return proc.kill();
  });
  await proc.waitForOutput(/first certificate not available yet; retrying/, 90_000);
  const chain = [proc.child.pid!, ...descendants(proc.child.pid!)];
  t.true(chain.some((pid) => /\/dist\/sidecar\.mjs sidecar /.test(commandLine(pid))), `the sidecar bundle runs in the chain: ${chain.map((p) => `${p} ${commandLine(p)}`).join('; ')}`);
  return { proc, chain };
}

function describe(chain: readonly number[]): string {
  return chain.map((pid) => `${pid}`).join(' → ');
}

// This machine kind has a system Node 20 with its npx (the chain users hit); the tests
// run always and say what is missing rather than skip.
function requireSystemNode(t: ExecutionContext, what: string): void {
  if (!existsSync(SYSTEM_NPX) || systemNodeVersion() === undefined) t.fail(`${what} needs the system Node and npx at ${SYSTEM_NODE} and ${SYSTEM_NPX} (apt-get install -y nodejs npm)`);
}

test('regression "SIGTERM to npx causeway sidecar left the sidecar running": npx, its sh and the sidecar all exit, the sidecar stopped cleanly', async (t) => {
  requireSystemNode(t, 'this test');
  const config = sidecarConfig(t);
  const { proc, chain } = await startChain(t, SYSTEM_NODE, [SYSTEM_NPX, 'causeway', 'sidecar', '--config', config, '--drain-timeout', String(DRAIN_TIMEOUT_MS)], config);
  t.log(`system Node ${systemNodeVersion()}; chain ${describe(chain)}: ${chain.map(commandLine).join(' | ')}`);
  t.true(chain.length >= 3, 'npx → sh → node: the sh hop that forwards nothing is there');

  proc.child.kill('SIGTERM');
  const left = await waitUntilGone(config, DRAIN_TIMEOUT_MS + 3000);
  t.deepEqual(left, [], 'no process of the chain is left');
  t.regex(proc.output(), /"signal":"SIGTERM".*"msg":"stopping sidecar"|"ancestorGone":\d+.*"msg":"stopping sidecar"/);
  t.notRegex(proc.output(), /did not stop within/);
});

test('SIGTERM to npx causeway sidecar, a sidecar fully up (certificate issued, endpoint registered): it deregisters and everything exits', async (t) => {
  requireSystemNode(t, 'this test');
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'cw-signals-up-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pki = await createMeshPki(join(dir, 'pki'));
  const east = await pki.cluster('east');
  const reviews = 'spiffe://causeway.internal/ns/default/sa/reviews';
  const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => store.close());
  await new CatalogAdmin(store).applyService({ name: 'reviews', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [reviews] });
  const controller = new Controller({
    config: parseConfig('cluster', {
      cluster: { name: 'east', locality: { region: 'eu', zone: 'eu-1' } },
      etcd: { endpoints: etcd.endpoints },
      controller: { host: '127.0.0.1', grpcPort: 0 },
      observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
    }),
    intermediate: east.ca,
  });
  t.teardown(() => controller.stop());
  await controller.start();
  writeFileSync(join(dir, 'token'), mintJoinToken(east.ca, { spiffeId: reviews }));
  const config = join(dir, 'workload.yaml');
  writeFileSync(
    config,
    [
      'cluster: east',
      'locality: { region: eu, zone: eu-1 }',
      'namespace: default',
      'service: reviews',
      'serviceAccount: reviews',
      `controller: { address: 127.0.0.1:${controller.grpcPort} }`,
      'advertiseAddress: 127.0.0.1',
      'inboundPort: 0',
      'dnsPort: 0',
      'ports: [{ name: http, port: 9080, protocol: http }]',
      `stateDir: ${join(dir, 'state')}`,
      `trustBundleFile: ${join(east.caDir, 'trust-bundle.pem')}`,
      `joinTokenFile: ${join(dir, 'token')}`,
      'observability: { host: 127.0.0.1, readyPort: 0, metricsPort: 0 }',
    ].join('\n'),
  );
  const proc = startProcess(SYSTEM_NODE, [SYSTEM_NPX, 'causeway', 'sidecar', '--config', config, '--drain-timeout', String(DRAIN_TIMEOUT_MS)], { cwd: ROOT, env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' }, detached: true, name: 'npx causeway sidecar' });
  t.teardown(async () => {
    for (const { pid } of processesNaming(config)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    await proc.kill();
  });
  await proc.waitForOutput(/sidecar reviews\.default \(spiffe:\/\/causeway\.internal\/ns\/default\/sa\/reviews\) inbound :\d+/, 90_000);
  await waitFor(async () => (await store.list(EtcdKeys.serviceEndpointsPrefix('default', 'reviews'))).entries.length === 1, { what: 'the endpoint registered' });

  proc.child.kill('SIGTERM');
  const left = await waitUntilGone(config, DRAIN_TIMEOUT_MS + 3000);
  t.deepEqual(left, [], 'no process of the chain is left');
  t.notRegex(proc.output(), /did not stop within/);
  // Deregistered by the sidecar's own stop — not left for its lease to expire.
  t.is((await store.list(EtcdKeys.serviceEndpointsPrefix('default', 'reviews'))).entries.length, 0);
});

test('SIGKILL to npx causeway sidecar: the sidecar sees its chain broken and stops, nothing is left', async (t) => {
  requireSystemNode(t, 'this test');
  const config = sidecarConfig(t);
  const { proc, chain } = await startChain(t, SYSTEM_NODE, [SYSTEM_NPX, 'causeway', 'sidecar', '--config', config, '--drain-timeout', String(DRAIN_TIMEOUT_MS)], config);
  proc.child.kill('SIGKILL');
  const left = await waitUntilGone(config, DRAIN_TIMEOUT_MS + 3000);
  t.deepEqual(left, [], `no process of the chain ${describe(chain)} is left`);
  t.regex(proc.output(), /"ancestorGone":\d+.*"msg":"stopping sidecar"/);
});

/** The launcher hop exists only under a system Node older than the project's floor (22.12). */
function requireOldSystemNode(t: ExecutionContext): void {
  const version = systemNodeVersion();
  const [major = 0, minor = 0] = (version ?? 'v0.0').slice(1).split('.').map(Number);
  if (version === undefined || !(major < 22 || (major === 22 && minor < 12))) t.fail(`needs a system Node older than 22.12 at ${SYSTEM_NODE} (this machine kind has 20; found ${version ?? 'none'})`);
}

test('causeway sidecar under the old system Node: SIGHUP to the launcher stops the sidecar and comes back as its status; a SIGKILLed launcher leaves nothing', async (t) => {
  requireOldSystemNode(t);
  const bin = join(ROOT, 'bin/causeway.js');
  const config = sidecarConfig(t);
  const hup = await startChain(t, SYSTEM_NODE, [bin, 'sidecar', '--config', config, '--drain-timeout', String(DRAIN_TIMEOUT_MS)], config);
  t.is(hup.chain.length, 2, `launcher → node_modules' Node: ${describe(hup.chain)}`);
  hup.proc.child.kill('SIGHUP');
  t.is(await hup.proc.exited, 0, 'the sidecar stopped cleanly and its status came back through the launcher');
  t.deepEqual(await waitUntilGone(config, 3000), []);
  t.regex(hup.proc.output(), /"signal":"SIGHUP".*"msg":"stopping sidecar"/);

  const config2 = sidecarConfig(t);
  const kill = await startChain(t, SYSTEM_NODE, [bin, 'sidecar', '--config', config2, '--drain-timeout', String(DRAIN_TIMEOUT_MS)], config2);
  kill.proc.child.kill('SIGKILL');
  t.deepEqual(await waitUntilGone(config2, DRAIN_TIMEOUT_MS + 3000), [], `nothing of ${describe(kill.chain)} is left`);
});

function requireRoot(t: ExecutionContext): void {
  if (process.getuid?.() !== 0 || !existsSync('/usr/bin/unshare')) t.fail('needs root and /usr/bin/unshare (util-linux) for a pid namespace; the suite runs as root');
}

for (const [label, node] of [
  ['Node 24 (node_modules): the bundle itself', process.execPath],
  ['the old system Node: the launcher', SYSTEM_NODE],
] as const) {
  test(`causeway sidecar as PID 1 of its own pid namespace (a container), ${label} as PID 1: SIGTERM stops it cleanly, exit 0, nothing left`, async (t) => {
    requireRoot(t);
    if (node === SYSTEM_NODE) requireSystemNode(t, 'the launcher as PID 1');
    const config = sidecarConfig(t);
    // unshare --fork: the command is PID 1 inside, a child of unshare outside (what `docker stop` signals).
    const { proc, chain } = await startChain(t, 'unshare', ['--pid', '--fork', '--mount-proc', node, join(ROOT, 'bin/causeway.js'), 'sidecar', '--config', config, '--drain-timeout', String(DRAIN_TIMEOUT_MS)], config);
    const pid1 = chain[1]!;
    t.regex(readFileSync(`/proc/${pid1}/status`, 'utf8'), /^NSpid:\s+\d+\s+1$/m, 'PID 1 in its namespace');
    process.kill(pid1, 'SIGTERM');
    t.is(await proc.exited, 0, 'unshare reports the command exited 0');
    t.deepEqual(await waitUntilGone(config, 3000), []);
    t.regex(proc.output(), /"signal":"SIGTERM".*"msg":"stopping sidecar"/);
  });
}

test('a gateway whose primary is SIGKILLed leaves no listener worker behind', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-signals-gw-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const routes = join(dir, 'routes.yaml');
  writeFileSync(routes, 'cluster: east\ntrustDomain: causeway.internal\nroutes:\n  - service: echo.default\n    endpoints: [127.0.0.1:9]\n');
  const proc = startProcess(process.execPath, [join(ROOT, 'bin/causeway.js'), 'gateway', '--routes', routes, '--host', '127.0.0.1', '--port', '0', '--ready-port', '0', '--metrics-port', '0', '--workers', '2'], { name: 'causeway gateway', detached: true });
  t.teardown(async () => {
    for (const { pid } of processesNaming(routes)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    await proc.kill();
  });
  await proc.waitForOutput(/gateway listening on port \d+/, 90_000);
  const workers = descendants(proc.child.pid!);
  t.is(workers.length, 2, 'two listener workers');
  proc.child.kill('SIGKILL');
  t.deepEqual(await waitUntilGone(routes, 5000), [], 'the workers exit with their IPC channel to the primary');
});

test('the processes of a stopped chain are really gone: a sanity check of the process scan', (t) => {
  // The scan must see a live process naming the marker, or the tests above prove nothing.
  const marker = `cw-signals-marker-${process.pid}-${Date.now()}`;
  const sleeper = spawn('sh', ['-c', `sleep 30 # ${marker}`], { stdio: 'ignore' });
  t.teardown(() => sleeper.kill('SIGKILL'));
  const seen = processesNaming(marker);
  t.true(seen.some((p) => p.pid === sleeper.pid), `found ${JSON.stringify(seen)}`);
});
