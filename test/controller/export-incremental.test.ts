import test, { type ExecutionContext } from 'ava';
import { endpointEntry, serviceName, writeCatalog, type CatalogShape } from '../../testkit/bulk-catalog.js';
import { Controller } from '../../controller/index.js';
import { EtcdKeys, ExportedService, decodeCatalogValue, parseConfig, parseEtcdKey, type HealthState } from '../../mesh/index.js';
import type { EtcdStore } from '../../store/index.js';
import { waitFor } from '../../testkit/ports.js';
import { startExportStore } from '../federation/export-store-fixture.js';
import { controllerWorld, TD, type ControllerWorld } from './harness.js';

const SHAPE: CatalogShape = { cluster: 'east', region: 'eu', trustDomain: TD, services: 100, endpointsPerService: 3 };
const exportKey = (s: number) => EtcdKeys.exportedService('bench', serviceName(s));

/** Every write of an exported service's key, in order, from now on (a real etcd watch). */
async function exportWrites(t: ExecutionContext, store: EtcdStore): Promise<string[]> {
  const { revision } = await store.list(EtcdKeys.exportsPrefix, { pageSize: 1 });
  const seen: string[] = [];
  const watch = store.watchPrefix(EtcdKeys.exportsPrefix, String(BigInt(revision) + 1n), {
    onBatch: ({ events }) => {
      for (const e of events) if (parseEtcdKey(e.key).kind === 'exported-service') seen.push(e.key);
    },
    onCompacted: () => t.fail('export watch compacted'),
    onBroken: (error) => t.fail(`export watch broke: ${error.message}`),
  });
  t.teardown(() => watch.close());
  return seen;
}

async function healthyOf(store: EtcdStore, s: number): Promise<number | undefined> {
  const stored = await store.get(exportKey(s));
  if (!stored) return undefined;
  const decoded = decodeCatalogValue(ExportedService, exportKey(s), stored.value);
  return decoded.ok ? decoded.value.healthy.reduce((sum, c) => sum + c.healthy, 0) : undefined;
}

/** A catalog of SHAPE.services exported services × SHAPE.endpointsPerService healthy endpoints; returns how to flip one endpoint. */
async function catalog(world: ControllerWorld) {
  const lease = await world.store.grantLease(3600);
  await writeCatalog(world.store, SHAPE, lease);
  return (s: number, e: number, health: HealthState) => {
    const { key, value } = endpointEntry(SHAPE, s, e, health);
    return world.store.put(key, value, { lease });
  };
}

const allExported = (store: EtcdStore, healthy = SHAPE.endpointsPerService) =>
  waitFor(async () => (await store.list(EtcdKeys.exportsPrefix)).entries.filter((e) => parseEtcdKey(e.key).kind === 'exported-service').length === SHAPE.services && (await healthyOf(store, SHAPE.services - 1)) === healthy, {
    timeoutMs: 60_000,
    what: `all ${SHAPE.services} exports written`,
  });

/**
 * The absence of a write cannot be waited for; after the last expected write, this many
 * debounce windows (20 ms in the harness) pass before the writes are counted.
 */
const QUIET_MS = 1500;

type Flip = Awaited<ReturnType<typeof catalog>>;

/**
 * Marks one endpoint of svc-7, then one of svc-42, unhealthy, each waited for in `exports`;
 * svc-42's write comes after svc-7's echo was handled. Then lets QUIET_MS pass.
 */
async function twoChanges(flip: Flip, exports: EtcdStore): Promise<void> {
  for (const [s, e] of [[7, 0], [42, 1]] as const) {
    await flip(s, e, 'unhealthy');
    await waitFor(async () => (await healthyOf(exports, s)) === SHAPE.endpointsPerService - 1, { what: `svc-${s} exported with one endpoint fewer healthy` });
  }
  await new Promise((r) => setTimeout(r, QUIET_MS));
}

test('one endpoint change among many services rewrites only that service’s export, once; the echo of the write causes none', async (t) => {
  const world = await controllerWorld(t);
  const flip = await catalog(world);
  const controller = await world.startController({ healthChecks: { enabled: false } });
  await allExported(world.store);
  const untouched = new Map((await world.store.list(EtcdKeys.exportsPrefix)).entries.map((e) => [e.key, e.modRevision]));
  const writes = await exportWrites(t, world.store);
  const passesBefore = (await controller.metrics.exportPassServices.get()).values.find((v) => v.metricName?.endsWith('_count') && v.labels.kind === 'changed')?.value ?? 0;

  await twoChanges(flip, world.store);

  t.deepEqual(writes, [exportKey(7), exportKey(42)], 'one write per change, none for the echoes');
  for (const entry of (await world.store.list(EtcdKeys.exportsPrefix)).entries) {
    if (entry.key === exportKey(7) || entry.key === exportKey(42) || parseEtcdKey(entry.key).kind !== 'exported-service') continue;
    t.is(untouched.get(entry.key), entry.modRevision, `${entry.key} untouched`);
  }
  const passes = (await controller.metrics.exportPassServices.get()).values.filter((v) => v.labels.kind === 'changed');
  const count = passes.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
  const sum = passes.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0;
  t.true(count > passesBefore, 'incremental passes ran');
  t.true(sum < SHAPE.services, `incremental passes compared ${sum} services in all, not every service`);
});

test('a restarted controller reconciles every export: changes while it was down, an unexported service, an export of a service that is gone', async (t) => {
  const world = await controllerWorld(t);
  const flip = await catalog(world);
  let controller = await world.startController({ healthChecks: { enabled: false } });
  await allExported(world.store);
  await controller.stop();

  for (const s of [3, 50, 99]) await flip(s, 2, 'unhealthy');
  await world.admin.setExported(serviceName(10), 'bench', false);
  const ghost = EtcdKeys.exportedService('bench', 'ghost');
  await world.store.put(ghost, (await world.store.get(exportKey(11)))!.value.toString().replaceAll(serviceName(11), 'ghost'));

  controller = await world.startController({ healthChecks: { enabled: false } });
  for (const s of [3, 50, 99]) await waitFor(async () => (await healthyOf(world.store, s)) === SHAPE.endpointsPerService - 1, { what: `svc-${s} reconciled after the restart` });
  await waitFor(async () => (await world.store.get(exportKey(10))) === undefined, { what: 'unexported svc-10 removed' });
  await waitFor(async () => (await world.store.get(ghost)) === undefined, { what: 'the export of a service that does not exist removed' });
  t.is(await healthyOf(world.store, 4), SHAPE.endpointsPerService, 'the others as they were');
});

test('two controllers of one cluster converge: each change is written once, by one of them', async (t) => {
  const world = await controllerWorld(t);
  const flip = await catalog(world);
  await world.startController({ healthChecks: { enabled: false } });
  await world.startController({ healthChecks: { enabled: false } });
  await allExported(world.store);
  const writes = await exportWrites(t, world.store);

  const changed = [5, 25, 45, 65, 85];
  for (const s of changed) await flip(s, 0, 'unhealthy');
  for (const s of changed) await waitFor(async () => (await healthyOf(world.store, s)) === SHAPE.endpointsPerService - 1, { what: `svc-${s} exported with one endpoint fewer healthy` });
  await new Promise((r) => setTimeout(r, QUIET_MS));

  t.deepEqual([...writes].sort(), changed.map(exportKey).sort(), 'one write per change between the two controllers');
  for (const s of changed) t.is(await healthyOf(world.store, s), SHAPE.endpointsPerService - 1);
});

test('with an export store: one endpoint change is one write there, and the echo through the export store\'s watch causes none', async (t) => {
  const world = await controllerWorld(t);
  const exportStore = await startExportStore(t, 'east');
  const flip = await catalog(world);
  const config = parseConfig('cluster', { ...structuredClone(world.config()), exportStore: exportStore.config });
  const controller = new Controller({ config, intermediate: (await world.pki.cluster('east')).ca, healthChecks: { enabled: false } });
  t.teardown(() => controller.stop());
  await controller.start();
  await allExported(exportStore.root);
  const writes = await exportWrites(t, exportStore.root);

  await twoChanges(flip, exportStore.root);

  t.deepEqual(writes, [exportKey(7), exportKey(42)], 'one write per change, none for the echoes');
  t.is((await world.store.list(EtcdKeys.exportsPrefix)).entries.length, 0, 'nothing exported into the main etcd');
});
