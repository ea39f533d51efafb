import test from 'ava';
import { Resolver } from 'node:dns/promises';
import { createMeshPki, type MeshPki } from './helpers/pki.js';
import { connect as tcpConnect, createServer as createTcpServer, type AddressInfo } from 'node:net';
import { endpointTarget, get, metricValue, service, snapshot, spiffe, startPair, startTestSidecar } from './helpers/mesh.js';

// These tests feed snapshots by hand (StaticSnapshotSource); the discovery stream has its own test.
let pki: MeshPki;
test.before(async () => {
  pki = await createMeshPki();
});

const pair = (t: import('ava').ExecutionContext) => startPair(t, pki);

test('an app calls a mesh service by its loopback address and the server app learns the caller SPIFFE ID', async (t) => {
  const { server, client, source } = await pair(t);
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort, { identity: server.spiffeId })])]));
  await client.sidecar.settled();
  const found = client.sidecar.outbound.lookup('default', 'reviews');
  t.truthy(found);
  const res = await get(found!.address, 9080, '/hello', { method: 'POST', body: 'abc' });
  t.is(res.status, 200);
  t.is(res.json?.peer, spiffe('default', 'productpage'));
  t.is(res.json?.peerCluster, 'east');
  t.is(res.json?.body, 'abc');
  t.true((await metricValue(client.sidecar, 'causeway_sidecar_http_requests_total', { direction: 'outbound', destination_service: 'reviews.default', code: '200' })) >= 1);
  t.true((await metricValue(server.sidecar, 'causeway_sidecar_http_requests_total', { direction: 'inbound', source_service: 'productpage.default', code: '200' })) >= 1);
  // Sequential requests reuse one pooled mTLS connection rather than handshaking each time.
  for (let i = 0; i < 10; i++) t.is((await get(found!.address, 9080)).status, 200);
  t.is(await metricValue(client.sidecar, 'causeway_sidecar_upstream_connect_attempts_total', { result: 'ok' }), 1);
});

test('DNS answers mesh names with the loopback address (A, SRV, cluster-pinned), NXDOMAIN for unknown, refuses outside', async (t) => {
  const { server, client, source } = await pair(t);
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort, { identity: server.spiffeId })])]));
  await client.sidecar.settled();
  const resolver = new Resolver({ timeout: 10_000, tries: 2 });
  resolver.setServers([`127.0.0.1:${client.sidecar.dnsPort}`]);
  const [a] = await resolver.resolve4('reviews.default.svc.causeway.internal');
  t.is(a, client.sidecar.outbound.lookup('default', 'reviews')!.address);
  const [pinned] = await resolver.resolve4('reviews.default.svc.east.causeway.internal');
  t.is(pinned, client.sidecar.outbound.lookup('default', 'reviews', 'east')!.address);
  t.not(pinned, a);
  const srv = await resolver.resolveSrv('_http._tcp.reviews.default.svc.causeway.internal');
  t.deepEqual(srv.map((r) => r.port), [9080]);
  await t.throwsAsync(resolver.resolve4('ratings.default.svc.causeway.internal'), { code: 'ENOTFOUND' });
  await t.throwsAsync(resolver.resolve4('reviews.default.svc.west.causeway.internal'), { code: 'ENOTFOUND' });
  await t.throwsAsync(resolver.resolve4('example.com'), { code: 'EREFUSED' });
  // The app can use the name it got: the loopback address serves the service port.
  const res = await get(a!, 9080);
  t.is(res.json?.peer, spiffe('default', 'productpage'));
});

test('an incoming x-causeway-peer-identity header is replaced, never trusted', async (t) => {
  const { server, client, source } = await pair(t);
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort)])]));
  await client.sidecar.settled();
  const { address } = client.sidecar.outbound.lookup('default', 'reviews')!;
  const res = await new Promise<string>((resolve, reject) => {
    import('node:http').then(({ request }) => {
      const req = request({ host: address, port: 9080, path: '/', headers: { 'x-causeway-peer-identity': spiffe('default', 'admin') }, agent: false }, (r) => {
        let body = '';
        r.on('data', (c) => (body += c));
        r.on('end', () => resolve(body));
      });
      req.on('error', reject);
      req.end();
    }, reject);
  });
  t.is(JSON.parse(res).peer, spiffe('default', 'productpage'));
});

test('the optional HTTP proxy routes absolute-form requests and CONNECT tunnels to mesh services, and refuses other hosts', async (t) => {
  const { server, source } = await startPair(t, pki);
  const client = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source, config: { sidecar: { httpProxy: { host: '127.0.0.1', port: 0 } } } });
  t.teardown(() => client.close());
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort)])]));
  await client.sidecar.settled();
  const proxyPort = client.sidecar.httpProxyPort;
  const viaProxy = await get('127.0.0.1', proxyPort, 'http://reviews.default.svc.causeway.internal:9080/x?y=1', { agent: false });
  t.is(viaProxy.status, 200);
  t.is(viaProxy.json?.path, '/x?y=1');
  t.is(viaProxy.json?.peer, spiffe('default', 'productpage'));
  t.is((await get('127.0.0.1', proxyPort, 'http://www.example.com/', { agent: false })).status, 403);
  const unknown = await get('127.0.0.1', proxyPort, 'http://ratings.default:9080/', { agent: false });
  t.is(unknown.headers['x-causeway-error'], 'CW_PROXY_UNKNOWN_SERVICE');
  const tunnel = await new Promise<string>((resolve, reject) => {
    const s = tcpConnect(proxyPort, '127.0.0.1', () => s.write('CONNECT reviews.default:9080 HTTP/1.1\r\nhost: reviews.default:9080\r\n\r\n'));
    let text = '';
    s.on('data', (d: Buffer) => {
      text += d.toString();
      if (text.startsWith('HTTP/1.1 200 Connection Established\r\n\r\n') && !text.includes('GET')) {
        if (!text.includes('x-sent')) {
          text += 'x-sent';
          s.write('GET /tunnel HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n');
        }
      }
    });
    s.on('end', () => resolve(text));
    s.on('error', reject);
  });
  t.regex(tunnel, /HTTP\/1.1 200 OK[\s\S]*"path":"\/tunnel"/);
});

test('DNS forwards names outside the mesh domain to the configured upstream when outside: forward', async (t) => {
  const dns2 = (await import('dns2')).default;
  const Packet = dns2.Packet as unknown as { createResponseFromRequest(r: unknown): { answers: unknown[] }; createResourceFromQuestion(q: unknown, r: unknown): unknown; TYPE: { A: number }; CLASS: { IN: number } };
  const upstream = new dns2.UDPServer({ type: 'udp4' });
  upstream.on('request', (request: { questions: { name: string }[] }, send: (r: unknown) => void) => {
    const response = Packet.createResponseFromRequest(request);
    response.answers.push(Packet.createResourceFromQuestion({ name: request.questions[0]!.name, type: Packet.TYPE.A, class: Packet.CLASS.IN }, { ttl: 60, address: '192.0.2.7' }));
    send(response);
  });
  await new Promise<void>((resolve) => upstream.bind(0, '127.0.0.1', () => resolve()));
  t.teardown(() => upstream.close());
  const sc = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, config: { sidecar: { dns: { outside: 'forward', upstream: `127.0.0.1:${upstream.address().port}` } } } });
  t.teardown(() => sc.close());
  const resolver = new Resolver({ timeout: 10_000, tries: 2 });
  resolver.setServers([`127.0.0.1:${sc.sidecar.dnsPort}`]);
  t.deepEqual(await resolver.resolve4('www.example.com'), ['192.0.2.7']);
  t.true((await metricValue(sc.sidecar, 'causeway_sidecar_dns_queries_total', { result: 'forwarded' })) >= 1);
});

test('explicit upstreams: localhost:<localPort> reaches the service, listening before the first snapshot', async (t) => {
  const { server, source } = await startPair(t, pki);
  const { freePort } = await import('../../testkit/ports.js');
  const localPort = await freePort();
  const client = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source, config: { upstreams: [{ service: 'reviews.default', port: 9080, localPort }] } });
  t.teardown(() => client.close());
  const early = await get('127.0.0.1', localPort, '/', { agent: false }).catch((e: Error) => e);
  t.true(early instanceof Error, 'before any snapshot the connection is accepted and closed (no route yet)');
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort)])]));
  await client.sidecar.settled();
  const res = await get('127.0.0.1', localPort, '/up', { agent: false });
  t.is(res.status, 200);
  t.is(res.json?.peer, spiffe('default', 'productpage'));
});

test('a burst to a target whose handshakes fail counts each failed connect once, however many queued requests it failed', async (t) => {
  let accepted = 0;
  // Accepts TCP and closes at once: every mTLS handshake to it fails.
  const broken = createTcpServer((s) => {
    accepted++;
    s.destroy();
  });
  await new Promise<void>((r) => broken.listen(0, '127.0.0.1', r));
  t.teardown(() => broken.close());
  const { client, source } = await pair(t);
  const port = (broken.address() as AddressInfo).port;
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', port)])]));
  await client.sidecar.settled();
  const { address } = client.sidecar.outbound.lookup('default', 'reviews')!;
  const answers = await Promise.all(Array.from({ length: 16 }, () => get(address, 9080, '/', { agent: false })));
  t.true(answers.every((a) => a.status === 503), `every request answered 503 (${answers.map((a) => a.status).join(' ')})`);
  t.true(accepted > 0);
  // The requests queue at the pool: fewer connects than requests, and each counted once.
  t.true(accepted < 16, `fewer connects (${accepted}) than requests`);
  t.is(await metricValue(client.sidecar, 'causeway_sidecar_upstream_connect_attempts_total', { destination_service: 'reviews.default' }), accepted);
});
