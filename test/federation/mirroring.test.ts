import test from 'ava';
import { EtcdKeys } from '../../mesh/index.js';
import { readClusterStatus, renderClusterStatus } from '../../federation/index.js';
import { waitFor } from '../../testkit/index.js';
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
} from './helpers.js';

test('exports of two peers are mirrored, updated, unexported, and port conflicts go to the oldest export', async (t) => {
  const [a, b, c] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b'), startCluster(t, 'c')]);
  await Promise.all([publishPeer(t, b), publishPeer(t, c)]);
  const older = new Date(Date.now() - 60_000).toISOString();
  const newer = new Date().toISOString();
  await exportService(b, exportedService('default', 'reviews', { healthy: 2 }));
  // "ratings" is exported by both peers; c's export is older and its ports differ.
  await exportService(b, exportedService('default', 'ratings', { exportedAt: newer, ports: [{ name: 'http', port: 9080, protocol: 'http' }] }));
  await exportService(c, exportedService('default', 'ratings', { exportedAt: older, ports: [{ name: 'grpc', port: 9090, protocol: 'grpc' }] }));
  // a itself exported "details" first; b's later export with other ports is the one in conflict.
  await exportService(a, exportedService('default', 'details', { exportedAt: older, ports: [{ name: 'http', port: 9080, protocol: 'http' }] }));
  await exportService(b, exportedService('default', 'details', { exportedAt: newer, ports: [{ name: 'http', port: 8080, protocol: 'http' }] }));
  // A bad value is logged and skipped, never fatal.
  await b.store.commit([{ put: EtcdKeys.exportedService('default', 'broken'), value: '{"schema":1,"nope":true}' }]);

  const { federation, registry } = await startFederation(t, a, [linkTo(b), linkTo(c)]);
  const readiness = await federation.whenReady();
  t.true(readiness.ready, JSON.stringify(readiness));
  // Ready is reported only with the links synced, and the gauge says so at once (it once
  // kept 'syncing' until the next heartbeat tick).
  for (const peer of ['b', 'c']) t.is(await metricValue(registry, 'causeway_federation_link_state', { peer, state: 'synced' }), 1, `link ${peer}`);
  for (const peer of ['b', 'c']) t.is(await metricValue(registry, 'causeway_federation_initial_sync_done', { peer }), 1, `initial sync of ${peer}`);

  const reviews = await waitFor(() => readImport(a, 'b', 'default', 'reviews'), { what: 'reviews imported from b' });
  t.is(reviews.peer, 'b');
  t.deepEqual(reviews.gateways, [{ address: '127.0.0.1', port: 15443 }]);
  t.deepEqual(reviews.peerLocality, { region: 'region-b', zone: 'z1' });
  t.is(reviews.peerNetwork, 'net-b');
  t.is(reviews.healthy[0]?.healthy, 2);
  t.false(reviews.stale);
  t.regex(reviews.peerRevision, /^\d+$/);
  t.is(await readImport(a, 'b', 'default', 'broken'), undefined);

  // Healthy counts follow the peer.
  await exportService(b, exportedService('default', 'reviews', { healthy: 0 }));
  await waitFor(async () => (await readImport(a, 'b', 'default', 'reviews'))?.healthy[0]?.healthy === 0, { what: 'healthy count 0' });

  // Oldest export wins: b's ratings is in conflict, c's is not.
  const ratingsB = await waitFor(async () => {
    const imp = await readImport(a, 'b', 'default', 'ratings');
    return imp?.conflict ? imp : undefined;
  }, { what: 'conflict on b' });
  t.regex(ratingsB.conflict!, /cluster c's older export/);
  const ratingsC = await readImport(a, 'c', 'default', 'ratings');
  t.truthy(ratingsC);
  t.is(ratingsC!.conflict, undefined);
  const conflicts = federation.status().conflicts;
  t.deepEqual(conflicts.map((x) => [x.service, x.winner, x.losers]), [['details.default', 'a', ['b']], ['ratings.default', 'c', ['b']]]);
  t.regex((await readImport(a, 'b', 'default', 'details'))?.conflict ?? '', /cluster a's older export/);
  await waitFor(async () => (await readLinkStatus(a, 'b'))?.conflicts.includes('ratings.default'), { what: 'conflict in b link status' });
  t.is(await metricValue(registry, 'causeway_federation_port_conflicts', { peer: 'b' }), 2);
  const report = await readClusterStatus(a.store, clusterConfig(a, [b, c]));
  const linkB = report.links.find((l) => l.peer === 'b')!;
  t.deepEqual(linkB.conflicts.map((x) => x.service).sort(), ['details.default', 'ratings.default']);
  t.is(linkB.importsInConflict, 2);
  t.regex(renderClusterStatus(report), /b: conflict on ratings\.default: .*cluster c's older export/);

  // c stops exporting ratings: the conflict clears on b's import.
  await unexportService(c, 'default', 'ratings');
  await waitFor(async () => (await readImport(a, 'c', 'default', 'ratings')) === undefined, { what: 'c ratings removed' });
  await waitFor(async () => {
    const imp = await readImport(a, 'b', 'default', 'ratings');
    return imp !== undefined && imp.conflict === undefined;
  }, { what: 'b ratings conflict cleared' });
  t.deepEqual(federation.status().conflicts.map((x) => x.service), ['details.default']);
  // a stops exporting details: b's import of it is no longer in conflict either.
  await unexportService(a, 'default', 'details');
  await waitFor(async () => {
    const imp = await readImport(a, 'b', 'default', 'details');
    return imp !== undefined && imp.conflict === undefined;
  }, { what: 'b details conflict cleared' });
  t.deepEqual(federation.status().conflicts, []);

  // Unexport propagates.
  await unexportService(b, 'default', 'reviews');
  await waitFor(async () => (await readImport(a, 'b', 'default', 'reviews')) === undefined, { what: 'reviews unexported' });

  const status = await readLinkStatus(a, 'b');
  t.is(status?.state, 'synced');
  t.is(status?.initialSync, 'done');
  t.true(status?.connected);
  t.true(((await metricValue(registry, 'causeway_federation_events_applied_total', { peer: 'b' })) ?? 0) > 0);
  t.is(await metricValue(registry, 'causeway_federation_link_state', { peer: 'b', state: 'synced' }), 1);
});

test('a peer that is down at start delays readiness by at most initialSyncTimeout, and status says so', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  const deadLink = { peer: 'b', etcd: { endpoints: ['http://127.0.0.1:1'], dialTimeoutMs: 500 } };
  const { federation } = await startFederation(t, a, [deadLink], { ...timings, initialSyncTimeoutMs: 1000 });
  t.false(federation.readiness().ready);
  t.deepEqual(federation.readiness().reasons, ['link b: initial sync pending']);
  const readiness = await federation.whenReady();
  t.true(readiness.ready);
  t.deepEqual(readiness.details, { initialSync: { b: 'timed-out' } });
  const status = await waitFor(async () => {
    const s = await readLinkStatus(a, 'b');
    // Never heard from, the link is down — and soon stale, then expired (it has no imports to lose).
    return s?.initialSync === 'timed-out' && ['down', 'stale', 'expired'].includes(s.state) ? s : undefined;
  }, { what: 'timed-out status' });
  t.false(status.connected);
  t.regex(status.message ?? '', /unreachable/);
  void b;
});

test('a link whose etcd belongs to another cluster imports nothing and says why', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  await exportService(b, exportedService('default', 'reviews'));
  // Misconfigured: the link calls the peer "c" but points at b's etcd.
  const { federation } = await startFederation(t, a, [{ ...linkTo(b), peer: 'c' }]);
  const status = await waitFor(async () => {
    const s = await readLinkStatus(a, 'c');
    return s?.message?.includes('belongs to cluster "b"') ? s : undefined;
  }, { what: 'mismatch reported' });
  t.is(status.imports, 0);
  t.is(status.state, 'down');
  t.is(await readImport(a, 'c', 'default', 'reviews'), undefined);
  t.is(federation.readiness().ready, false);
});
