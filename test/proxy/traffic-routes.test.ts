import test, { type ExecutionContext } from 'ava';
import { connect } from 'node:net';
import { TrafficPolicy, type SnapshotTarget } from '../../mesh/index.js';
import { StaticSnapshotSource } from '../../proxy/index.js';
import { createMeshPki, type MeshPki } from './helpers/pki.js';
import { endpointTarget, gatewayTarget, get, metricValue, service, snapshot, startEchoApp, startTestSidecar, type TestSidecar } from './helpers/mesh.js';
import { waitFor } from '../../testkit/ports.js';

// Traffic policy routes through real sidecars (mTLS, real sockets); snapshots are fed by
// hand (StaticSnapshotSource), as in routing.test.ts.
let pki: MeshPki;
test.before(async () => {
  pki = await createMeshPki();
});

const subsets = { v1: { version: 'v1' }, v2: { version: 'v2' } };

async function server(t: ExecutionContext, name: string, options: { status?: number; delayMs?: number; labels?: Record<string, string>; cluster?: string } = {}) {
  const cluster = options.cluster ?? 'east';
  const app = await startEchoApp(name, { status: options.status, delayMs: options.delayMs });
  t.teardown(() => app.close());
  const sc = await startTestSidecar({
    cluster,
    service: 'reviews',
    serviceAccount: 'reviews',
    pki,
    ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }],
    config: options.labels ? { labels: options.labels } : {},
  });
  t.teardown(() => sc.close());
  // A server checks an SNI's subset against the service's subsets in its own snapshot.
  (sc.source as StaticSnapshotSource).push(snapshot(cluster, [service('reviews', [], { subsets })]));
  const target = cluster === 'east' ? endpointTarget('east', sc.sidecar.inboundPort, { labels: options.labels ?? {} }) : gatewayTarget(cluster, '127.0.0.1', sc.sidecar.inboundPort, { priority: 1 });
  return { app, sc, target };
}

async function client(t: ExecutionContext, targets: SnapshotTarget[], policy: Record<string, unknown>): Promise<{ sc: TestSidecar; address: string }> {
  const source = new StaticSnapshotSource();
  const sc = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source });
  t.teardown(() => sc.close());
  source.push(snapshot('east', [service('reviews', targets, { subsets })], { traffic: [TrafficPolicy.parse({ schema: 1, name: 'reviews', namespace: 'default', service: 'reviews', ...policy })] }));
  await sc.sidecar.settled();
  return { sc, address: sc.sidecar.outbound.lookup('default', 'reviews')!.address };
}

/** An HTTP/1.0 request: the fast path hands it to Node's HTTP server, which routes it under the same policy. */
function http10(address: string, headers: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(9080, address, () => socket.write(`GET / HTTP/1.0\r\nhost: reviews\r\n${headers}\r\n`));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.once('end', () => resolve(Buffer.concat(chunks).toString()));
    socket.once('error', reject);
  });
}

async function answeredBy(address: string, n: number, options: Parameters<typeof get>[3] & { path?: string } = {}): Promise<Map<string, number>> {
  const apps = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const res = await get(address, 9080, options.path ?? '/', options);
    const app = res.status === 200 ? String(res.json?.app) : `status ${res.status}`;
    apps.set(app, (apps.get(app) ?? 0) + 1);
  }
  return apps;
}

test('routes: x-canary: 1 goes to v2 only, other requests to v1; path prefix, exact path and method pick their routes', async (t) => {
  const v1 = await server(t, 'v1', { labels: { version: 'v1' } });
  const v2 = await server(t, 'v2', { labels: { version: 'v2' } });
  const c = await client(t, [v1.target, v2.target], {
    split: [{ subset: 'v1', weight: 1 }],
    routes: [
      { name: 'canary', match: { headers: [{ name: 'X-Canary', exact: '1' }] }, subset: 'v2' },
      { name: 'v2-writes', match: { path: { prefix: '/api/' }, method: 'POST' }, subset: 'v2' },
      { name: 'v2-page', match: { path: { exact: '/new' } }, subset: 'v2' },
      { name: 'beta-users', match: { headers: [{ name: 'x-user', regex: 'beta-[0-9]+' }] }, split: [{ subset: 'v2', weight: 1 }] },
    ],
  });
  t.deepEqual([...(await answeredBy(c.address, 20, { headers: { 'x-canary': '1' } }))], [['v2', 20]]);
  t.deepEqual([...(await answeredBy(c.address, 20))], [['v1', 20]]);
  t.deepEqual([...(await answeredBy(c.address, 5, { headers: { 'x-canary': '0' } }))], [['v1', 5]]);
  t.deepEqual([...(await answeredBy(c.address, 5, { path: '/api/items', method: 'POST', body: '{}' }))], [['v2', 5]]);
  t.deepEqual([...(await answeredBy(c.address, 5, { path: '/api/items' }))], [['v1', 5]], 'GET is not the route of POST');
  t.deepEqual([...(await answeredBy(c.address, 5, { path: '/new?x=1' }))], [['v2', 5]]);
  t.deepEqual([...(await answeredBy(c.address, 5, { path: '/newer' }))], [['v1', 5]], 'exact is exact');
  t.deepEqual([...(await answeredBy(c.address, 5, { headers: { 'x-user': 'beta-17' } }))], [['v2', 5]]);
  t.deepEqual([...(await answeredBy(c.address, 5, { headers: { 'x-user': 'beta-17x' } }))], [['v1', 5]]);
  // Node's server path (an HTTP/1.0 request) takes the same routes.
  t.regex(await http10(c.address, 'X-Canary: 1\r\n'), /^HTTP\/1\.[01] 200[\s\S]*"app":"v2"/);
  t.regex(await http10(c.address, ''), /^HTTP\/1\.[01] 200[\s\S]*"app":"v1"/);
});

test("a route's timeout cuts a slow upstream at its value with a 504, across retries", async (t) => {
  const slow = await server(t, 'slow', { delayMs: 5_000 });
  const slower = await server(t, 'slower', { delayMs: 5_000 });
  const c = await client(t, [slow.target, slower.target], { routes: [{ name: 'bounded', timeoutMs: 1_000, retries: { attempts: 1, perTryTimeoutMs: 700 } }] });
  const started = performance.now();
  const res = await get(c.address, 9080);
  const elapsed = performance.now() - started;
  t.is(res.status, 504, res.body);
  t.is(res.headers['x-causeway-error'], 'CW_PROXY_ROUTE_TIMEOUT');
  t.regex(res.body, /no response within the route bounded's timeout of 1000 ms \(\d retries made\)/);
  // Not before the timeout; not much after it (loose: the machine is shared and noisy).
  t.true(elapsed >= 990 && elapsed < 3_500, `answered after ${Math.round(elapsed)} ms`);
  // The per-try timeout (700 ms, counted from the request being sent) normally moves the GET to
  // the other target before the route's timeout, which then cuts the second try; slow connects on a
  // busy machine may leave no time for it.
  t.true(slow.app.hits() + slower.app.hits() >= 1);
});

test('retries on 503 go to another host each time and stop at attempts; a POST is not retried', async (t) => {
  const failing = await Promise.all(['a', 'b', 'c', 'd'].map((name) => server(t, name, { status: 503 })));
  const c = await client(t, failing.map((s) => s.target), { routes: [{ name: 'retry-503', retries: { attempts: 2, on: ['retriable-status-codes'], retriableStatusCodes: [503] } }] });
  const res = await get(c.address, 9080);
  t.is(res.status, 503, 'the last answer goes to the app');
  const hits = failing.map((s) => s.app.hits());
  t.is(hits.reduce((a, b) => a + b, 0), 3, 'one try and 2 retries');
  t.true(hits.every((h) => h <= 1), `each try on another host: ${hits.join(',')}`);
  t.is(await metricValue(c.sc.sidecar, 'causeway_sidecar_http_retries_total', { route: 'retry-503', reason: 'response' }), 2);

  const post = await get(c.address, 9080, '/', { method: 'POST', body: 'x' });
  t.is(post.status, 503);
  t.is(failing.reduce((sum, s) => sum + s.app.hits(), 0), 4, 'a non-idempotent request is not replayed after the app saw it');

  // One host recovers: a GET reaches it within its tries (whichever host is tried first).
  failing[0]!.app.setStatus(200);
  failing[1]!.app.setStatus(200);
  failing[2]!.app.setStatus(200);
  t.is((await get(c.address, 9080)).status, 200);
});

test('the retry budget stops a retry storm: many failing requests at once retry only within 20 % of those in flight', async (t) => {
  const failing = await Promise.all(['a', 'b', 'c'].map((name) => server(t, name, { status: 503, delayMs: 300 })));
  const c = await client(t, failing.map((s) => s.target), { routes: [{ name: 'storm', retries: { attempts: 2, on: ['5xx'] } }] });
  const n = 60;
  const statuses = await Promise.all(Array.from({ length: n }, () => get(c.address, 9080).then((r) => r.status)));
  t.deepEqual(new Set(statuses), new Set([503]));
  const retries = await metricValue(c.sc.sidecar, 'causeway_sidecar_http_retries_total', { route: 'storm' });
  const refused = await metricValue(c.sc.sidecar, 'causeway_sidecar_http_retry_budget_exhausted_total', { route: 'storm' });
  const hits = failing.reduce((sum, s) => sum + s.app.hits(), 0);
  // Without a budget: 2 retries each, 120. With it: about 20 % of 60 in flight, each up to 2 retries.
  t.true(retries >= 1 && retries <= 40, `retries: ${retries}`);
  t.true(refused >= n / 2, `retries refused by the budget: ${refused}`);
  t.is(hits, n + retries, 'the apps saw the first tries and the budgeted retries, nothing more');
});

test("a route's rate limit answers 429 past its budget, counts it, and lets requests through again after the refill", async (t) => {
  const s = await server(t, 'limited');
  const c = await client(t, [s.target], { routes: [{ name: 'limited', match: { path: { prefix: '/limited' } }, rateLimit: { requestsPerSecond: 1, burst: 2 } }] });
  // At once, so that the refill (1 a second) adds little while they arrive.
  const answers = await Promise.all(Array.from({ length: 8 }, () => get(c.address, 9080, '/limited')));
  const passed = answers.filter((a) => a.status === 200).length;
  const limited = answers.filter((a) => a.status === 429);
  t.is(passed + limited.length, 8, answers.map((a) => a.status).join(','));
  t.true(passed >= 2 && limited.length >= 3, `${passed} passed, ${limited.length} limited`);
  t.is(limited[0]!.headers['x-causeway-error'], 'CW_PROXY_RATE_LIMITED');
  t.regex(limited[0]!.body, /route limited is over its rate limit \(1 requests\/s, burst 2\)/);
  t.is(await metricValue(c.sc.sidecar, 'causeway_sidecar_rate_limited_total', { destination_service: 'reviews.default', route: 'limited' }), limited.length);
  t.is(s.app.hits(), passed, 'a refused request never reaches the app');
  t.deepEqual([...(await answeredBy(c.address, 10, { path: '/other' }))], [['limited', 10]], 'other routes are not limited');
  await waitFor(async () => (await get(c.address, 9080, '/limited')).status === 200, { what: 'a token after the refill', timeoutMs: 10_000 });
});

test("Node's server path (HTTP/1.0) keeps a route's timeout and retries 503 on another host", async (t) => {
  const failing = await Promise.all(['a', 'b', 'c'].map((name) => server(t, name, { status: 503 })));
  const c = await client(t, failing.map((s) => s.target), { routes: [{ name: 'retry-503', retries: { attempts: 1 } }] });
  t.regex(await http10(c.address, ''), /^HTTP\/1\.[01] 503/);
  const hits = failing.map((s) => s.app.hits());
  t.deepEqual([...hits].sort(), [0, 1, 1], 'one try and one retry, on two hosts (503 is retried by default)');

  const slow = await server(t, 'slow', { delayMs: 5_000 });
  const timed = await client(t, [slow.target], { routes: [{ name: 'bounded', timeoutMs: 800 }] });
  const started = performance.now();
  const answer = await http10(timed.address, '');
  const elapsed = performance.now() - started;
  t.regex(answer, /^HTTP\/1\.[01] 504[\s\S]*x-causeway-error: CW_PROXY_ROUTE_TIMEOUT/i);
  t.true(elapsed >= 790 && elapsed < 3_500, `answered after ${Math.round(elapsed)} ms`);
});

test('with the default policy, endpoints answering 503 are retried elsewhere and ejected after 5 in a row; with all of the local cluster ejected, traffic fails over to the next cluster', async (t) => {
  const a = await server(t, 'east-a', { status: 503 });
  const b = await server(t, 'east-b', { status: 503 });
  const west = await server(t, 'west', { cluster: 'west' });
  const source = new StaticSnapshotSource();
  const sc = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source });
  t.teardown(() => sc.close());
  source.push(snapshot('east', [service('reviews', [a.target, b.target, west.target])]));
  await sc.sidecar.settled();
  const address = sc.sidecar.outbound.lookup('default', 'reviews')!.address;
  const ejections = () => metricValue(sc.sidecar, 'causeway_sidecar_outlier_ejections_total', { destination_cluster: 'east', reason: 'http-5xx' });
  const statuses = new Set<number>();
  await waitFor(async () => {
    statuses.add((await get(address, 9080)).status);
    return (await ejections()) >= 2;
  }, { what: 'both east endpoints ejected', timeoutMs: 30_000 });
  t.deepEqual(statuses, new Set([200]), "503s are retried (Istio's default) on the next target, in the end west");
  const eastHits = a.app.hits() + b.app.hits();
  t.true(eastHits >= 10, `5 failures in a row eject each: ${eastHits}`);
  t.deepEqual([...(await answeredBy(address, 10))], [['west', 10]]);
  t.is(a.app.hits() + b.app.hits(), eastHits, 'ejected endpoints get nothing while west answers');
});
