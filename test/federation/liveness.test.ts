import test from 'ava';
import { readClusterStatus, renderClusterStatus } from '../../federation/index.js';
import { startFaultProxy, waitFor } from '../../testkit/index.js';
import {
  clusterConfig,
  exportService,
  exportedService,
  linkTo,
  metricValue,
  publishPeer,
  readImport,
  readLinkStatus,
  startCluster,
  startFederation,
  timings,
  unexportService,
  waitForFreshImport,
} from './helpers.js';

test('a killed peer goes stale within staleAfter + 1 s, then expires, then recovers when it returns', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  await exportService(b, exportedService('default', 'reviews'));
  const { federation, registry } = await startFederation(t, a, [linkTo(b)]);
  await federation.whenReady();
  await waitFor(() => readImport(a, 'b', 'default', 'reviews'), { what: 'import' });

  const killedAt = Date.now();
  await b.etcd.kill();
  const stale = await waitFor(async () => (await readImport(a, 'b', 'default', 'reviews'))?.stale === true, {
    timeoutMs: timings.staleAfterMs + 1000,
    intervalMs: 25,
    what: 'import flagged stale within staleAfter + 1s',
  });
  t.true(stale);
  t.log(`stale after ${Date.now() - killedAt} ms (staleAfter ${timings.staleAfterMs} ms)`);

  const config = clusterConfig(a, [b]);
  const staleStatus = await waitFor(async () => {
    const s = await readClusterStatus(a.store, config);
    return s.links[0]?.state === 'stale' ? s : undefined;
  }, { what: 'status shows stale' });
  const link = staleStatus.links[0]!;
  t.is(link.connected, false);
  t.is(link.importsStale, 1);
  t.true((link.heartbeatAgeMs ?? 0) > timings.staleAfterMs);
  t.regex(renderClusterStatus(staleStatus), /b\s+stale\s+no/);
  t.is(await metricValue(registry, 'causeway_federation_imports', { peer: 'b', state: 'stale' }), 1);

  await waitFor(async () => (await readImport(a, 'b', 'default', 'reviews')) === undefined, {
    timeoutMs: timings.expireAfterMs + 2000,
    what: 'import removed after expireAfter',
  });
  const expired = await waitFor(async () => {
    const s = await readLinkStatus(a, 'b');
    return s?.state === 'expired' ? s : undefined;
  }, { what: 'expired status' });
  t.is(expired.importsExpired, 1);
  t.is(expired.imports, 0);

  // Peer returns: everything recovers without restarting anything.
  await b.etcd.restart();
  const back = await waitForFreshImport(a, 'b', 'default', 'reviews', 'import back and fresh');
  t.false(back.stale);
  await waitFor(async () => (await readLinkStatus(a, 'b'))?.state === 'synced', { timeoutMs: 10_000, what: 'synced again' });
  const s = (await readClusterStatus(a.store, config)).links[0]!;
  t.is(s.imports, 1);
  t.is(s.importsStale, 0);
  t.is(s.importsExpired, 0);
});

test('compaction while disconnected: the link re-lists and deletes imports that vanished', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(b.etcd.clientUrl).port) });
  t.teardown(() => proxy.close());
  await exportService(b, exportedService('default', 'gone'));
  await exportService(b, exportedService('default', 'kept', { healthy: 2 }));
  const { federation, registry } = await startFederation(t, a, [linkTo(b, [proxy.url()])]);
  await federation.whenReady();
  await waitFor(async () => (await readImport(a, 'b', 'default', 'gone')) && readImport(a, 'b', 'default', 'kept'), { what: 'both imported' });

  proxy.cut({ refuse: true });
  await waitFor(async () => (await readLinkStatus(a, 'b'))?.connected === false, { what: 'link sees the disconnect' });
  await unexportService(b, 'default', 'gone');
  await exportService(b, exportedService('default', 'kept', { healthy: 1 }));
  await exportService(b, exportedService('default', 'new'));
  const revision = (await b.store.list('/causeway/v1/exports/')).revision;
  b.etcd.etcdctl(['compact', revision]);
  proxy.heal();

  await waitFor(async () => (await readImport(a, 'b', 'default', 'new')) !== undefined, { timeoutMs: 20_000, what: 'new import after resync' });
  await waitFor(async () => (await readImport(a, 'b', 'default', 'gone')) === undefined, { what: 'vanished import deleted' });
  t.is((await readImport(a, 'b', 'default', 'kept'))?.healthy[0]?.healthy, 1);
  t.is(await metricValue(registry, 'causeway_federation_resyncs_total', { peer: 'b', reason: 'compacted' }), 1);
  const status = await waitFor(async () => {
    const s = await readLinkStatus(a, 'b');
    return s?.state === 'synced' ? s : undefined;
  }, { what: 'synced' });
  t.is(status.imports, 2);
  t.true(BigInt(status.appliedRevision) >= BigInt(revision));
});

test('a federation restarted while its peer is down keeps the imports, lets them go stale and expire on the old heartbeat clock', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  await exportService(b, exportedService('default', 'reviews'));
  const first = await startFederation(t, a, [linkTo(b)]);
  await first.federation.whenReady();
  await waitFor(() => readImport(a, 'b', 'default', 'reviews'), { what: 'import' });
  // The status is refreshed while nothing changes, so its age means something.
  const before = Date.parse((await readLinkStatus(a, 'b'))!.updatedAt);
  await waitFor(async () => Date.parse((await readLinkStatus(a, 'b'))!.updatedAt) > before, { timeoutMs: 3 * timings.heartbeatIntervalMs + 2000, what: 'status refreshed' });

  await first.federation.stop();
  const stopped = await readLinkStatus(a, 'b');
  t.is(stopped?.state, 'down');
  t.regex(stopped?.message ?? '', /federation stopped/);
  const killedAt = Date.now();
  await b.etcd.kill();

  const second = await startFederation(t, a, [linkTo(b)]);
  t.truthy(await readImport(a, 'b', 'default', 'reviews'), 'imports survive a restart while the peer is down');
  await waitFor(async () => (await readImport(a, 'b', 'default', 'reviews'))?.stale === true, { timeoutMs: timings.staleAfterMs + 1000, what: 'stale on the old clock' });
  await waitFor(async () => (await readImport(a, 'b', 'default', 'reviews')) === undefined, { timeoutMs: timings.expireAfterMs + 2000, what: 'expired on the old clock' });
  t.true(Date.now() - killedAt < timings.expireAfterMs + 3000);
  t.is(second.federation.status().links[0]?.state, 'expired');
});

test('after a disconnect the link resumes from the applied revision: changes made meanwhile arrive without a re-list', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(b.etcd.clientUrl).port) });
  t.teardown(() => proxy.close());
  await exportService(b, exportedService('default', 'gone'));
  const { federation, registry } = await startFederation(t, a, [linkTo(b, [proxy.url()])]);
  await federation.whenReady();
  await waitFor(() => readImport(a, 'b', 'default', 'gone'), { what: 'imported' });

  proxy.cut({ refuse: true });
  await waitFor(async () => (await readLinkStatus(a, 'b'))?.connected === false, { what: 'link sees the disconnect' });
  await unexportService(b, 'default', 'gone');
  await exportService(b, exportedService('default', 'new'));
  proxy.heal();

  await waitFor(async () => (await readImport(a, 'b', 'default', 'new')) !== undefined, { timeoutMs: 20_000, what: 'new import after resume' });
  await waitFor(async () => (await readImport(a, 'b', 'default', 'gone')) === undefined, { what: 'deleted while disconnected' });
  t.is(await metricValue(registry, 'causeway_federation_resyncs_total', { peer: 'b', reason: 'initial' }), 1);
  t.is(await metricValue(registry, 'causeway_federation_resyncs_total', { peer: 'b', reason: 'compacted' }), undefined);
});

test('a peer etcd rebuilt from scratch (revisions restarted) is re-listed, not waited for', async (t) => {
  const [a, b1, b2] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b'), startCluster(t, 'b')]);
  await publishPeer(t, b1);
  for (let i = 0; i < 30; i++) await exportService(b1, exportedService('default', 'old', { healthy: (i % 3) + 1 }));
  const target = { host: '127.0.0.1', port: Number(new URL(b1.etcd.clientUrl).port) };
  const proxy = await startFaultProxy(target);
  t.teardown(() => proxy.close());
  const { federation, registry } = await startFederation(t, a, [linkTo(b1, [proxy.url()])]);
  await federation.whenReady();
  await waitFor(() => readImport(a, 'b', 'default', 'old'), { what: 'imported from the first etcd' });

  proxy.cut({ refuse: true });
  await publishPeer(t, b2);
  await exportService(b2, exportedService('default', 'fresh'));
  target.port = Number(new URL(b2.etcd.clientUrl).port);
  proxy.heal();

  await waitFor(async () => (await readImport(a, 'b', 'default', 'fresh')) !== undefined, { timeoutMs: 20_000, what: 'import from the rebuilt etcd' });
  await waitFor(async () => (await readImport(a, 'b', 'default', 'old')) === undefined, { what: 'old import deleted' });
  t.is(await metricValue(registry, 'causeway_federation_resyncs_total', { peer: 'b', reason: 'peer-reset' }), 1);
});

test('a partitioned peer (traffic held, nothing refused) goes stale, and comes back when the partition heals', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(b.etcd.clientUrl).port) });
  t.teardown(() => proxy.close());
  await exportService(b, exportedService('default', 'reviews', { healthy: 2 }));
  const { federation } = await startFederation(t, a, [linkTo(b, [proxy.url()])]);
  await federation.whenReady();
  await waitFor(() => readImport(a, 'b', 'default', 'reviews'), { what: 'imported' });

  proxy.pause();
  await waitFor(async () => (await readImport(a, 'b', 'default', 'reviews'))?.stale === true, { timeoutMs: timings.staleAfterMs + 3000, what: 'stale while partitioned' });
  // Nothing errors on a held connection: the link must notice the silence itself.
  await waitFor(async () => (await readLinkStatus(a, 'b'))?.connected === false, { timeoutMs: 15_000, what: 'silent watch stream noticed' });
  await exportService(b, exportedService('default', 'reviews', { healthy: 1 }));
  proxy.resume();
  const back = await waitFor(async () => {
    const imp = await readImport(a, 'b', 'default', 'reviews');
    return imp && !imp.stale && imp.healthy[0]?.healthy === 1 ? imp : undefined;
  }, { timeoutMs: 30_000, what: 'fresh again with the change made during the partition' });
  t.false(back.stale);
  t.is((await readLinkStatus(a, 'b'))?.state, 'synced');
});

test('regression: while the LOCAL etcd (where imports are written) is down the link state says local-store-down, not synced, and returns to synced when it is back', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  await exportService(b, exportedService('default', 'reviews'));
  const { federation, registry } = await startFederation(t, a, [linkTo(b)]);
  await federation.whenReady();
  await waitFor(() => readImport(a, 'b', 'default', 'reviews'), { what: 'import' });
  const state = async (s: string) => metricValue(registry, 'causeway_federation_link_state', { peer: 'b', state: s });
  await waitFor(async () => (await state('synced')) === 1, { what: 'synced' });

  await a.etcd.stop();
  // The status is rewritten every heartbeat interval; that write fails and says why.
  await waitFor(async () => (await state('local-store-down')) === 1, { timeoutMs: timings.heartbeatIntervalMs + 10_000, intervalMs: 25, what: 'local-store-down while the local etcd is stopped' });
  t.is(await state('synced'), 0);
  const live = federation.status().links.find((l) => l.peer === 'b')!;
  t.is(live.state, 'local-store-down');
  t.regex(live.message ?? '', /imports cannot be written: etcd at http:\/\/127\.0\.0\.1:\d+ is unreachable/);
  // The peer keeps changing meanwhile; the change waits for the local etcd.
  await exportService(b, exportedService('default', 'ratings'));
  await new Promise((resolve) => setTimeout(resolve, 4 * timings.heartbeatIntervalMs));
  t.is(await state('local-store-down'), 1, 'stays down while the local etcd is');

  await a.etcd.restart();
  await waitFor(async () => (await state('synced')) === 1, { timeoutMs: 20_000, what: 'synced again once the local etcd is back' });
  t.is(await state('local-store-down'), 0);
  await waitForFreshImport(a, 'b', 'default', 'ratings', 'the change made meanwhile imported');
  await waitFor(async () => (await readLinkStatus(a, 'b'))?.state === 'synced', { timeoutMs: 10_000, what: 'the stored status says synced' });
});
