import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { Registry } from 'prom-client';
import {
  CATALOG_SCHEMA_VERSION,
  EtcdKeys,
  ExportedService,
  ImportedService,
  LinkStatus,
  decodeCatalogValue,
  encodeCatalogValue,
  parseConfig,
  type ClusterConfig,
  type EtcdConnection,
  type FederationConfig,
  type LinkConfig,
  type ServicePort,
} from '../../mesh/index.js';
import { connectFederationStore, Federation, HeartbeatPublisher, publishExportedCluster } from '../../federation/index.js';
import type { EtcdStore } from '../../store/index.js';
import { startEtcd, startProcess, waitFor, type EtcdServer, type ManagedProcess } from '../../testkit/index.js';

/** Short federation timings so the suite stays fast; the semantics are the defaults'. */
export const timings: FederationConfig = { heartbeatIntervalMs: 250, staleAfterMs: 2000, expireAfterMs: 5000, initialSyncTimeoutMs: 3000 };

export interface TestCluster {
  readonly name: string;
  readonly etcd: EtcdServer;
  readonly connection: EtcdConnection;
  /** A root client on this cluster's etcd (what its controller would hold). */
  readonly store: EtcdStore;
}

export function connectionTo(endpoints: string[], tls?: { caFile: string; certFile: string; keyFile: string }): EtcdConnection {
  return { endpoints, dialTimeoutMs: 2000, ...(tls ? { tls: { ca: tls.caFile, cert: tls.certFile, key: tls.keyFile } } : {}) };
}

export async function startCluster(t: ExecutionContext, name: string, options: { tls?: boolean } = {}): Promise<TestCluster> {
  // The teardown is registered before the start finishes: tests start clusters with
  // Promise.all, and when one fails to start the test ends at once — a sibling still
  // starting must be destroyed when it comes up, not left running (a live etcd keeps the
  // test worker from exiting, and the whole run hangs).
  const starting = startEtcd({ name: `etcd-${name}`, tls: options.tls ?? false });
  t.teardown(async () => (await starting.catch(() => undefined))?.destroy());
  const etcd = await starting;
  const connection = connectionTo(etcd.endpoints, etcd.rootClient);
  const store = connectFederationStore(connection);
  t.teardown(() => store.close());
  return { name, etcd, connection, store };
}

/** Plays the peer controller's part: exports/_cluster plus a heartbeat on a lease. */
export async function publishPeer(t: ExecutionContext, cluster: TestCluster, options: { region?: string; heartbeat?: boolean } = {}): Promise<HeartbeatPublisher | undefined> {
  await publishExportedCluster(cluster.store, {
    name: cluster.name,
    locality: { region: options.region ?? `region-${cluster.name}`, zone: 'z1' },
    network: `net-${cluster.name}`,
    trustDomain: 'causeway.internal',
    gateways: [{ address: '127.0.0.1', port: 15443 }],
  });
  if (options.heartbeat === false) return undefined;
  const publisher = new HeartbeatPublisher({ cluster: cluster.name, store: cluster.store, intervalMs: timings.heartbeatIntervalMs });
  await publisher.start();
  t.teardown(() => publisher.stop({ revoke: false }).catch(() => undefined));
  return publisher;
}

export { exportedService } from '../../testkit/catalog.js';

export async function exportService(cluster: TestCluster, value: ExportedService): Promise<void> {
  const key = EtcdKeys.exportedService(value.service.namespace, value.service.name);
  await cluster.store.commit([{ put: key, value: encodeCatalogValue(ExportedService, key, value) }]);
}

export async function unexportService(cluster: TestCluster, ns: string, name: string): Promise<void> {
  await cluster.store.commit([{ delete: EtcdKeys.exportedService(ns, name) }]);
}

export async function readImport(cluster: TestCluster, peer: string, ns: string, name: string): Promise<ImportedService | undefined> {
  const key = EtcdKeys.importedService(peer, ns, name);
  const kv = await cluster.store.get(key);
  if (!kv) return undefined;
  const decoded = decodeCatalogValue(ImportedService, key, kv.value);
  if (!decoded.ok) throw decoded.error;
  return decoded.value;
}

/** Waits until `cluster` holds a fresh (not stale) import of `<name>.<ns>` from `peer`, and returns it. */
export function waitForFreshImport(cluster: TestCluster, peer: string, ns: string, name: string, what: string, timeoutMs = 20_000): Promise<ImportedService> {
  return waitFor(async () => {
    const imp = await readImport(cluster, peer, ns, name);
    return imp && !imp.stale ? imp : undefined;
  }, { timeoutMs, what });
}

export async function readLinkStatus(cluster: TestCluster, peer: string): Promise<LinkStatus | undefined> {
  const key = EtcdKeys.linkStatus(peer);
  const kv = await cluster.store.get(key);
  if (!kv) return undefined;
  const decoded = decodeCatalogValue(LinkStatus, key, kv.value);
  if (!decoded.ok) throw decoded.error;
  return decoded.value;
}

export async function startFederation(
  t: ExecutionContext,
  local: TestCluster,
  links: LinkConfig[],
  settings: FederationConfig = timings,
): Promise<{ federation: Federation; registry: Registry }> {
  const registry = new Registry();
  const federation = new Federation({ cluster: local.name, local: local.connection, links, settings, registry });
  t.teardown(() => federation.stop());
  await federation.start();
  return { federation, registry };
}

export function linkTo(peer: TestCluster, endpoints = peer.etcd.endpoints): LinkConfig {
  return { peer: peer.name, etcd: connectionTo(endpoints, peer.etcd.rootClient) };
}

/** The value of one metric sample, or undefined. */
export async function metricValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = registry.getSingleMetric(name);
  if (!metric) return undefined;
  const data = await metric.get();
  const sample = data.values.find((v) => Object.entries(labels).every(([k, val]) => String((v.labels as Record<string, unknown>)[k]) === val));
  return sample?.value;
}

const bin = fileURLToPath(new URL('../../bin/causeway.js', import.meta.url));

/** Runs the real `causeway` command (bin/causeway.js) and collects its output. */
export function causeway(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 90_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Spawns `causeway` as a long-running process. */
export function startCauseway(args: string[]): ManagedProcess {
  return startProcess(process.execPath, [bin, ...args], { name: `causeway ${args[0] ?? ''}` });
}

/** The cluster config `causeway status` would read for `local` linked to `peers`. */
export function clusterConfig(local: TestCluster, peers: TestCluster[]): ClusterConfig {
  return parseConfig('cluster', {
    cluster: { name: local.name, locality: { region: `region-${local.name}`, zone: 'z1' } },
    etcd: { endpoints: local.etcd.endpoints },
    links: peers.map((p) => ({ peer: p.name, etcd: { endpoints: p.etcd.endpoints } })),
    federation: timings,
  });
}
