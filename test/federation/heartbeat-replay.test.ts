import test from 'ava';
import { CATALOG_SCHEMA_VERSION, EtcdKeys, Heartbeat, decodeCatalogValue, encodeCatalogValue } from '../../mesh/index.js';
import { HeartbeatPublisher } from '../../federation/index.js';
import { waitFor } from '../../testkit/index.js';
import { exportService, exportedService, linkTo, publishPeer, readImport, startCluster, startFederation, timings, waitForFreshImport, type TestCluster } from './helpers.js';

async function currentBeat(cluster: TestCluster): Promise<Heartbeat> {
  const kv = await cluster.store.get(EtcdKeys.heartbeat);
  if (!kv) throw new Error('no heartbeat');
  const decoded = decodeCatalogValue(Heartbeat, EtcdKeys.heartbeat, kv.value);
  if (!decoded.ok) throw decoded.error;
  return decoded.value;
}

test('the publisher writes a sequence that advances on every beat, and across a restart with its clock set back', async (t) => {
  const b = await startCluster(t, 'b');
  const publisher = await publishPeer(t, b);
  const first = await currentBeat(b);
  t.is(typeof first.sequence, 'number');
  const next = await waitFor(async () => {
    const beat = await currentBeat(b);
    return beat.sequence! > first.sequence! ? beat : undefined;
  }, { what: 'the next beat' });
  t.true(next.sequence! > first.sequence!);
  await publisher!.stop({ revoke: false });
  // Another controller (or an earlier run) left a sequence far ahead of this clock.
  const ahead = Date.now() + 3_600_000;
  await b.store.commit([{ put: EtcdKeys.heartbeat, value: encodeCatalogValue(Heartbeat, EtcdKeys.heartbeat, { schema: CATALOG_SCHEMA_VERSION, cluster: 'b', at: new Date().toISOString(), sequence: ahead }) }]);
  const second = new HeartbeatPublisher({ cluster: 'b', store: b.store, intervalMs: timings.heartbeatIntervalMs });
  await second.start();
  t.teardown(() => second.stop());
  t.true((await currentBeat(b)).sequence! > ahead, 'continues above what it found in etcd');
});

test('a peer whose heartbeat key is kept alive on a lease and re-put with old values goes stale anyway, and comes back with real beats', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  const publisher = await publishPeer(t, b);
  await exportService(b, exportedService('default', 'reviews'));
  const { federation } = await startFederation(t, a, [linkTo(b)]);
  await federation.whenReady();
  await waitForFreshImport(a, 'b', 'default', 'reviews', 'fresh import');
  const older = (await b.store.get(EtcdKeys.heartbeat))!.value.toString('utf8');
  await waitFor(async () => (await currentBeat(b)).sequence! > JSON.parse(older).sequence, { what: 'a later beat' });
  const latest = (await b.store.get(EtcdKeys.heartbeat))!.value.toString('utf8');

  // The owner stops beating; someone keeps the key on a long lease and keeps putting the
  // last value, and an older one, back: events arrive, the key never goes.
  await publisher!.stop({ revoke: false });
  const stoppedAt = Date.now();
  const lease = /lease ([0-9a-f]+) granted/.exec(b.etcd.etcdctl(['lease', 'grant', '120']))![1]!;
  let replaying = true;
  const replays = (async () => {
    for (let i = 0; replaying; i++) {
      b.etcd.etcdctl(['put', `--lease=${lease}`, EtcdKeys.heartbeat, i % 2 === 0 ? latest : older]);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  })();
  t.teardown(async () => {
    replaying = false;
    await replays;
  });
  await waitFor(async () => (await readImport(a, 'b', 'default', 'reviews'))?.stale === true, {
    timeoutMs: timings.staleAfterMs + 1500,
    intervalMs: 25,
    what: 'stale although the key exists and is re-put',
  });
  t.log(`stale after ${Date.now() - stoppedAt} ms (staleAfter ${timings.staleAfterMs} ms)`);
  t.truthy(await b.store.get(EtcdKeys.heartbeat), 'the key was there all along');
  t.is(federation.status().links[0]?.state, 'stale');
  replaying = false;
  await replays;

  const revived = new HeartbeatPublisher({ cluster: 'b', store: b.store, intervalMs: timings.heartbeatIntervalMs });
  await revived.start();
  t.teardown(() => revived.stop());
  await waitForFreshImport(a, 'b', 'default', 'reviews', 'fresh again with real beats', 5000);
  t.pass();
});
