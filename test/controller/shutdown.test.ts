import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClusterInfo, EtcdKeys, decodeCatalogValue } from '../../mesh/index.js';
import { startEtcd, type EtcdServer } from '../fixtures/etcd.js';
import { createMeshPki } from '../fixtures/mesh-pki.js';
import { freePorts, waitFor } from '../fixtures/ports.js';
import { exitWithin, startProcess, type ManagedProcess } from '../fixtures/processes.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A cluster config for one controller process on `etcd`, in a temp dir removed after the test. */
async function controllerConfig(t: import('ava').ExecutionContext, etcd: EtcdServer, extra: string[] = []): Promise<{ file: string; grpcPort: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'cw-ctrl-stop-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const pki = await createMeshPki(join(dir, 'pki'));
  const east = await pki.cluster('east');
  const [grpcPort, readyPort] = (await freePorts(2)) as [number, number];
  const file = join(dir, 'cluster.yaml');
  await writeFile(
    file,
    [
      'cluster: { name: east, locality: { region: eu, zone: eu-1 } }',
      `etcd: { endpoints: [${etcd.clientUrl}], dialTimeoutMs: 2000 }`,
      `controller: { host: 127.0.0.1, grpcPort: ${grpcPort}, caDir: ${east.caDir}${extra.length ? `, ${extra.join(', ')}` : ''} }`,
      `observability: { host: 127.0.0.1, readyPort: ${readyPort}, metricsPort: ${readyPort} }`,
    ].join('\n'),
  );
  return { file, grpcPort };
}

/** `causeway controller` as users start it (bin/causeway.js → the controller bundle), info logs on. */
function startController(t: import('ava').ExecutionContext, file: string, args: string[] = []): ManagedProcess {
  const proc = startProcess(process.execPath, [join(ROOT, 'bin/causeway.js'), 'controller', '--config', file, ...args], {
    cwd: ROOT,
    name: 'controller',
    env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' },
  });
  t.teardown(() => proc.kill());
  return proc;
}

function listedControllers(etcd: EtcdServer): string[] {
  const text = etcd.etcdctl(['get', EtcdKeys.cluster, '--print-value-only']).trim();
  if (text === '') return [];
  const decoded = decodeCatalogValue(ClusterInfo, EtcdKeys.cluster, text);
  return decoded.ok ? decoded.value.controllers.map((c) => `${c.address}:${c.port}`) : [];
}

test('regression "controller still running 18 s after SIGTERM when its etcd had died": it exits within its drain timeout', async (t) => {
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const { file } = await controllerConfig(t, etcd);
  const drainTimeoutMs = 6000;
  const proc = startController(t, file, ['--drain-timeout', String(drainTimeoutMs)]);
  await proc.waitForOutput(/serving gRPC on port \d+/, 60_000);

  await etcd.kill();
  // Let the etcd client notice: its channels are broken and retrying, as in the report.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const asked = Date.now();
  proc.child.kill('SIGTERM');
  const { code, timedOut } = await exitWithin(proc, drainTimeoutMs + 3000, 1000);
  const tookMs = Date.now() - asked;
  t.false(timedOut, `still running ${tookMs} ms after SIGTERM; output:\n${proc.output().slice(-3000)}`);
  t.true(code === 0 || code === 1, `exit code ${String(code)}: 0 (stopped) or 1 (forced out at the drain deadline)`);
  t.true(tookMs <= drainTimeoutMs + 1500, `took ${tookMs} ms (drain timeout ${drainTimeoutMs} ms)`);
  if (code === 1) t.regex(proc.output(), /did not stop within 6000 ms; exiting with .+ still open/);
  t.log(`exited ${String(code)} after ${tookMs} ms`);
});
