import type { ExecutionContext } from 'ava';
import { CATALOG_SCHEMA_VERSION, Endpoint, EtcdKeys, ServiceSpec, TrafficPolicy, encodeCatalogValue, parseConfig, type ClusterConfig, type FederationConfig } from '../../mesh/index.js';
import { exportService, exportedService, linkTo, publishPeer, startCluster, startFederation, timings, type TestCluster } from '../federation/helpers.js';

/**
 * Short staleness (the semantics are the defaults'), yet long enough that a live peer's
 * 250 ms heartbeats never miss it on a loaded machine; expiry far away so a stale link
 * stays stale however slow the machine.
 */
export const viewTimings: FederationConfig = { ...timings, staleAfterMs: 4000, expireAfterMs: 120_000, initialSyncTimeoutMs: 30_000 };

export interface ThreeClusters {
  readonly a: TestCluster;
  readonly b: TestCluster;
  readonly c: TestCluster;
  /** a's cluster config: the one `causeway ui` and `status --all` read. */
  readonly config: ClusterConfig;
}

/**
 * Three real etcds: b and c publish heartbeats and exports like their controllers would,
 * a runs a real federation linked to both and serves `productpage` (exported, subsets v1
 * and v2, a 90/10 split) itself. Everything is torn down with the test.
 */
export async function startThreeClusters(t: ExecutionContext): Promise<ThreeClusters> {
  const [a, b, c] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b'), startCluster(t, 'c')]);
  await Promise.all([publishPeer(t, b), publishPeer(t, c)]);
  await exportService(b, exportedService('default', 'reviews', { healthy: 2 }));
  await exportService(c, exportedService('default', 'reviews', { healthy: 1 }));
  await exportService(c, exportedService('default', 'ratings'));

  const spec = ServiceSpec.parse({
    schema: CATALOG_SCHEMA_VERSION,
    name: 'productpage',
    namespace: 'default',
    ports: [{ name: 'http', port: 9080, protocol: 'http' }],
    serviceAccounts: ['spiffe://causeway.internal/ns/default/sa/productpage'],
    exported: true,
    subsets: { v1: { version: 'v1' }, v2: { version: 'v2' } },
  });
  const endpoint = (id: string, health: 'healthy' | 'unhealthy', version: string) =>
    Endpoint.parse({
      schema: CATALOG_SCHEMA_VERSION,
      id,
      service: 'productpage',
      namespace: 'default',
      cluster: 'a',
      address: '127.0.0.1',
      inboundPort: 15006,
      labels: { version },
      locality: { region: 'region-a', zone: 'z1' },
      identity: 'spiffe://causeway.internal/ns/default/sa/productpage',
      health,
    });
  const split = TrafficPolicy.parse({ schema: CATALOG_SCHEMA_VERSION, name: 'canary', namespace: 'default', service: 'productpage', split: [{ subset: 'v1', weight: 90 }, { subset: 'v2', weight: 10 }] });
  await a.store.commit([
    { put: EtcdKeys.service('default', 'productpage'), value: encodeCatalogValue(ServiceSpec, EtcdKeys.service('default', 'productpage'), spec) },
    { put: EtcdKeys.endpoint('default', 'productpage', 'pp-1'), value: encodeCatalogValue(Endpoint, EtcdKeys.endpoint('default', 'productpage', 'pp-1'), endpoint('pp-1', 'healthy', 'v1')) },
    { put: EtcdKeys.endpoint('default', 'productpage', 'pp-2'), value: encodeCatalogValue(Endpoint, EtcdKeys.endpoint('default', 'productpage', 'pp-2'), endpoint('pp-2', 'unhealthy', 'v2')) },
    { put: EtcdKeys.policy('traffic', 'default', 'canary'), value: encodeCatalogValue(TrafficPolicy, EtcdKeys.policy('traffic', 'default', 'canary'), split) },
  ]);

  const { federation } = await startFederation(t, a, [linkTo(b), linkTo(c)], viewTimings);
  const readiness = await federation.whenReady();
  if (!readiness.ready) throw new Error(`a's federation not ready: ${JSON.stringify(readiness)}`);
  const config = parseConfig('cluster', {
    cluster: { name: 'a', locality: { region: 'region-a', zone: 'z1' } },
    etcd: { endpoints: a.etcd.endpoints },
    links: [b, c].map((p) => ({ peer: p.name, etcd: { endpoints: p.etcd.endpoints } })),
    federation: viewTimings,
  });
  return { a, b, c, config };
}
