import test from 'ava';
import { Controller } from '../../controller/index.js';
import { Etcd3Store } from '../../store/index.js';
import { CATALOG_SCHEMA_VERSION, EtcdKeys, parseConfig } from '../../mesh/index.js';
import { startEtcd } from '../../testkit/etcd.js';
import { waitFor } from '../../testkit/ports.js';
import { controllerWorld, reviews, TD } from './harness.js';

test('with links in its config the controller hosts the federation: ready after the initial sync, imports reach snapshots', async (t) => {
  const world = await controllerWorld(t);
  const west = await startEtcd({ name: 'west' });
  t.teardown(() => west.destroy());
  const westStore = new Etcd3Store({ endpoints: west.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => westStore.close());
  const now = new Date().toISOString();
  await westStore.put(EtcdKeys.exportedCluster, JSON.stringify({ schema: CATALOG_SCHEMA_VERSION, name: 'west', locality: { region: 'us', zone: 'us-1' }, network: 'west-net', trustDomain: TD, gateways: [{ address: '10.9.0.1', port: 15443 }] }));
  await westStore.put(EtcdKeys.heartbeat, JSON.stringify({ schema: CATALOG_SCHEMA_VERSION, cluster: 'west', at: now }));
  await westStore.put(
    EtcdKeys.exportedService('default', 'reviews'),
    JSON.stringify({ schema: CATALOG_SCHEMA_VERSION, service: { schema: 1, ...reviews, ports: [{ name: 'http', port: 9080, protocol: 'http' }], exported: true, subsets: {} }, healthy: [{ locality: { region: 'us', zone: 'us-1' }, healthy: 2, total: 2 }], exportedAt: now }),
  );
  const base = world.config();
  const config = parseConfig('cluster', { ...structuredClone(base), links: [{ peer: 'west', etcd: { endpoints: west.endpoints } }] });
  const east = await world.pki.cluster('east');
  const controller = new Controller({ config, intermediate: east.ca });
  t.teardown(() => controller.stop());
  await controller.start();
  t.truthy(controller.federation);
  await waitFor(() => controller.readiness().ready, { what: 'ready after the link\'s initial sync' });
  const node = await world.discovery(controller, 'default/productpage');
  const target = await waitFor(() => node.snapshot?.services.find((s) => s.name === 'reviews')?.targets[0], { what: 'imported target' });
  t.like(target, { kind: 'gateway', cluster: 'west', address: '10.9.0.1', port: 15443, priority: 2, weight: 2, healthy: true });
});
