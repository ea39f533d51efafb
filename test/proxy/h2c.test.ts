/**
 * HTTP/2 from the app on outbound ports (h2c): with prior knowledge on `http` ports, and
 * `Upgrade: h2c` on `http` and `http2` ports — real clients (node:http2, nghttp from
 * nghttp2-client, raw sockets), the client sidecar, mTLS, server sidecars and real apps.
 * Each HTTP/2 stream on an `http` port is one request under the request policy,
 * forwarded as HTTP/1.1 on the mTLS hop.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { createServer as createHttpServer, request as httpRequest } from 'node:http';
import { connect as h2connect, createServer as createH2cServer, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { connect as tcpConnect, type AddressInfo } from 'node:net';
import { promisify } from 'node:util';
import { StaticSnapshotSource } from '../../proxy/index.js';
import { captureLog, endpointTarget, gatewayTarget, jsonBody, metricValue, rawExchange, service, snapshot, spiffe, startTestSidecar, type TestSidecar } from './helpers/mesh.js';
import { createMeshPki, type MeshPki } from './helpers/pki.js';
import { waitFor } from '../../testkit/ports.js';

const run = promisify(execFile);
const H2_PREFACE_TEXT = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

let pki: MeshPki;
test.before(async () => {
  pki = await createMeshPki();
});

/** An HTTP/1.1 app that answers with what it received (headers that must not arrive included); `/trailers` answers chunked with a trailer. */
async function startApp(t: ExecutionContext, name: string, status = 200) {
  const seen: { path: string; headers: Record<string, unknown> }[] = [];
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ path: req.url!, headers: req.headers });
      if (req.url === '/trailers') {
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-digest' });
        res.write('with ');
        res.addTrailers({ 'x-digest': 'abc123' });
        res.end('trailers');
        return;
      }
      const body = JSON.stringify({ app: name, method: req.method, path: req.url, host: req.headers.host, peer: req.headers['x-causeway-peer-identity'], length: Buffer.concat(chunks).length, body: Buffer.concat(chunks).toString().slice(0, 100) });
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))));
  return { port: (server.address() as AddressInfo).port, seen };
}

/** A `reviews` server sidecar in `cluster` in front of an app; `labels` for subsets. */
async function startServer(t: ExecutionContext, cluster: string, name: string, options: { status?: number; labels?: Record<string, string> } = {}) {
  const app = await startApp(t, name, options.status);
  const sc = await startTestSidecar({ cluster, service: 'reviews', pki, ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }], config: options.labels ? { labels: options.labels } : {} });
  t.teardown(() => sc.close());
  return { app, sc };
}

async function startClient(t: ExecutionContext, options: { accessLog?: boolean } = {}) {
  const source = new StaticSnapshotSource();
  const capture = captureLog();
  const sc = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source, config: options.accessLog ? { sidecar: { accessLog: { enabled: true } } } : {}, extra: { log: capture.log } });
  t.teardown(() => sc.close());
  return { sc, source, capture };
}

async function addressOf(sc: TestSidecar, name = 'reviews'): Promise<string> {
  await sc.sidecar.settled();
  return sc.sidecar.outbound.lookup('default', name)!.address;
}

/** An HTTP/2 session with prior knowledge (node:http2), closed with the test. */
function h2(t: ExecutionContext, address: string, port = 9080): ClientHttp2Session {
  const session = h2connect(`http://${address}:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  return session;
}

interface H2Answer {
  headers: IncomingHttpHeaders;
  trailers: IncomingHttpHeaders | undefined;
  body: string;
  json: Record<string, unknown> | undefined;
}

function h2Request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: Buffer): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let responseHeaders: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | undefined;
    stream.on('response', (h) => (responseHeaders = h));
    stream.on('trailers', (h) => (trailers = h));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const text = Buffer.concat(chunks).toString();
      resolve({ headers: responseHeaders, trailers, body: text, json: jsonBody(text) });
    });
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/**
 * The client side of `Upgrade: h2c` by hand: sends `request`, reads the 101, sends the
 * preface and an empty SETTINGS frame, and collects the server's frames until stream 1
 * ends (HPACK is not decoded: frame types, stream ids and DATA are enough here).
 */
function rawUpgrade(address: string, port: number, request: string): Promise<Frame[]> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: address, port });
    const timer = setTimeout(() => (socket.destroy(), reject(new Error(`no end of stream 1; got ${JSON.stringify(buffer.toString('latin1').slice(0, 300))}`))), 20_000);
    let buffer = Buffer.alloc(0);
    let switched = false;
    const frames: Frame[] = [];
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (!switched) {
        const end = buffer.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buffer.subarray(0, end).toString('latin1');
        if (!head.startsWith('HTTP/1.1 101 ')) {
          clearTimeout(timer);
          socket.destroy();
          reject(new Error(`no 101: ${head}`));
          return;
        }
        switched = true;
        buffer = buffer.subarray(end + 4);
        socket.write(Buffer.concat([Buffer.from(H2_PREFACE_TEXT), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
      }
      while (buffer.length >= 9 && buffer.length >= 9 + buffer.readUIntBE(0, 3)) {
        const length = buffer.readUIntBE(0, 3);
        const frame = { type: buffer[3]!, flags: buffer[4]!, streamId: buffer.readUInt32BE(5) & 0x7fffffff, payload: buffer.subarray(9, 9 + length) };
        frames.push(frame);
        buffer = buffer.subarray(9 + length);
        if (frame.streamId === 1 && (frame.flags & 1) === 1) {
          clearTimeout(timer);
          // Late frames (the ACK of our SETTINGS may follow the response) are read for a moment.
          setTimeout(() => (socket.destroy(), resolve(frames)), 200);
        }
      }
    });
    socket.once('error', reject);
    socket.write(request);
  });
}

/** One HTTP/1.1 request without keep-alive; resolves with status, headers and body. */
function http1(address: string, port: number, options: { path: string; method?: string; headers?: Record<string, string>; body?: Buffer }): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: address, port, path: options.path, method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** nghttp (nghttp2-client) with `-u`: the first URI by `Upgrade: h2c`, the rest as streams on the upgraded connection; `-v` prints every frame. */
async function nghttpUpgrade(uris: string[]): Promise<string> {
  // --no-dep: no idle streams for a priority tree, so the second request is stream 3.
  const { stdout } = await run('nghttp', ['-u', '-v', '--no-dep', '-t', '20', ...uris], { timeout: 30_000 });
  return stdout;
}

/** `(stream_id=N) :status: S` lines of nghttp's frame log, as `N S`. */
function streamStatuses(log: string): string[] {
  return [...log.matchAll(/recv \(stream_id=(\d+)\) :status: (\d+)/g)].map((m) => `${m[1]} ${m[2]}`);
}

const twoEndpoints = async (t: ExecutionContext, options: { accessLog?: boolean; firstStatus?: number } = {}) => {
  const a = await startServer(t, 'east', 'reviews-a', { status: options.firstStatus });
  const b = await startServer(t, 'east', 'reviews-b');
  const client = await startClient(t, options);
  client.source.push(snapshot('east', [service('reviews', [endpointTarget('east', a.sc.sidecar.inboundPort), endpointTarget('east', b.sc.sidecar.inboundPort)])]));
  return { a, b, client, address: await addressOf(client.sc) };
};

test('prior knowledge on an http port: 100 requests on one HTTP/2 connection are spread over two endpoints, each a mesh request; HTTP/1.1 on the same port keeps the fast path', async (t) => {
  const { a, b, client, address } = await twoEndpoints(t, { accessLog: true });
  const metrics = client.sc.sidecar;
  const session = h2(t, address);
  const answers = await Promise.all(Array.from({ length: 100 }, (_, i) => h2Request(session, { ':path': `/item/${i}`, 'x-request-id': `h2-${i}` })));
  const byApp = new Map<string, number>();
  for (const answer of answers) {
    t.is(Number(answer.headers[':status']), 200, answer.body);
    t.is(answer.json?.peer, spiffe('default', 'productpage'), 'the hop to the server sidecar is mTLS with the client identity');
    byApp.set(String(answer.json?.app), (byApp.get(String(answer.json?.app)) ?? 0) + 1);
  }
  // Every stream is balanced on its own: both endpoints get a fair share (P(< 20 of 100) is about 1e-9 at 50 %).
  t.true((byApp.get('reviews-a') ?? 0) >= 20 && (byApp.get('reviews-b') ?? 0) >= 20, JSON.stringify([...byApp]));
  t.is(a.app.seen.length + b.app.seen.length, 100);
  // The app gets HTTP/1.1 with the authority as Host and no pseudo-header.
  const one = [...a.app.seen, ...b.app.seen].find((s) => s.path === '/item/7')!;
  t.is(one.headers.host, `${address}:9080`);
  t.false(Object.keys(one.headers).some((name) => name.startsWith(':')));
  t.is(await metricValue(metrics, 'causeway_sidecar_h2_sessions', { direction: 'outbound', peer: 'app' }), 1, 'one HTTP/2 session from the app');
  t.is(await metricValue(metrics, 'causeway_sidecar_app_connection_handoffs_total', { to: 'http2' }), 1);
  t.is(await metricValue(metrics, 'causeway_sidecar_http_requests_total', { direction: 'outbound', code: '200' }), 100);
  const logged = client.capture.access().filter((l) => l.protocol === 'HTTP/2');
  t.is(logged.length, 100, 'each stream has its access-log line');
  t.true(logged.some((l) => l.request_id === 'h2-7' && l.path === '/item/7'), 'the x-request-id of the stream is logged');

  // A body without a length (HTTP/2 needs none), and a response's trailers, cross.
  const posted = await h2Request(session, { ':method': 'POST', ':path': '/upload' }, Buffer.from('x'.repeat(5000)));
  t.is(posted.json?.length, 5000);
  const trailed = await h2Request(session, { ':path': '/trailers' });
  t.is(trailed.body, 'with trailers');
  t.is(trailed.trailers?.['x-digest'], 'abc123');

  // HTTP/1.1 on the same port: served on the fast path (no hand-off, no new session).
  for (let i = 0; i < 5; i++) t.is((await http1(address, 9080, { path: '/plain' })).status, 200);
  t.is(await metricValue(metrics, 'causeway_sidecar_app_connection_handoffs_total', {}), 1, 'HTTP/1.1 connections never left the fast path');
  t.is(client.capture.access().filter((l) => l.protocol === 'HTTP/1.1').length, 5);

  session.close();
  await waitFor(async () => (await metricValue(metrics, 'causeway_sidecar_h2_sessions', { direction: 'outbound', peer: 'app' })) === 0 && (await metricValue(metrics, 'causeway_sidecar_active_connections', { direction: 'outbound' })) === 0, { timeoutMs: 10_000 });
  t.pass();
});

test('an HTTP/2 stream that gets a 503 is retried on the other endpoint', async (t) => {
  const { a, client, address } = await twoEndpoints(t, { firstStatus: 503 });
  const session = h2(t, address);
  for (let i = 0; i < 20; i++) {
    const answer = await h2Request(session, { ':path': `/r/${i}` });
    t.is(Number(answer.headers[':status']), 200, answer.body);
    t.is(answer.json?.app, 'reviews-b');
  }
  t.true(a.app.seen.length >= 1, 'the failing endpoint was tried');
  t.true((await metricValue(client.sc.sidecar, 'causeway_sidecar_http_retries_total', { reason: 'response' })) >= 1);
});

test('header routing (x-canary) and failover to another cluster through a gateway work per HTTP/2 stream', async (t) => {
  const subsets = { v1: { version: 'v1' }, v2: { version: 'v2' } };
  const v1 = await startServer(t, 'east', 'reviews-v1', { labels: { version: 'v1' } });
  const v2 = await startServer(t, 'east', 'reviews-v2', { labels: { version: 'v2' } });
  const west = await startServer(t, 'west', 'reviews-west', { labels: { version: 'v1' } });
  // Inbound checks an SNI's subset against the service's subsets in its own snapshot.
  for (const s of [v1, v2, west]) (s.sc.source as StaticSnapshotSource).push(snapshot(s.sc.sidecar.config.cluster, [service('reviews', [], { subsets })]));
  const client = await startClient(t);
  const traffic = [{ schema: 1 as const, name: 'canary', namespace: 'default', service: 'reviews', routes: [{ name: 'canary', match: { headers: [{ name: 'x-canary', exact: '1' }] }, subset: 'v2' }] }];
  const local = [endpointTarget('east', v1.sc.sidecar.inboundPort, { labels: { version: 'v1' } }), endpointTarget('east', v2.sc.sidecar.inboundPort, { labels: { version: 'v2' } })];
  // A "gateway" target at west's inbound port: a real SNI gateway forwards the same bytes, which the sidecars cannot tell apart.
  const viaWest = gatewayTarget('west', '127.0.0.1', west.sc.sidecar.inboundPort, { priority: 1, labels: { version: 'v1' } });
  client.source.push(snapshot('east', [service('reviews', [...local, viaWest], { subsets })], { traffic }));
  const address = await addressOf(client.sc);
  const session = h2(t, address);
  for (let i = 0; i < 10; i++) t.is((await h2Request(session, { ':path': '/c', 'x-canary': '1' })).json?.app, 'reviews-v2', 'x-canary: 1 goes to v2');
  const plain = new Set<string>();
  for (let i = 0; i < 20; i++) plain.add(String((await h2Request(session, { ':path': '/p' })).json?.app));
  t.deepEqual([...plain].sort(), ['reviews-v1', 'reviews-v2'], 'the rest is spread over the local endpoints');

  // The local endpoints go away: the same HTTP/2 connection's next streams go to west.
  client.source.push(snapshot('east', [service('reviews', [viaWest], { subsets })], { traffic }));
  await client.sc.sidecar.settled();
  const moved = await h2Request(session, { ':path': '/after' });
  t.is(moved.json?.app, 'reviews-west');
  t.is(moved.json?.peer, spiffe('default', 'productpage'));
});

test('Upgrade: h2c on an http port (nghttp -u): the 101, the response on stream 1, a second request on stream 3; the app never sees Upgrade or HTTP2-Settings', async (t) => {
  const { a, b, client, address } = await twoEndpoints(t);
  const log = await nghttpUpgrade([`http://${address}:9080/one`, `http://${address}:9080/two`]);
  t.regex(log, /HTTP\/1\.1 101 Switching Protocols/i);
  t.deepEqual(streamStatuses(log).sort(), ['1 200', '3 200'], log);
  t.regex(log, /"path":"\/one"/);
  t.regex(log, /"path":"\/two"/);
  const seen = [...a.app.seen, ...b.app.seen];
  t.deepEqual(seen.map((s) => s.path).sort(), ['/one', '/two']);
  for (const s of seen) {
    t.is(s.headers.upgrade, undefined);
    t.is(s.headers['http2-settings'], undefined);
  }
  t.is(await metricValue(client.sc.sidecar, 'causeway_sidecar_h2c_upgrades_total', { result: 'upgraded' }), 1);

  // curl --http2 on an http:// URL upgrades the same way; its second URL reuses the HTTP/2 connection.
  const curl = await run('curl', ['--http2', '-sS', '-v', '--max-time', '20', `http://${address}:9080/c1`, `http://${address}:9080/c2`], { timeout: 30_000, encoding: 'utf8' });
  t.regex(curl.stderr, /HTTP\/1\.1 101 Switching Protocols/);
  t.is(curl.stderr.match(/< HTTP\/2 200/g)?.length, 2, curl.stderr);
  t.regex(curl.stderr, /Re-using existing connection/);
  t.regex(curl.stdout, /"path":"\/c1".*"path":"\/c2"/s);
  t.is(await metricValue(client.sc.sidecar, 'causeway_sidecar_h2c_upgrades_total', { result: 'upgraded' }), 2);

  // A request body rides into stream 1 too (a client written here: nghttp -u upgrades with OPTIONS when it has a body).
  const body = 'b'.repeat(40_000);
  // A 1,000-byte header: its HPACK string length takes a multi-byte integer.
  const long = 'v'.repeat(1000);
  const frames = await rawUpgrade(address, 9080, `POST /posted HTTP/1.1\r\nhost: reviews\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\nx-long: ${long}\r\nx-short: s\r\ncontent-length: ${body.length}\r\n\r\n${body}`);
  t.true(frames.some((f) => f.type === 1 && f.streamId === 1), 'response HEADERS on stream 1');
  const data = Buffer.concat(frames.filter((f) => f.type === 0 && f.streamId === 1).map((f) => f.payload)).toString();
  t.like(JSON.parse(data), { method: 'POST', path: '/posted', length: 40_000 });
  t.is(frames.filter((f) => f.type === 4 && (f.flags & 1) === 1).length, 1, 'one SETTINGS ACK for the one SETTINGS frame the client sent');
  const posted = [...a.app.seen, ...b.app.seen].find((seen) => seen.path === '/posted')!;
  t.is(posted.headers['x-long'], long);
  t.is(posted.headers['x-short'], 's');
  t.is(posted.headers.host, 'reviews', 'Host became :authority, and Host again on the HTTP/1.1 hop');
});

test('Upgrade: h2c on an http2 port: stream 1 and stream 3 reach the HTTP/2 app; a plain HTTP/1.1 request gets a 426 that says what to do', async (t) => {
  const h2app = createH2cServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`h2 app ${req.method} ${req.url}`);
  });
  await new Promise<void>((resolve) => h2app.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => h2app.close(() => resolve())));
  const ports = [{ name: 'http2', port: 9443, targetPort: (h2app.address() as AddressInfo).port, protocol: 'http2' as const }];
  const server = await startTestSidecar({ cluster: 'east', service: 'greeter', pki, ports });
  t.teardown(() => server.close());
  const client = await startClient(t);
  client.source.push(snapshot('east', [service('greeter', [endpointTarget('east', server.sidecar.inboundPort)], { ports: [{ name: 'http2', port: 9443, protocol: 'http2' }] })]));
  const address = await addressOf(client.sc, 'greeter');

  const log = await nghttpUpgrade([`http://${address}:9443/first`, `http://${address}:9443/second`]);
  t.deepEqual(streamStatuses(log).sort(), ['1 200', '3 200'], log);
  t.regex(log, /h2 app GET \/first/);
  t.regex(log, /h2 app GET \/second/);
  // Prior knowledge still works on the same port.
  const session = h2(t, address, 9443);
  t.is((await h2Request(session, { ':path': '/pk' })).body, 'h2 app GET /pk');

  const refused = await http1(address, 9443, { path: '/plain' });
  t.is(refused.status, 426);
  t.is(refused.headers.upgrade, 'h2c');
  t.regex(refused.body, /prior knowledge \(h2c\), or send Upgrade: h2c with HTTP2-Settings/);
  const legacy = await rawExchange(address, 9443, ['GET /old HTTP/1.0\r\nhost: x\r\n\r\n']);
  t.regex(legacy.text, /^HTTP\/1\.1 426 /);
  t.true(legacy.closedByPeer);
  // An upgrade this port cannot take (no HTTP2-Settings) cannot be served as HTTP/1.1 here: 426 too, saying why.
  const declined = await http1(address, 9443, { path: '/no-settings', headers: { connection: 'Upgrade', upgrade: 'h2c' } });
  t.is(declined.status, 426);
  t.regex(declined.body, /the upgrade needs one HTTP2-Settings header/);
  t.is(await metricValue(client.sc.sidecar, 'causeway_sidecar_h2c_upgrades_total', { result: 'declined', reason: 'no-settings' }), 1);
});

test('upgrades that cannot be made are declined (served as HTTP/1.1, headers stripped) or refused with a 400 that says why', async (t) => {
  const { a, b, client, address } = await twoEndpoints(t);
  const sidecar = client.sc.sidecar;
  // No HTTP2-Settings: declined, served as HTTP/1.1; neither Upgrade nor Connection reaches the app.
  const noSettings = await http1(address, 9080, { path: '/no-settings', headers: { connection: 'Upgrade', upgrade: 'h2c' } });
  t.is(noSettings.status, 200);
  // A body larger than HTTP/2's initial window: declined.
  const big = Buffer.alloc(70_000, 0x61);
  const tooBig = await http1(address, 9080, { method: 'POST', path: '/big', headers: { connection: 'Upgrade, HTTP2-Settings', upgrade: 'h2c', 'http2-settings': 'AAMAAABkAAQAoAAAAAIAAAAA', 'content-length': String(big.length) }, body: big });
  t.is(tooBig.status, 200);
  t.is(JSON.parse(tooBig.body).length, 70_000);
  // On Node's server path (here: Expect: 100-continue) the upgrade is not made either.
  const expecting = await rawExchange(address, 9080, ['POST /expect HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABk\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n', 'hello'], 1000);
  t.regex(expecting.text, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 /);
  t.regex(expecting.text, /"path":"\/expect","host":"x","peer":"[^"]+","length":5/);
  t.is(a.app.seen.length + b.app.seen.length, 3);
  for (const s of [...a.app.seen, ...b.app.seen]) {
    t.is(s.headers.upgrade, undefined, s.path);
    t.is(s.headers['http2-settings'], undefined, s.path);
  }
  t.is(await metricValue(sidecar, 'causeway_sidecar_h2c_upgrades_total', { result: 'declined', reason: 'no-settings' }), 1);
  t.is(await metricValue(sidecar, 'causeway_sidecar_h2c_upgrades_total', { result: 'declined', reason: 'body-too-large' }), 1);

  // Unreadable HTTP2-Settings: a 400 naming the problem.
  for (const [value, why] of [
    ['not base64!', /not base64url/],
    ['AAMAAAB', /decodes to 5 bytes, not a whole number of 6-byte settings/],
    ['A'.repeat(600), /at most 64/],
  ] as const) {
    const answer = await rawExchange(address, 9080, [`GET /bad HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: ${value}\r\n\r\n`]);
    t.regex(answer.text, /^HTTP\/1\.1 400 /);
    t.regex(answer.text, why);
    t.regex(answer.text, /x-causeway-error: CW_PROXY_BAD_REQUEST/);
  }
  t.is(await metricValue(sidecar, 'causeway_sidecar_h2c_upgrades_total', { result: 'refused', reason: 'bad-settings' }), 3);
});

test('bad bytes from the app (a truncated or garbled preface, garbage after an upgrade) close only their own connection', async (t) => {
  const { client, address } = await twoEndpoints(t);
  const upgrade = 'GET /u HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAoAAA\r\n\r\n';
  // What each case sends (piece by piece), whether the sidecar closes the connection, and what it answers first.
  const cases: { bytes: (string | Buffer)[]; closes?: boolean; answer?: RegExp }[] = [
    // The preface in pieces, then a SETTINGS frame whose length is no multiple of 6: the session fails.
    { bytes: ['P', 'RI * HT', 'TP/2.0\r\n\r\nSM\r\n\r\n', Buffer.from([0, 0, 5, 0x04, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5])], closes: true },
    // Truncated preface: the sidecar waits for the rest (as for a partial HTTP/1.1 head) until the client goes.
    { bytes: ['PRI * HTTP/2.0\r\n'], closes: false, answer: /^$/ },
    // Garbage after PRI: not the preface, so HTTP/1.1, which refuses version 2.0.
    { bytes: ['PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n'], closes: true, answer: /^HTTP\/1\.1 505 / },
    // A method that starts like the preface is just a method, forwarded as HTTP/1.1 (the app's Node server refuses it with a 400).
    { bytes: ['PRIZE /x HTTP/1.1\r\nhost: x\r\n\r\n'], answer: /^HTTP\/1\.1 400 / },
    // The preface, then a frame larger than the session allows.
    { bytes: [H2_PREFACE_TEXT, Buffer.from([0xff, 0xff, 0xff, 0x04, 0, 0, 0, 0, 0])], closes: true },
    // An upgrade whose client then speaks no HTTP/2 at all.
    { bytes: [upgrade, 'hello, not a preface\r\n\r\n'], closes: true, answer: /^HTTP\/1\.1 101 / },
    // An upgrade whose client sends the preface and then a PING instead of SETTINGS.
    { bytes: [upgrade, H2_PREFACE_TEXT, Buffer.from([0, 0, 8, 0x06, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8])], closes: true, answer: /^HTTP\/1\.1 101 / },
  ];
  for (const { bytes, closes, answer } of cases) {
    const result = await rawExchange(address, 9080, bytes, 1500);
    if (closes !== undefined) t.is(result.closedByPeer, closes, JSON.stringify(bytes.map(String)));
    if (answer) t.regex(result.text, answer, JSON.stringify(bytes.map(String)));
  }
  const session = h2(t, address);
  t.is(Number((await h2Request(session, { ':path': '/still-fine' })).headers[':status']), 200);
  t.is((await http1(address, 9080, { path: '/still-fine' })).status, 200);
  session.close();
  // Every connection of the cases is gone (none is left holding a session).
  await waitFor(async () => (await metricValue(client.sc.sidecar, 'causeway_sidecar_h2_sessions', { peer: 'app' })) === 0 && (await metricValue(client.sc.sidecar, 'causeway_sidecar_active_connections', { direction: 'outbound' })) === 0, { timeoutMs: 15_000, what: 'every connection of the cases closed' });
  t.pass();
});
