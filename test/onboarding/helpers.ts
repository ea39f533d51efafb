import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { IntermediateCa } from '../../ca/index.js';
import { WorkloadGroups, writeWorkloadBundle, type WorkloadBundle } from '../../controller/index.js';
import type { EtcdStore } from '../../store/index.js';
import { Endpoint, EtcdKeys, decodeCatalogValue, type ClusterConfig, type WorkloadGroup } from '../../mesh/index.js';
import { freePort } from '../../testkit/ports.js';
import { startProcess, type ManagedProcess } from '../../testkit/processes.js';

export const TD = 'causeway.internal';
export const spiffe = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CAUSEWAY = join(ROOT, 'bin', 'causeway.js');

/** The group most tests onboard: an HTTP app on 8080 served as `web.default` by service account `web-vm`. */
export function webGroup(overrides: Partial<WorkloadGroup> = {}): WorkloadGroup {
  return {
    schema: 1,
    name: 'web-vms',
    namespace: 'default',
    service: 'web',
    serviceAccount: 'web-vm',
    labels: { version: 'v1' },
    ports: [{ name: 'http', port: 8080, protocol: 'http' }],
    ...overrides,
  };
}

/**
 * Writes the bundle as `causeway workload bundle` would, with the host's install dir being
 * the bundle dir itself (no root needed), then adds only what a shared test machine needs
 * to the generated sidecar.yaml: free ports, loopback binds, an `auto` outbound range.
 */
export async function hostBundle(options: {
  cluster: ClusterConfig;
  ca: IntermediateCa;
  group: WorkloadGroup;
  dir: string;
  controllerAddress: string;
  viaGateway: boolean;
  appPort: number;
  ttlSeconds?: number;
  now?: Date;
  address?: string;
  pkcs12?: boolean;
}): Promise<{ bundle: WorkloadBundle; dnsPort: number }> {
  const bundle = await writeWorkloadBundle({
    cluster: options.cluster,
    group: options.group,
    ca: options.ca,
    controllerAddress: options.controllerAddress,
    viaGateway: options.viaGateway,
    address: options.address ?? '127.0.0.1',
    outDir: options.dir,
    installDir: options.dir,
    stateDir: join(options.dir, 'state'),
    ...(options.ttlSeconds !== undefined ? { ttlSeconds: options.ttlSeconds } : {}),
    ...(options.now ? { now: options.now } : {}),
    ...(options.pkcs12 ? { pkcs12: true } : {}),
  });
  const dnsPort = await freePort();
  editConfig(bundle.files.config, (c) => ({
    ...c,
    // The app listens on an ephemeral port; the mesh port stays the group's.
    ports: (c.ports as { name: string; port: number }[]).map((p) => ({ ...p, targetPort: options.appPort })),
    probe: { tcp: { port: options.appPort } },
    inboundPort: 0,
    dnsPort,
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
    sidecar: { ...(c.sidecar as object | undefined), inboundHost: '127.0.0.1', outboundRange: 'auto', dns: { outside: 'refuse' }, probeIntervalMs: 300 },
  }));
  return { bundle, dnsPort };
}

export function editConfig(file: string, edit: (config: Record<string, unknown>) => Record<string, unknown>): void {
  const config = parseYaml(readFileSync(file, 'utf8')) as Record<string, unknown>;
  writeFileSync(file, stringifyYaml(edit(config)));
}

/** `causeway sidecar --config <bundle>/sidecar.yaml` as a real process, as the systemd unit runs it. */
export function startHost(bundle: WorkloadBundle, name = 'host'): ManagedProcess {
  return startProcess(process.execPath, [CAUSEWAY, 'sidecar', '--config', bundle.files.config], {
    name,
    env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' },
  });
}

/** Runs the causeway CLI to completion. */
export async function cli(args: string[]): Promise<{ code: number | NodeJS.Signals | null; output: string }> {
  const p = startProcess(process.execPath, [CAUSEWAY, ...args], { name: `causeway ${args.slice(0, 3).join(' ')}` });
  const code = await p.exited;
  return { code, output: p.output() };
}

export async function endpointOf(store: EtcdStore, ns: string, service: string, id: string): Promise<Endpoint | undefined> {
  const key = EtcdKeys.endpoint(ns, service, id);
  const kv = await store.get(key);
  if (!kv) return undefined;
  const decoded = decodeCatalogValue(Endpoint, key, kv.value);
  return decoded.ok ? decoded.value : undefined;
}

export async function applyGroup(store: EtcdStore, group: WorkloadGroup, exportService = false) {
  return new WorkloadGroups(store, TD).apply(group, { exportService });
}
