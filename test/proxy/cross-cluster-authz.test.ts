import test from 'ava';
import { productpageSpec, reviewsSpec, startMesh, startWorkload, targetsOf, type MeshWorkload, type MeshWorld } from './helpers/clusters.js';
import { captureLog, get, metricValue, spiffe, type LogLine } from './helpers/mesh.js';
import { waitFor } from '../../testkit/ports.js';

// Authorization of callers from ANOTHER cluster, for real: two clusters on loopback, each
// with a real etcd, controller (CA, federation) and SNI gateway. An app in east calls
// `reviews`, which runs only in west: east's sidecar → west's gateway (SNI passthrough)
// → west's sidecar, which knows the caller's SPIFFE ID from the certificate and its
// cluster from the certificate's issuer (east's intermediate), and applies the policies
// of west's catalog.

interface World {
  world: MeshWorld;
  server: MeshWorkload;
  serverLog: ReturnType<typeof captureLog>;
  callers: { productpage: MeshWorkload; ratings: MeshWorkload };
}

test.before(async (t) => {
  const world = await startMesh([
    { name: 'east', region: 'eu', zone: 'eu-1' },
    { name: 'west', region: 'eu', zone: 'eu-2' },
  ]);
  (t.context as { world?: MeshWorld }).world = world;
  for (const name of ['east', 'west']) {
    await world.cluster(name).admin.applyService(productpageSpec);
    await world.cluster(name).admin.applyService({ ...productpageSpec, name: 'ratings', serviceAccounts: [spiffe('default', 'ratings')] });
  }
  await world.cluster('west').admin.applyService(reviewsSpec);
  const serverLog = captureLog();
  const server = await startWorkload(world, 'west', { service: 'reviews', log: serverLog.log, config: { sidecar: { accessLog: { enabled: true } } } });
  const productpage = await startWorkload(world, 'east', { service: 'productpage', app: false });
  const ratings = await startWorkload(world, 'east', { service: 'ratings', app: false });
  for (const caller of [productpage, ratings]) {
    await waitFor(() => targetsOf(caller.sidecar, 'reviews').some((x) => x.kind === 'gateway' && x.healthy), { what: "west's reviews, through west's gateway", timeoutMs: 30_000 });
    await caller.sidecar.settled();
  }
  Object.assign(t.context as World, { server, serverLog, callers: { productpage, ratings } });
});

test.after.always(async (t) => {
  const c = t.context as Partial<World>;
  for (const w of [c.callers?.productpage, c.callers?.ratings, c.server]) await w?.close().catch(() => undefined);
  await c.world?.close();
});

/** Puts one authorization policy in west's catalog (replacing the last one) and waits until west's sidecar applies it. */
async function policy(t: import('ava').ExecutionContext, name: string, action: 'allow' | 'deny', from: Record<string, string[]>[]) {
  const { world, server } = t.context as World;
  const admin = world.cluster('west').admin;
  for (const old of server.sidecar.snapshot?.authorization ?? []) await admin.deletePolicy('authorization', old.name, old.namespace);
  await admin.applyPolicy('authorization', { name, namespace: 'default', service: 'reviews', action, from });
  await waitFor(() => {
    const now = server.sidecar.snapshot?.authorization ?? [];
    return now.length === 1 && now[0]!.name === name;
  }, { what: `policy ${name} at west's sidecar`, timeoutMs: 20_000 });
  await server.sidecar.settled();
}

async function call(t: import('ava').ExecutionContext, caller: 'productpage' | 'ratings', path: string) {
  const { callers } = t.context as World;
  const sidecar = callers[caller].sidecar;
  // Through the gateway: east's only target for reviews is west's gateway.
  t.deepEqual(new Set(targetsOf(sidecar, 'reviews').map((x) => x.kind)), new Set(['gateway']));
  return get(sidecar.outbound.lookup('default', 'reviews')!.address, 9080, path, { agent: false });
}

async function inboundLine(t: import('ava').ExecutionContext, path: string): Promise<LogLine> {
  const { serverLog } = t.context as World;
  return waitFor(() => serverLog.access().find((l) => l.path === path), { what: `west's access-log line of ${path}`, timeoutMs: 20_000 });
}

test.serial('allowed by cluster: a caller from east passes an ALLOW for east; an ALLOW for west alone denies it (403, logged, counted)', async (t) => {
  await policy(t, 'from-east', 'allow', [{ clusters: ['east'] }]);
  const ok = await call(t, 'productpage', '/cluster-allowed');
  t.is(ok.status, 200);
  t.is(ok.json?.peer, spiffe('default', 'productpage'));
  t.is(ok.json?.peerCluster, 'east');
  const allowedLine = await inboundLine(t, '/cluster-allowed');
  t.is(allowedLine.source_cluster, 'east');
  t.is(allowedLine.upstream_cluster, 'west');
  t.is(allowedLine.response_code, 200);

  await policy(t, 'from-west-only', 'allow', [{ clusters: ['west'] }]);
  const denied = await call(t, 'productpage', '/cluster-denied');
  t.is(denied.status, 403);
  t.is(denied.headers['x-causeway-error'], 'CW_PROXY_AUTHZ_DENIED');
  const line = await inboundLine(t, '/cluster-denied');
  t.is(line.response_code, 403);
  t.is(line.response_code_details, 'rbac_access_denied_matched_policy[none]');
  t.is(line.source_cluster, 'east');
  t.is(line.source_principal, spiffe('default', 'productpage'));
  t.true((await metricValue((t.context as World).server.sidecar, 'causeway_sidecar_authorization_denials_total', { policy: 'no-allow-matched', source_cluster: 'east' })) >= 1);
});

test.serial('allowed by identity: productpage from east passes, ratings from the same cluster and namespace is denied', async (t) => {
  await policy(t, 'only-productpage', 'allow', [{ identities: [spiffe('default', 'productpage')] }]);
  t.is((await call(t, 'productpage', '/identity-allowed')).status, 200);
  t.is((await call(t, 'ratings', '/identity-denied')).status, 403);
  const line = await inboundLine(t, '/identity-denied');
  t.is(line.source_principal, spiffe('default', 'ratings'));
  t.is(line.response_code_details, 'rbac_access_denied_matched_policy[none]');
});

test.serial('allowed by namespace: callers of namespace default pass an ALLOW for it, and are denied by an ALLOW for another namespace', async (t) => {
  await policy(t, 'ns-default', 'allow', [{ namespaces: ['default'] }]);
  t.is((await call(t, 'ratings', '/namespace-allowed')).status, 200);
  await policy(t, 'ns-other', 'allow', [{ namespaces: ['other'] }]);
  t.is((await call(t, 'ratings', '/namespace-denied')).status, 403);
});

test.serial('denied by a DENY naming the caller\'s cluster and identity together; the other identity still passes', async (t) => {
  await policy(t, 'deny-east-productpage', 'deny', [{ clusters: ['east'], identities: [spiffe('default', 'productpage')] }]);
  t.is((await call(t, 'productpage', '/deny-matched')).status, 403);
  const line = await inboundLine(t, '/deny-matched');
  t.is(line.response_code_details, 'rbac_access_denied_matched_policy[default/deny-east-productpage]');
  t.is((await call(t, 'ratings', '/deny-not-matched')).status, 200);
  t.true((await metricValue((t.context as World).server.sidecar, 'causeway_sidecar_authorization_denials_total', { policy: 'default/deny-east-productpage', source_cluster: 'east' })) >= 1);
});
