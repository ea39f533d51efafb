import test from 'ava';
import { createSocket } from 'node:dgram';
import { connect as tcpConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { OutlierDetector, pickSubset, planTargets } from '../../proxy/index.js';
import { createMeshPki, type MeshPki } from './helpers/pki.js';
import { endpointTarget, gatewayTarget, get, metricValue, service, snapshot, startPair, startTestSidecar } from './helpers/mesh.js';

let pki: MeshPki;
test.before(async () => {
  pki = await createMeshPki();
});

function send(port: number, host: string, bytes: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const s = tcpConnect(port, host, () => s.end(bytes));
    // Some listeners rightly wait for the rest of a length-prefixed message; do not wait for them.
    const timer = setTimeout(() => s.destroy(), 200);
    s.on('error', () => resolve());
    s.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
    s.resume();
  });
}

test('garbage on every listener (inbound TLS, outbound HTTP, DNS over UDP and TCP, bad SNI) never takes the sidecar down', async (t) => {
  const { app, server, client, source } = await startPair(t, pki);
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort)])]));
  await client.sidecar.settled();
  const address = client.sidecar.outbound.lookup('default', 'reviews')!.address;

  const junk = [Buffer.from('\x16\x03\x01\x00\x05hello'), Buffer.alloc(4096, 0xff), Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.from('\x16\x03\x03\xff\xff')];
  for (const bytes of junk) {
    await send(server.sidecar.inboundPort, '127.0.0.1', bytes);
    await send(9080, address, bytes);
    await send(client.sidecar.dnsPort, '127.0.0.1', bytes);
    await new Promise<void>((resolve) => {
      const u = createSocket('udp4');
      u.send(bytes, client.sidecar.dnsPort, '127.0.0.1', () => {
        u.close();
        resolve();
      });
    });
  }
  // A valid certificate but an SNI that does not parse, or names another workload.
  for (const servername of ['not-a-mesh-name', '9080.all.ratings.default.east.cw1.causeway.internal', '9080.all.reviews.default.west.cw1.causeway.internal']) {
    await new Promise<void>((resolve) => {
      const s = tlsConnect({ port: server.sidecar.inboundPort, host: '127.0.0.1', servername, secureContext: client.identity.secureContext, checkServerIdentity: () => undefined });
      s.on('secureConnect', () => s.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n'));
      s.on('error', () => resolve());
      s.on('close', () => resolve());
    });
  }
  t.true((await metricValue(server.sidecar, 'causeway_sidecar_inbound_refused_total', { reason: 'bad_sni' })) >= 1);
  t.true((await metricValue(server.sidecar, 'causeway_sidecar_inbound_refused_total', { reason: 'sni_not_this_workload' })) >= 2);
  t.is(app.hits(), 0);
  const res = await get(address, 9080);
  t.is(res.status, 200);
  t.true((await metricValue(server.sidecar, 'causeway_sidecar_certificate_expiry_timestamp_seconds')) > Date.now() / 1000);
});

test('planTargets: unhealthy, stale and zero-weight targets never; priority groups in order; failoverOrder overrides; ejected go last', (t) => {
  const outliers = new OutlierDetector({ consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 10_000 });
  const svc = service('reviews', [
    endpointTarget('east', 1),
    endpointTarget('east', 2, { healthy: false }),
    gatewayTarget('west', '127.0.0.1', 3, { priority: 1 }),
    gatewayTarget('south', '127.0.0.1', 4, { priority: 2 }),
    gatewayTarget('north', '127.0.0.1', 5, { priority: 1, stale: true }),
    gatewayTarget('mid', '127.0.0.1', 6, { priority: 1, weight: 0 }),
  ]);
  t.deepEqual(planTargets(svc, outliers).map((x) => x.port), [1, 3, 4]);
  const policy = { schema: 1 as const, name: 'p', namespace: 'default', service: 'reviews', failoverOrder: ['south'] };
  t.deepEqual(planTargets(svc, outliers, { policy }).map((x) => x.port), [4, 1, 3]);
  t.deepEqual(planTargets(svc, outliers, { pinnedCluster: 'west' }).map((x) => x.port), [3]);
  outliers.failure('127.0.0.1:1', 'connect');
  t.deepEqual(planTargets(svc, outliers).map((x) => x.port), [3, 4, 1]);
  // Weighted: a gateway fronting 9 healthy endpoints wins most first picks against one with 1.
  const weighted = service('reviews', [gatewayTarget('a', '127.0.0.1', 10, { weight: 9 }), gatewayTarget('b', '127.0.0.1', 11, { weight: 1 })]);
  let firstA = 0;
  for (let i = 0; i < 1000; i++) if (planTargets(weighted, outliers)[0]!.port === 10) firstA++;
  t.true(firstA > 800 && firstA < 980);
});

test('pickSubset: by weight, never a weight of 0, none without a split; planTargets keeps a subset to its labelled endpoints', (t) => {
  const split = [{ subset: 'v1', weight: 3 }, { subset: 'off', weight: 0 }, { subset: 'v2', weight: 1 }];
  t.is(pickSubset(undefined), undefined);
  // The random point walks the weights in order: [0, 0.75) v1, [0.75, 1) v2.
  t.is(pickSubset(split, () => 0), 'v1');
  t.is(pickSubset(split, () => 0.7499), 'v1');
  t.is(pickSubset(split, () => 0.75), 'v2');
  t.is(pickSubset(split, () => 0.9999999), 'v2');
  const counts = new Map<string | undefined, number>();
  for (let i = 0; i < 4000; i++) {
    const s = pickSubset(split);
    counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  t.is(counts.get('off'), undefined);
  t.true(counts.get('v1')! > 2700 && counts.get('v1')! < 3300, JSON.stringify([...counts]));

  const outliers = new OutlierDetector({ consecutiveFailures: 3, baseEjectionMs: 1000, maxEjectionMs: 10_000 });
  const svc = service('reviews', [endpointTarget('east', 1, { labels: { version: 'v1' } }), endpointTarget('east', 2, { labels: { version: 'v2' } }), gatewayTarget('west', '127.0.0.1', 3)], {
    subsets: { v1: { version: 'v1' }, v2: { version: 'v2' } },
  });
  // Gateways stay: the subset travels in the SNI and the remote side picks its endpoints.
  t.deepEqual(planTargets(svc, outliers, { subset: 'v2' }).map((x) => x.port), [2, 3]);
});

test('circuit breaker: past maxConnections to a service, new connections are refused at once and counted', async (t) => {
  const { app, server, client, source } = await startPair(t, pki);
  void app;
  const limited = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source, config: { sidecar: { circuit: { maxConnections: 1, maxPendingConnects: 10 } } } });
  t.teardown(() => limited.close());
  void client;
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort)], { ports: [{ name: 'tcp', port: 9080, protocol: 'tcp' }] })]));
  await limited.sidecar.settled();
  const address = limited.sidecar.outbound.lookup('default', 'reviews')!.address;
  const first = tcpConnect(9080, address);
  t.teardown(() => first.destroy());
  first.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
  await new Promise((resolve) => first.once('data', resolve));
  const second = tcpConnect(9080, address);
  const closed = await new Promise<boolean>((resolve) => {
    second.on('data', () => resolve(false));
    second.on('close', () => resolve(true));
    second.on('error', () => resolve(true));
  });
  t.true(closed);
  t.true((await metricValue(limited.sidecar, 'causeway_sidecar_connections_total', { result: 'CW_PROXY_CIRCUIT_OPEN' })) >= 1);
});

test('DNS junk that makes dns2 parse for seconds is dropped before parsing (regression: 4 KiB of 0xff blocked the loop ~13 s)', async (t) => {
  const { plausibleQuery } = await import('../../proxy/mesh-dns.js');
  t.false(plausibleQuery(Buffer.alloc(4096, 0xff)));
  t.false(plausibleQuery(Buffer.from('GET / HTTP/1.1\r\n\r\n')));
  const dns2 = (await import('dns2')).default;
  const query = new (dns2.Packet as unknown as new () => { header: { id: number; rd: number }; questions: unknown[]; toBuffer(): Buffer })();
  query.header.id = 7;
  query.questions.push({ name: 'reviews.default.svc.causeway.internal', type: 1, class: 1 });
  t.true(plausibleQuery(query.toBuffer()));
});
