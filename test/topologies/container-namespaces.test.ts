// The Docker engine's way into a service's network namespace (nsenter -t <pid> -n, the
// host's nft), checked without Docker: each "container" is a real process in a real
// network namespace of this test, and the ContainerSource stands in for `docker inspect`
// only (the Docker tier, test/docker/, runs the same fault steps against a real engine).
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseCompose, TopologyErrorCodes, TopologyRuntimeError } from '../../topologies/index.js';
import { ContainerNamespaces, parseInterfaces } from '../../topologies/runner/container-namespaces.js';
import { NamespaceFaults } from '../../topologies/runner/network-faults.js';
import { assertRoot } from '../../testkit/root.js';

const COMPOSE = `services:
  web:
    image: causeway:dev
    networks: { lan: { ipv4_address: 10.97.1.2 } }
  web-sidecar:
    image: causeway:dev
    network_mode: "service:web"
  client:
    image: causeway:dev
    networks: { lan: { ipv4_address: 10.97.1.3 } }
networks:
  lan: { ipam: { config: [{ subnet: 10.97.1.0/24 }] } }
`;

interface FakeContainer {
  readonly namespace: string;
  readonly process: ChildProcess;
}

/** A namespace with an interface (one end of a veth pair) holding `address`, and a process in it (the "container"). */
function container(t: ExecutionContext, address: string): FakeContainer {
  const namespace = `cwtest-${randomBytes(4).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', namespace]);
  t.teardown(() => spawnSync('ip', ['netns', 'delete', namespace]));
  execFileSync('ip', ['-n', namespace, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'peer0']);
  execFileSync('ip', ['-n', namespace, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
  execFileSync('ip', ['-n', namespace, 'link', 'set', 'eth0', 'up']);
  const child = spawn('ip', ['netns', 'exec', namespace, 'sleep', '600'], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  return { namespace, process: child };
}

/** The pid of the `sleep` that `ip netns exec` became (it execs, so the same pid). */
const pidOf = (c: FakeContainer) => c.process.pid!;

const tablesIn = (namespace: string) => execFileSync('ip', ['netns', 'exec', namespace, '/usr/sbin/nft', 'list', 'tables'], { encoding: 'utf8' });

test.serial('nsenter by pid: a partition and a loss go into the containers\' namespaces, a partner maps to its owner\'s, heal removes them', async (t) => {
  if (!assertRoot(t)) return;
  const web = container(t, '10.97.1.2');
  const client = container(t, '10.97.1.3');
  const project = parseCompose(COMPOSE, { file: '/virtual/compose.yaml', dir: '/virtual', env: {}, projectName: 'nsenter' });
  // The sidecar runs, web's own process does not: the sidecar's pid enters the shared namespace.
  let states = [
    { service: 'web-sidecar', status: 'running', pid: pidOf(web) },
    { service: 'client', status: 'running', pid: pidOf(client) },
  ];
  const source = { states: () => Promise.resolve(states), networkSubnets: () => Promise.resolve([{ name: 'lan', subnet: '10.97.1.0/24' }]) };
  const dir = mkdtempSync(join(tmpdir(), 'cw-faults-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const faults = new NamespaceFaults(project, new ContainerNamespaces(project, source), dir);

  const layout = await new ContainerNamespaces(project, source).layout();
  t.deepEqual(
    layout.namespaces.map((n) => ({ owner: n.owner, services: n.services, interfaces: n.interfaces })),
    [
      { owner: 'web', services: ['web', 'web-sidecar'], interfaces: [{ name: 'eth0', address: '10.97.1.2', network: 'lan' }] },
      { owner: 'client', services: ['client'], interfaces: [{ name: 'eth0', address: '10.97.1.3', network: 'lan' }] },
    ],
  );

  t.regex(await faults.inject({ kind: 'partition', between: ['web-sidecar', 'client'] }), /partition between web-sidecar and client: packets dropped in web \(nft table (causeway_partition_[0-9a-f]{12})\)/);
  t.regex(tablesIn(web.namespace), /causeway_partition_/);
  t.notRegex(tablesIn(client.namespace), /causeway_partition_/);
  t.regex(await faults.inject({ kind: 'loss', on: 'client', percent: 5 }), /5% loss on client: each packet in or out of eth0/);
  t.regex(tablesIn(client.namespace), /table ip causeway_loss/);
  t.regex(await faults.heal({ between: ['client', 'web-sidecar'] }), /healed: partition between web-sidecar and client/);
  t.notRegex(tablesIn(web.namespace), /causeway_partition_/);

  // A restarted container has a new namespace without the table: the heal has nothing to
  // remove there and succeeds; a stopped one has none and is skipped.
  execFileSync('ip', ['netns', 'exec', client.namespace, '/usr/sbin/nft', 'delete', 'table', 'ip', 'causeway_loss']);
  t.is(await faults.heal({ on: 'client' }), 'healed: 5% loss on client');
  states = [{ service: 'client', status: 'running', pid: pidOf(client) }];
  await t.throwsAsync(faults.inject({ kind: 'loss', on: 'web', percent: 5 }), { instanceOf: TopologyRuntimeError, message: /loss\.on: service "web" is not running, so it has no network namespace/ });
});

test('the Docker way in refuses a remote engine, naming DOCKER_HOST', async (t) => {
  const project = parseCompose(COMPOSE, { file: '/virtual/compose.yaml', dir: '/virtual', env: {}, projectName: 'remote' });
  const source = { states: () => Promise.resolve([]), networkSubnets: () => Promise.resolve([]) };
  const saved = process.env.DOCKER_HOST;
  process.env.DOCKER_HOST = 'tcp://10.0.0.9:2376';
  t.teardown(() => (saved === undefined ? delete process.env.DOCKER_HOST : (process.env.DOCKER_HOST = saved)));
  const error = await t.throwsAsync(new ContainerNamespaces(project, source).layout(), { instanceOf: TopologyRuntimeError });
  if (process.getuid?.() === 0) t.regex(error!.message, /need the engine on this host .*DOCKER_HOST=tcp:\/\/10\.0\.0\.9:2376/);
  t.is(error!.code, TopologyErrorCodes.faultUnsupported);
});

test('the Docker way in refuses a runner that is not root, saying why it needs root', (t) => {
  if (!assertRoot(t)) return;
  // A child process as nobody: the same check, from a user without root.
  const script = `import { parseCompose } from './topologies/index.js';
import { ContainerNamespaces } from './topologies/runner/container-namespaces.js';
const project = parseCompose(${JSON.stringify(COMPOSE)}, { file: '/virtual/compose.yaml', dir: '/virtual', env: {}, projectName: 'user' });
new ContainerNamespaces(project, { states: async () => [], networkSubnets: async () => [] }).layout().then(
  () => console.log('no refusal'),
  (e) => console.log(e.code + ' ' + e.message));`;
  const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '--import=tsx', '--input-type=module', '-e', script], { cwd: process.cwd(), encoding: 'utf8', timeout: 60_000 });
  t.is(result.status, 0, result.stderr);
  t.regex(result.stdout, /^CW_TOPOLOGY_FAULT_UNSUPPORTED fault steps under Docker need root: .*nsenter -t <pid> -n/);
});

test('ip -j addr output: loopback and non-IPv4 skipped; no JSON or no list refused with the namespace named', (t) => {
  const json = JSON.stringify([
    { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8 }] },
    { ifname: 'eth0', addr_info: [{ family: 'inet', local: '10.97.1.2', prefixlen: 24 }, { family: 'inet6', local: 'fe80::1', prefixlen: 64 }] },
    { ifname: 'eth1', addr_info: [{ family: 'inet', local: 'not-an-address' }] },
    { ifname: 7 },
    null,
  ]);
  t.deepEqual(parseInterfaces(json, 'web'), [{ name: 'eth0', address: '10.97.1.2' }]);
  t.throws(() => parseInterfaces('Object "addr" is unknown', "web's container (pid 42)"), { instanceOf: TopologyRuntimeError, message: /ip -j addr in web's container \(pid 42\) printed no JSON/ });
  t.throws(() => parseInterfaces('{"ifname":"eth0"}', 'web'), { instanceOf: TopologyRuntimeError, message: /printed no list of interfaces/ });
});
