import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import { stringify } from 'yaml';
import { EtcdKeys } from '../../mesh/index.js';
import { freePorts, startEtcd, startProcess, waitFor, type EtcdServer, type ManagedProcess } from '../../testkit/index.js';

/**
 * One host, many parts (docs/architecture.md "Ports"): a controller, a gateway, a federation service
 * and a sidecar on one machine. Real processes as operators start them (bin/causeway.js,
 * which runs each command's bundle), a real etcd, real sockets on loopback.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CAUSEWAY = join(ROOT, 'bin', 'causeway.js');
const TD = 'causeway.internal';

const dir = mkdtempSync(join(tmpdir(), 'cw-one-host-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function causeway(args: readonly string[], name = `causeway ${args[0]}`): ManagedProcess {
  return startProcess(process.execPath, [CAUSEWAY, ...args], { cwd: ROOT, name, env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' } });
}

async function runToEnd(args: readonly string[]): Promise<{ code: number | NodeJS.Signals | null; output: string }> {
  const proc = causeway(args);
  const code = await proc.exited;
  return { code, output: proc.output() };
}

/** The mesh root and east's intermediate, made once by the CLI (a few seconds each). */
let pki: Promise<{ root: string; east: string }> | undefined;
function meshPki(): Promise<{ root: string; east: string }> {
  pki ??= (async () => {
    const root = join(dir, 'root');
    const east = join(dir, 'east-ca');
    for (const args of [
      ['ca', 'init', '--trust-domain', TD, '--out', root],
      ['ca', 'intermediate', '--root', root, '--cluster', 'east', '--out', east],
    ]) {
      const result = await runToEnd(args);
      if (result.code !== 0) throw new Error(`causeway ${args.join(' ')} failed: ${result.output}`);
    }
    return { root, east };
  })();
  return pki;
}

async function freshEtcd(t: ExecutionContext): Promise<EtcdServer> {
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  return etcd;
}

interface ClusterPorts {
  readonly grpcPort: number;
  readonly gatewayPort: number;
  readonly readyPort: number;
  readonly metricsPort: number;
}

/** east's cluster config: the same file every component on the host reads. */
async function clusterConfig(t: ExecutionContext, etcd: EtcdServer, name: string): Promise<{ file: string; ports: ClusterPorts }> {
  const { east } = await meshPki();
  const [grpcPort, gatewayPort, readyPort, metricsPort] = await freePorts(4);
  const ports = { grpcPort: grpcPort!, gatewayPort: gatewayPort!, readyPort: readyPort!, metricsPort: metricsPort! };
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    stringify({
      cluster: { name: 'east', locality: { region: 'eu', zone: 'eu-1' } },
      etcd: { endpoints: etcd.endpoints },
      controller: { host: '127.0.0.1', grpcPort: ports.grpcPort, caDir: east },
      gateway: { host: '127.0.0.1', port: ports.gatewayPort },
      observability: { host: '127.0.0.1', readyPort: ports.readyPort, metricsPort: ports.metricsPort },
    }),
  );
  t.teardown(() => rmSync(file, { force: true }));
  return { file, ports };
}

/** Holds `port` on 127.0.0.1 the way another component would. */
async function occupy(t: ExecutionContext, port: number): Promise<void> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
}

async function status(port: number, path: string): Promise<number> {
  return (await fetch(`http://127.0.0.1:${port}${path}`)).status;
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

/** The one line a port conflict must produce: setting, address, flag, file and code — no stack. */
function assertPortConflict(t: ExecutionContext, output: string, setting: string, flag: string, port: number, file: string): void {
  t.regex(
    output,
    new RegExp(
      `^causeway: error: ${escape(setting)}: 127\\.0\\.0\\.1:${port} is already in use \\(another Causeway component on this host\\?\\); set a free port with ${escape(flag)} or ${escape(setting)} in ${escape(file)} \\[CW_LISTEN_ADDRESS_IN_USE\\]$`,
      'm',
    ),
  );
  t.notRegex(output, /^\s+at /m, 'no stack trace');
  t.notRegex(output, /causeway: error: listen EADDRINUSE/, 'not the bare Node error');
}

function gatewayKeys(etcd: EtcdServer): string {
  return etcd.etcdctl(['get', '--prefix', EtcdKeys.gatewaysPrefix, '--keys-only']).trim();
}

test.serial('regression (controller and gateway both took observability.readyPort): the gateway exits 1 naming the setting and --ready-port, with no registration left in etcd', async (t) => {
  const etcd = await freshEtcd(t);
  const { file, ports } = await clusterConfig(t, etcd, 'shared-ready-port');
  const controller = causeway(['controller', '--config', file]);
  t.teardown(() => controller.kill());
  await controller.waitForOutput(/serving gRPC on port \d+/, 120_000);
  await waitFor(async () => (await status(ports.readyPort, '/healthz/ready')) === 200, { timeoutMs: 30_000, what: 'controller ready' });

  // Both the single-process gateway and the default one (a primary and its listener workers).
  for (const workers of ['1', 'auto']) {
    const gateway = await runToEnd(['gateway', '--config', file, '--workers', workers]);
    t.is(gateway.code, 1, `--workers ${workers}: ${gateway.output}`);
    assertPortConflict(t, gateway.output, 'observability.readyPort', '--ready-port', ports.readyPort, file);
    t.is(gatewayKeys(etcd), '', `--workers ${workers}: no gateway registered (it used to stay listed until its lease expired)`);
  }
  t.is(await status(ports.readyPort, '/healthz/ready'), 200, 'the controller still answers on its port');

  // The way out the message names: --ready-port and --metrics-port.
  const [readyPort, metricsPort] = await freePorts(2);
  const gateway = causeway(['gateway', '--config', file, '--workers', '1', '--ready-port', String(readyPort), '--metrics-port', String(metricsPort)]);
  t.teardown(() => gateway.kill());
  await gateway.waitForOutput(`(ready :${readyPort}, metrics :${metricsPort})`, 120_000);
  await waitFor(() => gatewayKeys(etcd) !== '', { timeoutMs: 15_000, what: 'gateway registered' });
  await waitFor(async () => (await status(readyPort!, '/healthz/ready')) === 200, { timeoutMs: 30_000, what: 'gateway ready on --ready-port' });
  t.is(await status(metricsPort!, '/metrics'), 200);
  t.is(await gateway.stop(15_000), 0);
  t.is(await controller.stop(15_000), 0);
});

test.serial('regression: a controller started after a gateway that holds observability.readyPort exits 1 naming it, and does not publish itself in /causeway/v1/cluster', async (t) => {
  const etcd = await freshEtcd(t);
  const { file, ports } = await clusterConfig(t, etcd, 'gateway-first');
  const gateway = causeway(['gateway', '--config', file, '--workers', '1']);
  t.teardown(() => gateway.kill());
  await gateway.waitForOutput(/gateway listening on port \d+/, 120_000);

  const controller = await runToEnd(['controller', '--config', file]);
  t.is(controller.code, 1, controller.output);
  assertPortConflict(t, controller.output, 'observability.readyPort', '--ready-port', ports.readyPort, file);
  const record = etcd.etcdctl(['get', EtcdKeys.cluster, '--print-value-only']).trim();
  t.false(record.includes(`"port":${ports.grpcPort}`), `no controller address in the cluster record: ${record}`);
  t.is(await gateway.stop(15_000), 0);
});

test.serial('a controller whose controller.grpcPort is taken exits 1 naming it, and does not publish itself in /causeway/v1/cluster', async (t) => {
  const etcd = await freshEtcd(t);
  const { file, ports } = await clusterConfig(t, etcd, 'grpc-port-taken');
  await occupy(t, ports.grpcPort);
  const controller = await runToEnd(['controller', '--config', file]);
  t.is(controller.code, 1, controller.output);
  t.regex(
    controller.output,
    new RegExp(`^causeway: error: controller\\.grpcPort: 127\\.0\\.0\\.1:${ports.grpcPort} is already in use \\(another Causeway component on this host\\?\\); set a free port with controller\\.grpcPort in ${escape(file)} \\[CW_LISTEN_ADDRESS_IN_USE\\]$`, 'm'),
  );
  t.notRegex(controller.output, /^\s+at /m);
  const record = etcd.etcdctl(['get', EtcdKeys.cluster, '--print-value-only']).trim();
  t.false(record.includes(`"port":${ports.grpcPort}`), `no controller address in the cluster record: ${record}`);
});

test.serial('regression: a gateway whose data port is taken exits 1 naming gateway.port and --port, with nothing registered', async (t) => {
  const etcd = await freshEtcd(t);
  const { file, ports } = await clusterConfig(t, etcd, 'data-port-taken');
  await occupy(t, ports.gatewayPort);
  for (const workers of ['1', '2']) {
    const gateway = await runToEnd(['gateway', '--config', file, '--workers', workers]);
    t.is(gateway.code, 1, `--workers ${workers}: ${gateway.output}`);
    assertPortConflict(t, gateway.output, 'gateway.port', '--port', ports.gatewayPort, file);
    t.is(gatewayKeys(etcd), '');
  }
});

test.serial('--ready-port and --metrics-port move the controller and a sidecar off the ports their config files name', async (t) => {
  const etcd = await freshEtcd(t);
  const { file, ports } = await clusterConfig(t, etcd, 'controller-flags');
  // The config's ports are taken: only the flags let these start at all.
  await occupy(t, ports.readyPort);
  await occupy(t, ports.metricsPort);
  const [controllerReady, controllerMetrics, sidecarReady, sidecarMetrics, dnsPort] = await freePorts(5);
  const controller = causeway(['controller', '--config', file, '--ready-port', String(controllerReady), '--metrics-port', String(controllerMetrics)]);
  t.teardown(() => controller.kill());
  await controller.waitForOutput(`(ready :${controllerReady}, metrics :${controllerMetrics}`, 120_000);
  await waitFor(async () => (await status(controllerReady!, '/healthz/ready')) === 200, { timeoutMs: 30_000, what: 'controller ready on --ready-port' });
  t.regex(await (await fetch(`http://127.0.0.1:${controllerMetrics}/metrics`)).text(), /component="controller"/);

  const { root, east } = await meshPki();
  const token = join(dir, 'reviews.token');
  const issued = await runToEnd(['ca', 'token', '--ca', east, '--ns', 'default', '--sa', 'reviews', '--out', token]);
  t.is(issued.code, 0, issued.output);
  const workload = join(dir, 'reviews-sidecar.yaml');
  writeFileSync(
    workload,
    stringify({
      cluster: 'east',
      locality: { region: 'eu', zone: 'eu-1' },
      namespace: 'default',
      service: 'reviews',
      serviceAccount: 'reviews',
      controller: { address: `127.0.0.1:${ports.grpcPort}` },
      advertiseAddress: '127.0.0.1',
      inboundPort: 0,
      dnsPort,
      stateDir: join(dir, 'reviews-state'),
      joinTokenFile: token,
      trustBundleFile: join(root, 'trust-bundle.pem'),
      // The same ports as the cluster config: taken on this host.
      observability: { host: '127.0.0.1', readyPort: ports.readyPort, metricsPort: ports.metricsPort },
      sidecar: { inboundHost: '127.0.0.1', outboundRange: 'auto', dns: { outside: 'refuse' } },
    }),
  );
  // Its DNS port taken (after the certificate bootstrap): exit 1 naming dnsPort, not a bare EADDRINUSE.
  const dnsBlocker = createServer();
  await new Promise<void>((resolve) => dnsBlocker.listen(dnsPort, '127.0.0.1', () => resolve()));
  const refused = await runToEnd(['sidecar', '--config', workload, '--ready-port', '0', '--metrics-port', '0']);
  await new Promise<void>((resolve) => dnsBlocker.close(() => resolve()));
  t.is(refused.code, 1, refused.output);
  t.regex(refused.output, new RegExp(`^causeway: error: dnsPort: 127\\.0\\.0\\.1:${dnsPort} is already in use .*; set a free port with dnsPort in ${escape(workload)} \\[CW_LISTEN_ADDRESS_IN_USE\\]$`, 'm'));

  const sidecar = causeway(['sidecar', '--config', workload, '--ready-port', String(sidecarReady), '--metrics-port', String(sidecarMetrics)]);
  t.teardown(() => sidecar.kill());
  await sidecar.waitForOutput(`ready :${sidecarReady} metrics :${sidecarMetrics}`, 120_000);
  await waitFor(async () => (await status(sidecarReady!, '/healthz/ready')) === 200, { timeoutMs: 30_000, what: 'sidecar ready on --ready-port' });
  t.regex(await (await fetch(`http://127.0.0.1:${sidecarMetrics}/metrics`)).text(), /component="sidecar"/);
  t.is(await sidecar.stop(15_000), 0);
  t.is(await controller.stop(15_000), 0);
});

test.serial('--ready-port and --metrics-port move causeway federation off the ports its config names', async (t) => {
  const etcd = await freshEtcd(t);
  const { file, ports } = await clusterConfig(t, etcd, 'federation-flags');
  await occupy(t, ports.readyPort);
  await occupy(t, ports.metricsPort);
  // Without the flags, the first port in use stops it before it writes anything.
  const refused = await runToEnd(['federation', '--config', file, '--heartbeat']);
  t.is(refused.code, 1, refused.output);
  assertPortConflict(t, refused.output, 'observability.readyPort', '--ready-port', ports.readyPort, file);
  t.is(etcd.etcdctl(['get', EtcdKeys.heartbeat, '--keys-only']).trim(), '', 'no heartbeat published');

  const [readyPort, metricsPort] = await freePorts(2);
  const federation = causeway(['federation', '--config', file, '--ready-port', String(readyPort), '--metrics-port', String(metricsPort)]);
  t.teardown(() => federation.kill());
  await waitFor(async () => (await status(readyPort!, '/healthz/ready')) === 200, { timeoutMs: 120_000, what: 'federation ready on --ready-port' });
  t.regex(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text(), /component="federation"/);
  t.is(await status(readyPort!, '/metrics'), 404, 'separate ports serve separate things');
  t.is(await federation.stop(15_000), 0);
});

test('a port flag that is not a port is a usage error (exit 2) on every long-running command', async (t) => {
  for (const [command, flag] of [
    ['controller', '--ready-port'],
    ['federation', '--metrics-port'],
    ['sidecar', '--ready-port'],
    ['gateway', '--metrics-port'],
  ] as const) {
    const result = await runToEnd([command, '--config', join(dir, 'missing.yaml'), flag, '70000']);
    t.is(result.code, 2, `${command}: ${result.output}`);
    t.regex(result.output, new RegExp(`causeway: error: ${flag} must be a port number 0-65535 \\(got "70000"\\)`));
  }
});

test.serial('regression: a second gateway on the same data port fails naming gateway.port instead of sharing it through SO_REUSEPORT', async (t) => {
  const etcd = await freshEtcd(t);
  const { file, ports } = await clusterConfig(t, etcd, 'two-gateways');
  const [readyA, metricsA, readyB, metricsB] = await freePorts(4);
  const first = causeway(['gateway', '--config', file, '--workers', '2', '--id', 'gw-a', '--ready-port', String(readyA), '--metrics-port', String(metricsA)]);
  t.teardown(() => first.kill());
  await first.waitForOutput(/gateway listening on port \d+/, 120_000);
  const second = await runToEnd(['gateway', '--config', file, '--workers', '2', '--id', 'gw-b', '--ready-port', String(readyB), '--metrics-port', String(metricsB)]);
  t.is(second.code, 1, second.output);
  assertPortConflict(t, second.output, 'gateway.port', '--port', ports.gatewayPort, file);
  t.notRegex(gatewayKeys(etcd), /gw-b/, 'the refused gateway registered nothing');
  t.is(await first.stop(15_000), 0);
});
