import test from 'ava';
import { EXPORT_WRITES_IN_FLIGHT } from '../../controller/export-publisher.js';
import { CATALOG_SCHEMA_VERSION, EtcdKeys, ExportedService, ServiceSpec, decodeCatalogValue, encodeCatalogValue, parseEtcdKey } from '../../mesh/index.js';
import { Etcd3Store, type EtcdStore } from '../../store/index.js';
import { waitFor } from '../../testkit/ports.js';
import { controllerWorld, spiffe } from './harness.js';

const SERVICES = 300;

/** The real store, counting the export writes it has in flight (the most at once). */
function countingExportWrites(store: EtcdStore): { store: EtcdStore; maxInFlight: () => number } {
  let inFlight = 0;
  let max = 0;
  const putIfUnchanged: EtcdStore['putIfUnchanged'] = async (key, value, modRevision, options) => {
    const isExport = key.startsWith(EtcdKeys.exportsPrefix);
    if (isExport) max = Math.max(max, ++inFlight);
    try {
      return await store.putIfUnchanged(key, value, modRevision, options);
    } finally {
      if (isExport) inFlight--;
    }
  };
  const counting = new Proxy(store, {
    get(target, property) {
      if (property === 'putIfUnchanged') return putIfUnchanged;
      const value = Reflect.get(target, property, target) as unknown;
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
  return { store: counting, maxInFlight: () => max };
}

// A cluster exporting 1,000 services used to write its exports one etcd round trip after
// another, so peers saw the last of them tens of seconds late (bench:scale).
test('a controller publishes a burst of exports several at a time, never more than EXPORT_WRITES_IN_FLIGHT, and every one is right', async (t) => {
  const world = await controllerWorld(t);
  const specs = Array.from({ length: SERVICES }, (_, i) => {
    const key = EtcdKeys.service('bench', `svc-${i}`);
    const value: ServiceSpec = { schema: CATALOG_SCHEMA_VERSION, name: `svc-${i}`, namespace: 'bench', ports: [{ name: 'http', port: 8080, protocol: 'http' }], serviceAccounts: [spiffe('bench', `svc-${i}`)], exported: true, subsets: {} };
    return { key, value: encodeCatalogValue(ServiceSpec, key, value) };
  });
  await world.store.putMany(specs);

  const real = new Etcd3Store({ endpoints: world.etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => real.close());
  const counting = countingExportWrites(real);
  await world.startController({ store: counting.store });

  const exports = await waitFor(
    async () => {
      const listed = (await world.store.list(EtcdKeys.exportsPrefix)).entries.filter((e) => parseEtcdKey(e.key).kind === 'exported-service');
      return listed.length === SERVICES ? listed : undefined;
    },
    { timeoutMs: 60_000, what: `all ${SERVICES} exports written` },
  );
  t.true(counting.maxInFlight() > 1, `export writes overlapped (at most ${counting.maxInFlight()} at once)`);
  t.true(counting.maxInFlight() <= EXPORT_WRITES_IN_FLIGHT, `at most ${EXPORT_WRITES_IN_FLIGHT} in flight (saw ${counting.maxInFlight()})`);
  const specOf = new Map(specs.map((s) => [s.key, s.value]));
  for (const entry of exports) {
    const decoded = decodeCatalogValue(ExportedService, entry.key, entry.value);
    if (!decoded.ok) return t.fail(`${entry.key}: ${decoded.error.message}`);
    const specKey = EtcdKeys.service('bench', decoded.value.service.name);
    const spec = decodeCatalogValue(ServiceSpec, specKey, specOf.get(specKey)!);
    if (!spec.ok) return t.fail(`${specKey}: ${spec.error.message}`);
    t.deepEqual(decoded.value.service, spec.value, `${entry.key} carries its service spec`);
    t.deepEqual(decoded.value.healthy, [], `${entry.key}: no endpoints, no healthy counts`);
  }
});
