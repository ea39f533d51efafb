import test from 'ava';
import { Controller } from '../../controller/index.js';
import { CATALOG_SCHEMA_VERSION, EtcdKeys, Heartbeat, decodeCatalogValue, parseConfig } from '../../mesh/index.js';
import { waitFor } from '../../testkit/ports.js';
import { startExportStore } from '../federation/export-store-fixture.js';
import { controllerWorld, reviews } from './harness.js';

const REVIEWS = EtcdKeys.exportedService('default', 'reviews');

test('with exportStore the controller bootstraps its auth, projects _cluster, the exports and _heartbeat into it (none in the main etcd), removes what it did not write, and reconciles on restart', async (t) => {
  const world = await controllerWorld(t);
  const exportStore = await startExportStore(t, 'east'); // auth off, as `federation init` leaves it
  // A cluster upgraded from the layout where peers read the main etcd.
  await world.store.put(EtcdKeys.exportedService('default', 'legacy'), '{"left":"by the old layout"}');
  await world.admin.applyService({ ...reviews, exported: true });
  await world.admin.applyService({ ...reviews, name: 'ratings', exported: false });

  const config = parseConfig('cluster', { ...structuredClone(world.config()), exportStore: exportStore.config });
  const east = await world.pki.cluster('east');
  const startController = async () => {
    const controller = new Controller({ config, intermediate: east.ca, exportStoreSweepIntervalMs: 300 });
    t.teardown(() => controller.stop());
    await controller.start();
    return controller;
  };
  let controller = await startController();

  await waitFor(async () => (await exportStore.root.get(REVIEWS)) !== undefined, { what: 'reviews exported into the export store' });
  t.true(await exportStore.root.authEnabled(), 'the controller turned auth on in the export store');
  t.truthy(await exportStore.root.get(EtcdKeys.exportedCluster));
  const beat = await waitFor(async () => exportStore.root.get(EtcdKeys.heartbeat), { what: 'heartbeat in the export store' });
  const decoded = decodeCatalogValue(Heartbeat, EtcdKeys.heartbeat, beat.value);
  t.true(decoded.ok && decoded.value.cluster === 'east');
  t.not(beat.lease, '0', 'the heartbeat is on a lease');
  await waitFor(async () => (await world.store.list(EtcdKeys.exportsPrefix)).entries.length === 0, { what: 'the main etcd holds no exports (the old layout removed once)' });
  t.is(await exportStore.root.get(EtcdKeys.exportedService('default', 'ratings')), undefined, 'not exported, not projected');

  // Anything planted there that no controller wrote goes: inside exports/ (unknown key,
  // invalid value, an export of a service this cluster does not export) and outside.
  await exportStore.root.put(`${EtcdKeys.exportsPrefix}planted`, '{}');
  await exportStore.root.put(EtcdKeys.exportedService('default', 'ratings'), '{"not":"valid"}');
  await exportStore.root.put('/causeway/v1/endpoints/default/reviews/evil', '{}');
  await exportStore.root.put('outside/anything', 'x');
  await waitFor(async () => (await exportStore.root.listAllKeys()).every((k) => k.startsWith(EtcdKeys.exportsPrefix) && k !== `${EtcdKeys.exportsPrefix}planted`), {
    what: 'planted keys removed',
    timeoutMs: 10_000,
  });
  await waitFor(async () => (await exportStore.root.get(EtcdKeys.exportedService('default', 'ratings'))) === undefined, { what: 'invalid export removed' });
  t.truthy(await exportStore.root.get(REVIEWS), 'what it wrote stays');

  // _links is the cluster's federation's: its own stays, another cluster's goes like a stray.
  const links = (cluster: string) => JSON.stringify({ schema: CATALOG_SCHEMA_VERSION, cluster, reportedAt: new Date().toISOString(), links: [{ peer: 'south', state: 'synced', imports: 1, conflicts: 0 }] });
  await exportStore.root.put(EtcdKeys.reportedLinks, links('west'));
  await waitFor(async () => (await exportStore.root.get(EtcdKeys.reportedLinks)) === undefined, { what: "another cluster's _links removed" });
  await exportStore.root.put(EtcdKeys.reportedLinks, links('east'));

  // Unexporting removes the export from the export store.
  await world.admin.setExported('reviews', 'default', false);
  await waitFor(async () => (await exportStore.root.get(REVIEWS)) === undefined, { what: 'unexported reviews removed from the export store' });
  t.truthy(await exportStore.root.get(EtcdKeys.reportedLinks), "this cluster's own _links stays through the passes since");

  // While it is down, the export store drifts; a restart reconciles it.
  await controller.stop();
  await world.admin.setExported('ratings', 'default', true);
  await exportStore.root.put(EtcdKeys.exportedService('default', 'ghost'), JSON.stringify({ schema: CATALOG_SCHEMA_VERSION, planted: true }));
  await exportStore.root.put('/elsewhere', 'x');
  await exportStore.root.delete(EtcdKeys.exportedCluster);
  controller = await startController();
  await waitFor(async () => (await exportStore.root.get(EtcdKeys.exportedService('default', 'ratings'))) !== undefined, { what: 'ratings exported after the restart' });
  await waitFor(async () => (await exportStore.root.get(EtcdKeys.exportedService('default', 'ghost'))) === undefined, { what: 'ghost removed after the restart' });
  await waitFor(async () => (await exportStore.root.get(EtcdKeys.exportedCluster)) !== undefined, { what: '_cluster back' });
  t.deepEqual((await exportStore.root.listAllKeys()).filter((k) => !k.startsWith(EtcdKeys.exportsPrefix)), []);
  t.is((await world.store.list(EtcdKeys.exportsPrefix)).entries.length, 0);
});
