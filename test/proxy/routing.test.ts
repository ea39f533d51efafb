import test from 'ava';
import { connect as tcpConnect, createServer, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { decodeProxyV2, PP2_TYPE_CAUSEWAY_CLUSTER, PP2_TYPE_CAUSEWAY_SPIFFE_ID, StaticSnapshotSource } from '../../proxy/index.js';
import { createMeshPki, type MeshPki } from './helpers/pki.js';
import { endpointTarget, gatewayTarget, get, load, metricValue, service, snapshot, spiffe, startEchoApp, startTcpEchoApp, startTestSidecar, type TestSidecar } from './helpers/mesh.js'
import { freePort, waitFor } from '../../testkit/ports.js';

// Snapshots are fed by hand here (StaticSnapshotSource). A "gateway" target points
// straight at the remote sidecar's inbound port: a real gateway forwards the same bytes
// (SNI passthrough), so the sidecars cannot tell the difference; the multi-cluster test
// runs the real gateway.
let pki: MeshPki;
test.before(async () => {
  pki = await createMeshPki();
});

async function server(t: import('ava').ExecutionContext, cluster: string, name: string, options: { sa?: string; status?: number; mtlsMode?: 'strict' | 'permissive'; labels?: Record<string, string> } = {}) {
  const app = await startEchoApp(`${name}-${cluster}`, { status: options.status });
  t.teardown(() => app.close());
  const sc = await startTestSidecar({
    cluster,
    service: 'reviews',
    serviceAccount: options.sa ?? 'reviews',
    pki,
    ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }],
    config: { ...(options.mtlsMode ? { mtlsMode: options.mtlsMode } : {}), ...(options.labels ? { labels: options.labels } : {}) },
  });
  t.teardown(() => sc.close());
  return { app, sc };
}

async function client(t: import('ava').ExecutionContext, cluster = 'east') {
  const source = new StaticSnapshotSource();
  const sc = await startTestSidecar({ cluster, service: 'productpage', pki, source });
  t.teardown(() => sc.close());
  return { sc, source: source as StaticSnapshotSource };
}

async function addressOf(c: TestSidecar, svc = 'reviews') {
  await c.sidecar.settled();
  return c.sidecar.outbound.lookup('default', svc)!.address;
}



test('local endpoints are preferred; killing them moves traffic to the next cluster with zero failed requests', async (t) => {
  const east = await server(t, 'east', 'reviews');
  const west = await server(t, 'west', 'reviews');
  const c = await client(t);
  c.source.push(
    snapshot('east', [
      service('reviews', [
        endpointTarget('east', east.sc.sidecar.inboundPort, { identity: east.sc.spiffeId }),
        gatewayTarget('west', '127.0.0.1', west.sc.sidecar.inboundPort, { priority: 1, weight: 1 }),
      ]),
    ]),
  );
  const address = await addressOf(c.sc);
  const run = load(address);
  await waitFor(() => run.ok() >= 30, { what: 'some traffic', timeoutMs: 20_000 });
  t.is(run.apps.get('reviews-west'), undefined, 'a service in both clusters is served locally');
  const before = run.ok();
  await east.sc.close(); // the local endpoint dies (its sockets are destroyed)
  await waitFor(() => (run.apps.get('reviews-west') ?? 0) >= 30 && run.ok() > before + 30, { what: 'traffic in west', timeoutMs: 20_000 });
  await run.stop();
  t.deepEqual(run.failures, []);
  t.true((await metricValue(c.sc.sidecar, 'causeway_sidecar_http_requests_total', { destination_cluster: 'west', code: '200' })) >= 30);
});

test('failover skips a dead gateway to the next priority (region) and honours failoverOrder', async (t) => {
  const west = await server(t, 'west', 'reviews');
  const south = await server(t, 'south', 'reviews');
  const c = await client(t);
  c.source.push(
    snapshot('east', [
      service('reviews', [
        gatewayTarget('west', '127.0.0.1', west.sc.sidecar.inboundPort, { priority: 1 }),
        gatewayTarget('south', '127.0.0.1', south.sc.sidecar.inboundPort, { priority: 2 }),
      ]),
    ]),
  );
  const address = await addressOf(c.sc);
  const run = load(address, { workers: 3 });
  await waitFor(() => run.ok() >= 20, { what: 'traffic', timeoutMs: 20_000 });
  t.is(run.apps.get('reviews-south'), undefined);
  await west.sc.close();
  await waitFor(() => (run.apps.get('reviews-south') ?? 0) >= 20, { what: 'traffic in south', timeoutMs: 20_000 });
  await run.stop();
  t.deepEqual(run.failures, []);

  // A traffic policy's failoverOrder overrides locality priority.
  const west2 = await server(t, 'west', 'reviews');
  c.source.push(
    snapshot('east', [
      service('reviews', [
        gatewayTarget('west', '127.0.0.1', west2.sc.sidecar.inboundPort, { priority: 1 }),
        gatewayTarget('south', '127.0.0.1', south.sc.sidecar.inboundPort, { priority: 2 }),
      ]),
    ], { traffic: [{ schema: 1, name: 'prefer-south', namespace: 'default', service: 'reviews', failoverOrder: ['south', 'west'] }] }),
  );
  await c.sc.sidecar.settled();
  for (let i = 0; i < 10; i++) t.is((await get(address, 9080)).json?.app, 'reviews-south');
});

test("a traffic policy's split sends requests to subsets by weight, locally and through a gateway, where the server's labels are checked", async (t) => {
  const subsets = { v1: { version: 'v1' }, v2: { version: 'v2' } };
  const v1 = await server(t, 'east', 'reviews-v1', { labels: { version: 'v1' } });
  const v2 = await server(t, 'east', 'reviews-v2', { labels: { version: 'v2' } });
  const westV2 = await server(t, 'west', 'reviews-v2', { labels: { version: 'v2' } });
  // Inbound checks an SNI's subset against the service's subsets in its own snapshot.
  for (const s of [v1, v2, westV2]) (s.sc.source as StaticSnapshotSource).push(snapshot(s.sc.sidecar.config.cluster, [service('reviews', [], { subsets })]));
  const local = [endpointTarget('east', v1.sc.sidecar.inboundPort, { labels: { version: 'v1' } }), endpointTarget('east', v2.sc.sidecar.inboundPort, { labels: { version: 'v2' } })];
  const split = (weights: Record<string, number>, targets = local) =>
    snapshot('east', [service('reviews', targets, { subsets })], {
      traffic: [{ schema: 1, name: 'canary', namespace: 'default', service: 'reviews', split: Object.entries(weights).map(([subset, weight]) => ({ subset, weight })) }],
    });
  const c = await client(t);
  c.source.push(split({ v2: 1 }));
  const address = await addressOf(c.sc);
  const answeredBy = async (n: number) => {
    const apps = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const res = await get(address, 9080);
      t.is(res.status, 200, res.body);
      const app = String(res.json?.app);
      apps.set(app, (apps.get(app) ?? 0) + 1);
    }
    return apps;
  };
  t.deepEqual([...(await answeredBy(20)).keys()], ['reviews-v2-east'], 'all to v2');

  c.source.push(split({ v1: 1, v2: 1 }));
  await c.sc.sidecar.settled();
  const even = await answeredBy(80);
  // 80 requests at 50 %: each side gets 40 ± a wide margin (P(< 20) is about 1e-5).
  t.true((even.get('reviews-v1-east') ?? 0) >= 20 && (even.get('reviews-v2-east') ?? 0) >= 20, JSON.stringify([...even]));

  c.source.push(split({ v1: 0, v2: 5 }));
  await c.sc.sidecar.settled();
  t.deepEqual([...(await answeredBy(10)).keys()], ['reviews-v2-east'], 'weight 0 is never chosen');

  // v2 only in west: the split reaches it through the gateway (the subset rides in the
  // SNI, and west's inbound accepts it because its labels match).
  c.source.push(split({ v2: 1 }, [local[0]!, gatewayTarget('west', '127.0.0.1', westV2.sc.sidecar.inboundPort, { priority: 1 })]));
  await c.sc.sidecar.settled();
  t.deepEqual([...(await answeredBy(10)).keys()], ['reviews-v2-west']);

  // A server whose own labels are not the SNI's subset (here: listed with labels it does not
  // carry) refuses the connection, and it is counted.
  c.source.push(split({ v2: 1 }, [endpointTarget('east', v1.sc.sidecar.inboundPort, { labels: { version: 'v2' } })]));
  await c.sc.sidecar.settled();
  t.not((await get(address, 9080)).status, 200);
  t.true((await metricValue(v1.sc.sidecar, 'causeway_sidecar_inbound_refused_total', { reason: 'subset_mismatch' })) >= 1);

  // A split naming a subset the service does not define: refused with the reason.
  c.source.push(split({ v3: 1 }));
  await c.sc.sidecar.settled();
  const unknown = await get(address, 9080);
  t.is(unknown.status, 503);
  t.regex(unknown.body, /subset v3, which the service does not define \(it has: v1, v2\)/);
});

test('outlier detection ejects an endpoint answering 5xx', async (t) => {
  const good = await server(t, 'east', 'reviews');
  const bad = await server(t, 'east', 'reviews', { status: 503 });
  const c = await client(t);
  c.source.push(
    snapshot('east', [service('reviews', [endpointTarget('east', good.sc.sidecar.inboundPort), endpointTarget('east', bad.sc.sidecar.inboundPort)])]),
  );
  const address = await addressOf(c.sc);
  await waitFor(async () => {
    await get(address, 9080);
    return (await metricValue(c.sc.sidecar, 'causeway_sidecar_outlier_ejections_total')) >= 1;
  }, { what: 'an ejection', timeoutMs: 20_000 });
  const statuses = await Promise.all(Array.from({ length: 20 }, () => get(address, 9080).then((r) => r.status)));
  t.deepEqual(new Set(statuses), new Set([200]));
  t.true((await metricValue(c.sc.sidecar, 'causeway_sidecar_outlier_ejections_total', { destination_cluster: 'east', kind: 'endpoint', reason: 'http-5xx' })) >= 1, 'counted with what was ejected');
});

test('a remote gateway where nothing listens is ejected for at most gatewayMaxEjectionMs, and its outlier state goes while its cluster is stale (a returning region starts clean)', async (t) => {
  const south = await server(t, 'south', 'reviews');
  const source = new StaticSnapshotSource();
  const sc = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source, config: { sidecar: { outlier: { baseEjectionMs: 1000, gatewayMaxEjectionMs: 300 } } } });
  t.teardown(() => sc.close());
  const closed = await freePort();
  const targets = (westStale: boolean) => [
    gatewayTarget('west', '127.0.0.1', closed, { priority: 1, stale: westStale, healthy: !westStale }),
    gatewayTarget('south', '127.0.0.1', south.sc.sidecar.inboundPort, { priority: 2 }),
  ];
  source.push(snapshot('east', [service('reviews', targets(false))]));
  const address = await addressOf(sc);
  const ejections = () => metricValue(sc.sidecar, 'causeway_sidecar_outlier_ejections_total', { destination_cluster: 'west', reason: 'connect' });
  const statuses = new Set<number>();
  const until = Date.now() + 2000;
  while (Date.now() < until) {
    statuses.add((await get(address, 9080)).status);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  t.deepEqual(statuses, new Set([200]), 'south answers while west is ejected');
  // Ejected for 300 ms each time instead of 1 s, then 2 s: west is tried again about every 300 ms.
  t.true((await ejections()) >= 4, `west ejected ${await ejections()} times in 2 s`);

  await waitFor(async () => {
    await get(address, 9080);
    return sc.sidecar.outbound.outliers.isEjected(`127.0.0.1:${closed}`);
  }, { what: 'west ejected' });
  source.push(snapshot('east', [service('reviews', targets(true))]));
  await sc.sidecar.settled();
  t.false(sc.sidecar.outbound.outliers.isEjected(`127.0.0.1:${closed}`), 'a stale cluster keeps no ejection for when it returns');
});

/**
 * A relay to `port` that can go silent as a partitioned path does: from then on it reads
 * and discards every byte both ways and answers nothing — no reset, no close — on the
 * connections it has and on new ones (what a peer sees when packets are dropped).
 */
async function silentRelay(port: number) {
  let silent = false;
  const sockets = new Set<Socket>();
  const relay = createServer((downstream) => {
    sockets.add(downstream);
    downstream.on('close', () => sockets.delete(downstream));
    downstream.on('error', () => undefined);
    if (silent) {
      downstream.resume();
      return;
    }
    const upstream = tcpConnect(port, '127.0.0.1');
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => downstream.destroy());
    downstream.on('data', (chunk: Buffer) => (silent ? undefined : upstream.write(chunk)));
    upstream.on('data', (chunk: Buffer) => (silent ? undefined : downstream.write(chunk)));
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  return {
    port: (relay.address() as { port: number }).port,
    silence: () => (silent = true),
    close: () => {
      for (const s of sockets) s.destroy();
      relay.close();
    },
  };
}

test("a gateway gone silent (packets dropped, no reset): GETs move to the next target after the traffic policy's requestTimeoutMs and none fails (regression: a request on a pooled connection waited for ever)", async (t) => {
  const west = await server(t, 'west', 'reviews');
  const south = await server(t, 'south', 'reviews');
  const relay = await silentRelay(west.sc.sidecar.inboundPort);
  t.teardown(() => relay.close());
  const c = await client(t);
  const timeouts = { schema: 1 as const, name: 'timeouts', namespace: 'default', service: 'reviews', connectTimeoutMs: 300, requestTimeoutMs: 300 };
  c.source.push(
    snapshot('east', [service('reviews', [gatewayTarget('west', '127.0.0.1', relay.port, { priority: 1 }), gatewayTarget('south', '127.0.0.1', south.sc.sidecar.inboundPort, { priority: 2 })])], { traffic: [timeouts] }),
  );
  const address = await addressOf(c.sc);
  const run = load(address, { workers: 3 });
  await waitFor(() => (run.apps.get('reviews-west') ?? 0) >= 20, { what: 'traffic through west', timeoutMs: 20_000 });
  t.is(run.apps.get('reviews-south'), undefined, 'west is preferred while it answers');
  relay.silence();
  await waitFor(() => (run.apps.get('reviews-south') ?? 0) >= 30, { what: 'traffic through south', timeoutMs: 20_000 });
  await run.stop();
  t.deepEqual(run.failures, []);
});

test('secure naming: a server whose SPIFFE ID the service does not allow is refused and counted', async (t) => {
  const impostor = await server(t, 'east', 'reviews', { sa: 'impostor' });
  const c = await client(t);
  c.source.push(snapshot('east', [service('reviews', [endpointTarget('east', impostor.sc.sidecar.inboundPort)])]));
  const address = await addressOf(c.sc);
  const res = await get(address, 9080);
  t.is(res.status, 503);
  t.is(res.headers['x-causeway-error'], 'CW_PROXY_SECURE_NAMING');
  t.is(impostor.app.hits(), 0);
  t.true((await metricValue(c.sc.sidecar, 'causeway_sidecar_secure_naming_refusals_total', { destination_service: 'reviews.default' })) >= 1);
});

test('authorization: deny by identity is enforced and counted; allow lists by namespace and cluster apply', async (t) => {
  const s = await server(t, 'east', 'reviews');
  const serverSource = s.sc.source as StaticSnapshotSource;
  const c = await client(t);
  c.source.push(snapshot('east', [service('reviews', [endpointTarget('east', s.sc.sidecar.inboundPort)])]));
  const address = await addressOf(c.sc);
  serverSource.push(snapshot('east', [], { authorization: [{ schema: 1, name: 'no-productpage', namespace: 'default', service: 'reviews', action: 'deny', from: [{ identities: [spiffe('default', 'productpage')] }], ports: [] }] }));
  await s.sc.sidecar.settled();
  const denied = await get(address, 9080);
  t.is(denied.status, 403);
  t.is(s.app.hits(), 0);
  t.true((await metricValue(s.sc.sidecar, 'causeway_sidecar_authorization_denials_total', { policy: 'default/no-productpage', source_cluster: 'east' })) >= 1);

  // ALLOW only callers from cluster west: east's productpage does not match.
  serverSource.push(snapshot('east', [], { authorization: [{ schema: 1, name: 'west-only', namespace: 'default', action: 'allow', from: [{ clusters: ['west'] }], ports: [] }] }));
  await s.sc.sidecar.settled();
  t.is((await get(address, 9080, '/', { agent: false })).status, 403);
  serverSource.push(snapshot('east', [], { authorization: [{ schema: 1, name: 'east-default', namespace: 'default', action: 'allow', from: [{ clusters: ['east'], namespaces: ['default'] }], ports: [] }] }));
  await s.sc.sidecar.settled();
  t.is((await get(address, 9080, '/', { agent: false })).status, 200);
});

test('TCP ports: bytes flow both ways, and PROXY v2 carries the caller SPIFFE ID and cluster to the app', async (t) => {
  const app = await startTcpEchoApp('db');
  t.teardown(() => app.close());
  const s = await startTestSidecar({ cluster: 'east', service: 'db', pki, ports: [{ name: 'tcp', port: 5432, targetPort: app.port, protocol: 'tcp' }], config: { sidecar: { proxyProtocolPorts: [app.port] } } });
  t.teardown(() => s.close());
  const c = await client(t);
  c.source.push(snapshot('east', [service('db', [endpointTarget('east', s.sidecar.inboundPort)], { ports: [{ name: 'tcp', port: 5432, protocol: 'tcp' }] })]));
  const address = await addressOf(c.sc, 'db');
  const socket = tcpConnect(5432, address);
  t.teardown(() => socket.destroy());
  socket.write('ping');
  const reply = await new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
  const header = decodeProxyV2(Buffer.from(reply.slice(3), 'latin1'));
  t.truthy(header);
  t.is(header!.tlvs.get(PP2_TYPE_CAUSEWAY_SPIFFE_ID), spiffe('default', 'productpage'));
  t.is(header!.tlvs.get(PP2_TYPE_CAUSEWAY_CLUSTER), 'east');
  t.true(reply.endsWith('ping'));
});

test('STRICT refuses plaintext and certificate-less TLS; PERMISSIVE lets them through without an identity', async (t) => {
  const strict = await server(t, 'east', 'reviews');
  const plain = await get('127.0.0.1', strict.sc.sidecar.inboundPort, '/', { agent: false }).catch((e: Error) => e);
  t.true(plain instanceof Error);
  const noCert = await new Promise<string>((resolve) => {
    const s = tlsConnect({ port: strict.sc.sidecar.inboundPort, host: '127.0.0.1', servername: '9080.all.reviews.default.east.cw1.causeway.internal', rejectUnauthorized: false });
    s.on('error', (e) => resolve(`error ${e.message}`));
    s.on('secureConnect', () => s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n'));
    s.on('close', () => resolve('closed'));
  });
  t.regex(noCert, /closed|error/);
  t.true((await metricValue(strict.sc.sidecar, 'causeway_sidecar_inbound_refused_total', { reason: 'no_client_certificate' })) >= 1);
  t.is(strict.app.hits(), 0);

  const permissive = await server(t, 'east', 'reviews', { mtlsMode: 'permissive' });
  const res = await get('127.0.0.1', permissive.sc.sidecar.inboundPort, '/', { agent: false });
  t.is(res.status, 200);
  t.is(res.json?.peer, null);
  // …and mTLS callers still get through PERMISSIVE with their identity.
  const c = await client(t);
  c.source.push(snapshot('east', [service('reviews', [endpointTarget('east', permissive.sc.sidecar.inboundPort)])]));
  const viaMesh = await get(await addressOf(c.sc), 9080);
  t.is(viaMesh.status, 200);
  t.is(viaMesh.json?.peer, spiffe('default', 'productpage'));
});

test('certificate rotation under load: new handshakes get the new certificate and no request fails', async (t) => {
  const s = await server(t, 'east', 'reviews');
  const c = await client(t);
  c.source.push(snapshot('east', [service('reviews', [endpointTarget('east', s.sc.sidecar.inboundPort)])]));
  const address = await addressOf(c.sc);
  const run = load(address);
  await waitFor(() => run.ok() >= 20, { what: 'traffic', timeoutMs: 20_000 });
  for (const side of [s.sc, c.sc]) {
    const pem = await pki.issue('east', side.spiffeId, { seconds: 7200 });
    side.identity.set({ keyPem: pem.key, chainPem: pem.chain, trustBundlePem: [pki.rootPem] });
  }
  const newServerCert = s.sc.identity.certificate!.chainPem[0]!;
  const seen = await new Promise<string>((resolve, reject) => {
    const sock = tlsConnect({ port: s.sc.sidecar.inboundPort, host: '127.0.0.1', servername: '9080.all.reviews.default.east.cw1.causeway.internal', secureContext: c.sc.identity.secureContext, checkServerIdentity: () => undefined });
    sock.on('secureConnect', () => {
      resolve(sock.getPeerX509Certificate()!.toString());
      sock.destroy();
    });
    sock.on('error', reject);
  });
  t.is(seen.trim(), newServerCert.trim());
  const after = run.ok();
  await waitFor(() => run.ok() >= after + 20, { what: 'traffic after rotation', timeoutMs: 20_000 });
  await run.stop();
  t.deepEqual(run.failures, []);
});
