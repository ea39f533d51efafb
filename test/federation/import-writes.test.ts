import test from 'ava';
import { EtcdKeys } from '../../mesh/index.js';
import { waitFor } from '../../testkit/ports.js';
import { exportService, exportedService, linkTo, publishPeer, readImport, startCluster, startFederation, timings } from './helpers.js';

const SERVICES = 50;
/** Freshness that a loaded machine cannot upset: a link turning stale would rewrite every import. */
const settings = { ...timings, staleAfterMs: 60_000, expireAfterMs: 120_000 };

// A link keeps a fingerprint of each import it wrote, not the import's JSON (bench:scale:
// the JSON cost ~0.5 kB of heap per import, held only to compare). What it compares must
// still tell an unchanged import from a changed one, also for imports read back at start.
test('a restarted federation rewrites none of the imports it wrote, and a changed export rewrites only its own import', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  for (let i = 0; i < SERVICES; i++) await exportService(b, exportedService('default', `svc-${i}`, { healthy: 2, exportedAt: '2026-01-01T00:00:00.000Z' }));
  const revisions = async () => new Map((await a.store.list(EtcdKeys.peerImportsPrefix('b'))).entries.filter((e) => !e.key.endsWith('/_status')).map((e) => [e.key, e.modRevision]));

  const first = await startFederation(t, a, [linkTo(b)], settings);
  t.true((await first.federation.whenReady()).ready);
  const written = await waitFor(async () => {
    const current = await revisions();
    return current.size === SERVICES ? current : undefined;
  }, { what: `${SERVICES} imports written` });
  await first.federation.stop();

  const second = await startFederation(t, a, [linkTo(b)], settings);
  t.true((await second.federation.whenReady()).ready);
  await exportService(b, exportedService('default', 'svc-7', { healthy: 0, exportedAt: '2026-01-01T00:00:00.000Z' }));
  await waitFor(async () => (await readImport(a, 'b', 'default', 'svc-7'))?.healthy[0]?.healthy === 0, { what: 'svc-7 imported with healthy 0' });

  const after = await revisions();
  const rewritten = [...after].filter(([key, revision]) => written.get(key) !== revision).map(([key]) => key);
  t.deepEqual(rewritten, [EtcdKeys.importedService('b', 'default', 'svc-7')], 'only the changed export was written again');
});
