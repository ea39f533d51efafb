import type { ExecutionContext } from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClusterInfo, ControllerRegistration, EtcdKeys, decodeCatalogValue } from '../../mesh/index.js';
import type { EtcdServer } from '../../testkit/etcd.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { freePorts } from '../../testkit/ports.js';
import { startProcess, type ManagedProcess } from '../../testkit/processes.js';

/** Controllers as separate processes, started the way users start them, for lifecycle tests. */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * A cluster config for one controller process on `etcd`, in a temp dir removed after the
 * test; `extra` goes into its `controller:` section; `caDir` shares another config's CA;
 * `etcdEndpoint` reaches etcd another way (a fault proxy).
 */
export async function controllerConfig(t: ExecutionContext, etcd: EtcdServer, options: { extra?: string[]; caDir?: string; etcdEndpoint?: string } = {}): Promise<{ file: string; grpcPort: number; caDir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'cw-ctrl-proc-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const caDir = options.caDir ?? (await (await createMeshPki(join(dir, 'pki'))).cluster('east')).caDir;
  const extra = options.extra ?? [];
  const [grpcPort, readyPort] = (await freePorts(2)) as [number, number];
  const file = join(dir, 'cluster.yaml');
  await writeFile(
    file,
    [
      'cluster: { name: east, locality: { region: eu, zone: eu-1 } }',
      `etcd: { endpoints: [${options.etcdEndpoint ?? etcd.clientUrl}], dialTimeoutMs: 2000 }`,
      `controller: { host: 127.0.0.1, grpcPort: ${grpcPort}, caDir: ${caDir}${extra.length ? `, ${extra.join(', ')}` : ''} }`,
      `observability: { host: 127.0.0.1, readyPort: ${readyPort}, metricsPort: ${readyPort} }`,
    ].join('\n'),
  );
  return { file, grpcPort, caDir };
}

/** `causeway controller` as users start it (bin/causeway.js → the controller bundle), info logs on. */
export function startController(t: ExecutionContext, file: string, args: string[] = []): ManagedProcess {
  const proc = startProcess(process.execPath, [join(ROOT, 'bin/causeway.js'), 'controller', '--config', file, ...args], {
    cwd: ROOT,
    name: 'controller',
    env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' },
  });
  t.teardown(() => proc.kill());
  return proc;
}

/** `controllers` of the cluster record, as `address:port`. */
export function listedControllers(etcd: EtcdServer): string[] {
  const text = etcd.etcdctl(['get', EtcdKeys.cluster, '--print-value-only']).trim();
  if (text === '') return [];
  const decoded = decodeCatalogValue(ClusterInfo, EtcdKeys.cluster, text);
  return decoded.ok ? decoded.value.controllers.map((c) => `${c.address}:${c.port}`).sort() : [];
}

/** The live registrations under /causeway/v1/controllers/, as `address:port`. */
export function registeredControllers(etcd: EtcdServer): string[] {
  const lines = etcd.etcdctl(['get', '--prefix', EtcdKeys.controllersPrefix]).trim().split('\n').filter(Boolean);
  const out: string[] = [];
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const decoded = decodeCatalogValue(ControllerRegistration, lines[i]!, lines[i + 1]!);
    if (decoded.ok) out.push(`${decoded.value.address}:${decoded.value.port}`);
  }
  return out.sort();
}
