import test from 'ava';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { EtcdKeys, PeerReportedLinks, ReportedLinks, decodeCatalogValue, type LinkConfig } from '../../mesh/index.js';
import { Federation, FederationErrorCodes } from '../../federation/index.js';
import { waitFor } from '../../testkit/index.js';
import { exportService, exportedService, linkTo, metricValue, publishPeer, startCluster, timings, waitForFreshImport, type TestCluster } from './helpers.js';

async function storedReport(cluster: TestCluster, peer: string): Promise<PeerReportedLinks | undefined> {
  const kv = await cluster.store.get(EtcdKeys.peerReportedLinks(peer));
  if (!kv) return undefined;
  const decoded = decodeCatalogValue(PeerReportedLinks, EtcdKeys.peerReportedLinks(peer), kv.value);
  if (!decoded.ok) throw decoded.error;
  return decoded.value;
}

/** A federation whose log lines land in `lines` (to assert on what it logged). */
async function federationWithLog(t: import('ava').ExecutionContext, local: TestCluster, links: LinkConfig[]) {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  const registry = new Registry();
  const federation = new Federation({ cluster: local.name, local: local.connection, links, settings: timings, registry, logger });
  t.teardown(() => federation.stop());
  await federation.start();
  return { federation, registry, lines };
}

const link = (peer: string, state = 'synced') => ({ peer, state, heartbeatAgeMs: 120, syncLagMs: 4, imports: 3, conflicts: 0 });
const report = (cluster: string, links: unknown[], at = new Date()) => ({ schema: 1, cluster, reportedAt: at.toISOString(), links });

test('a federation publishes its own links to exports/_links, and a peer link stores the report it reads there under imports/<peer>/_links', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await Promise.all([publishPeer(t, a), publishPeer(t, b)]);
  const fa = await federationWithLog(t, a, [linkTo(b)]);
  const fb = await federationWithLog(t, b, [linkTo(a)]);

  // a's own report, in a's etcd (where peers read its exports when it has no export store).
  const own = await waitFor(async () => {
    const kv = await a.store.get(EtcdKeys.reportedLinks);
    const decoded = kv && decodeCatalogValue(ReportedLinks, EtcdKeys.reportedLinks, kv.value);
    return decoded?.ok && decoded.value.links[0]?.state === 'synced' ? decoded.value : undefined;
  }, { timeoutMs: 20_000, what: "a's _links with a → b synced" });
  t.is(own.cluster, 'a');
  t.deepEqual(Object.keys(own.links[0]!).sort(), ['conflicts', 'heartbeatAgeMs', 'imports', 'peer', 'state'].concat(own.links[0]!.syncLagMs === undefined ? [] : ['syncLagMs']).sort(), 'nothing but what the view needs');
  t.is(own.links[0]!.peer, 'b');
  t.true((await metricValue(fa.registry, 'causeway_federation_links_reports_published_total', { result: 'ok' }))! >= 1);

  // b reads it through its link to a, and keeps it next to the link's status, dated on b's clock.
  const stored = await waitFor(async () => {
    const r = await storedReport(b, 'a');
    return r?.links[0]?.state === 'synced' ? r : undefined;
  }, { timeoutMs: 20_000, what: "b's copy of a's report" });
  t.is(stored.cluster, 'a');
  t.true(Date.parse(stored.receivedAt) <= Date.now());
  t.true((await metricValue(fb.registry, 'causeway_federation_peer_link_reports_total', { peer: 'a' }))! >= 1);
  await waitFor(async () => (await metricValue(fb.registry, 'causeway_federation_peer_link_report_age_seconds', { peer: 'a' })) !== undefined, { timeoutMs: 5000, what: 'report age gauge' });
  // Republished every heartbeat interval, so its age tells how current it is.
  await waitFor(async () => ((await storedReport(b, 'a'))?.reportedAt ?? '') > stored.reportedAt, { timeoutMs: 10_000, what: 'a newer report' });

  // Stopping a's federation publishes its links as down at once.
  await fa.federation.stop();
  await waitFor(async () => (await storedReport(b, 'a'))?.links[0]?.state === 'down', { timeoutMs: 20_000, what: "a's last report: a → b down" });
});

test('a hostile peer\'s _links (another cluster named, 10,000 links, 257 links, a bad state, 1 MB, not JSON, a link to itself) is refused, counted and logged; the last good report stays, and nothing stops', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  const { federation, registry, lines } = await federationWithLog(t, a, [linkTo(b)]);
  const put = (value: string) => b.store.commit([{ put: EtcdKeys.reportedLinks, value }]);

  const good = report('b', [link('c'), link('d', 'stale')]);
  await put(JSON.stringify(good));
  await waitFor(async () => (await storedReport(a, 'b'))?.reportedAt === good.reportedAt, { timeoutMs: 20_000, what: "b's good report stored at a" });

  const manyLinks = Array.from({ length: 10_000 }, (_, i) => link(`c${i}`));
  const cases: Array<[string, string, string]> = [
    ['another cluster named', JSON.stringify(report('c', [link('d')])), 'spoofed'],
    ['10,000 links', JSON.stringify(report('b', manyLinks)), 'too-large'],
    ['257 links (small enough in bytes)', JSON.stringify(report('b', manyLinks.slice(0, 257).map((l, i) => ({ peer: `c${i}`, state: l.state, imports: 0, conflicts: 0 })))), 'too-many-links'],
    ['a bad state', JSON.stringify(report('b', [link('c', 'on-fire')])), 'invalid'],
    ['1 MB', JSON.stringify({ ...report('b', [link('c')]), padding: 'x'.repeat(1024 * 1024) }), 'too-large'],
    ['not JSON', '{"schema":1,', 'invalid'],
    ['a link to itself', JSON.stringify(report('b', [link('b')])), 'invalid'],
    ['a negative count', JSON.stringify(report('b', [{ ...link('c'), imports: -1 }])), 'invalid'],
    ['an infinite age (1e400 in the JSON)', JSON.stringify(report('b', [link('c')])).replace('"heartbeatAgeMs":120', '"heartbeatAgeMs":1e400'), 'invalid'],
    ['two links to one peer', JSON.stringify(report('b', [link('c'), link('c', 'down')])), 'invalid'],
    ['an unknown field', JSON.stringify({ ...report('b', [link('c')]), gateways: ['10.0.0.1:15443'] }), 'invalid'],
  ];
  for (const [what, value, reason] of cases) {
    const before = (await metricValue(registry, 'causeway_federation_peer_link_reports_refused_total', { peer: 'b', reason })) ?? 0;
    await put(value);
    await waitFor(async () => ((await metricValue(registry, 'causeway_federation_peer_link_reports_refused_total', { peer: 'b', reason })) ?? 0) > before, {
      timeoutMs: 20_000,
      what: `${what}: refused as ${reason}`,
    });
    const kept = await storedReport(a, 'b');
    t.is(kept?.reportedAt, good.reportedAt, `${what}: the last good report is kept`);
    t.deepEqual(kept?.links.map((l) => `${l.peer}:${l.state}`), ['c:synced', 'd:stale'], what);
    t.true(
      lines.some((l) => l.key === EtcdKeys.reportedLinks && l.reason === reason && l.code === FederationErrorCodes.reportedLinksRefused && l.peer === 'b' && l.keptReportedAt === good.reportedAt),
      `${what}: logged with its key, the reason and the report kept`,
    );
  }

  // Still running: the link is synced and a good report is taken again.
  t.is(federation.status().links[0]?.state, 'synced');
  const next = report('b', [link('c', 'down')], new Date(Date.now() + 1000));
  await put(JSON.stringify(next));
  await waitFor(async () => (await storedReport(a, 'b'))?.links[0]?.state === 'down', { timeoutMs: 20_000, what: 'the next good report stored' });

  // A deleted report keeps the last good one (its age tells the view how old it is).
  await b.store.commit([{ delete: EtcdKeys.reportedLinks }]);
  await exportService(b, exportedService('default', 'after-delete'));
  await waitForFreshImport(a, 'b', 'default', 'after-delete', 'an export written after the delete, so the delete was applied');
  t.is((await storedReport(a, 'b'))?.reportedAt, next.reportedAt);
});
