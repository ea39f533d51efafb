/**
 * The sidecar's HTTP/1.1 fast path (proxy/http1-relay.ts) end to end: a real client, the
 * client sidecar, mTLS, the server sidecar and a real app, with message framings the
 * common case does not exercise — chunked bodies and trailers, pipelining, HEAD/204,
 * close-delimited responses, interim 1xx, bodies too large to buffer and requests the
 * fast path hands to Node's server — and requests it must refuse (smuggling shapes).
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, request as httpRequest, type IncomingMessage } from 'node:http';
import { connect as tcpConnect, createServer as createTcpServer, type AddressInfo } from 'node:net';
import { createMeshPki, type MeshPki } from './helpers/pki.js';
import { endpointTarget, metricValue, rawExchange, service, snapshot, spiffe, startTestSidecar } from './helpers/mesh.js';
import { StaticSnapshotSource } from '../../proxy/index.js';
import { waitFor } from '../../testkit/ports.js';

let pki: MeshPki;
test.before(async () => {
  pki = await createMeshPki();
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** An app with one behaviour per path; it records what it received. */
async function startApp() {
  const seen: { method: string; url: string; peer: string | undefined; bodySha: string; bodyLength: number; trailers: Record<string, string> }[] = [];
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      seen.push({ method: req.method!, url: req.url!, peer: req.headers['x-causeway-peer-identity'] as string | undefined, bodySha: sha(body), bodyLength: body.length, trailers: { ...req.trailers } as Record<string, string> });
      const url = new URL(req.url!, 'http://app');
      switch (url.pathname) {
        case '/chunked':
          // No length: Node sends it chunked, with a trailer.
          res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-digest' });
          res.write(`got ${body.length} bytes `);
          res.write(`sha ${sha(body)}`);
          res.addTrailers({ 'x-digest': sha(body) });
          res.end();
          return;
        case '/nocontent':
          res.writeHead(204).end();
          return;
        case '/early':
          res.writeEarlyHints({ link: '</style.css>; rel=preload' });
          res.writeHead(200, { 'content-length': 2 }).end('ok');
          return;
        case '/big': {
          const n = Number(url.searchParams.get('n'));
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n });
          const block = Buffer.alloc(64 * 1024, 0x61);
          let sent = 0;
          const pump = () => {
            while (sent < n) {
              const piece = block.subarray(0, Math.min(block.length, n - sent));
              sent += piece.length;
              if (!res.write(piece)) return void res.once('drain', pump);
            }
            res.end();
          };
          pump();
          return;
        }
        default: {
          const text = `${req.method} ${req.url} ${body.length}`;
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) }).end(req.method === 'HEAD' ? undefined : text);
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, seen, close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))) };
}

/** Client sidecar → server sidecar → app; returns the loopback address the app-side client uses. */
async function mesh(t: import('ava').ExecutionContext, appPort: number) {
  const server = await startTestSidecar({ cluster: 'east', service: 'reviews', pki, ports: [{ name: 'http', port: 9080, targetPort: appPort, protocol: 'http' }] });
  t.teardown(() => server.close());
  const source = new StaticSnapshotSource();
  const client = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source });
  t.teardown(() => client.close());
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort, { identity: server.spiffeId })])]));
  await client.sidecar.settled();
  return { address: client.sidecar.outbound.lookup('default', 'reviews')!.address, client, server };
}

/** Writes raw bytes to host:9080 and collects everything until the peer closes (or `idleMs` of silence). */
function raw(address: string, bytes: string | Buffer, idleMs = 1500): Promise<{ text: string; closedByPeer: boolean }> {
  return rawExchange(address, 9080, [bytes], idleMs);
}

function send(address: string, options: { method?: string; path: string; headers?: Record<string, string>; body?: Buffer | Buffer[] }): Promise<{ res: IncomingMessage; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: address, port: 9080, method: options.method ?? 'GET', path: options.path, headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.once('end', () => resolve({ res, body: Buffer.concat(chunks) }));
      res.once('error', reject);
    });
    req.once('error', reject);
    if (Array.isArray(options.body)) {
      for (const part of options.body) req.write(part);
      req.end();
    } else req.end(options.body);
  });
}

test('chunked request bodies with trailers and chunked responses with trailers cross the mesh intact', async (t) => {
  const app = await startApp();
  t.teardown(() => app.close());
  const { address } = await mesh(t, app.port);
  const parts = [randomBytes(10), randomBytes(70_000), randomBytes(1)];
  const whole = Buffer.concat(parts);
  // Several writes without a length: Node's client sends them chunked.
  const { res, body } = await send(address, { method: 'POST', path: '/chunked', body: parts });
  t.is(res.statusCode, 200);
  t.is(res.headers['transfer-encoding'], 'chunked');
  t.is(body.toString(), `got ${whole.length} bytes sha ${sha(whole)}`);
  t.is(res.trailers['x-digest'], sha(whole));
  t.is(app.seen.at(-1)!.bodySha, sha(whole));
  t.is(app.seen.at(-1)!.peer, spiffe('default', 'productpage'));

  // A chunked request with a chunk extension and a trailer, written by hand.
  const reply = await raw(address, 'POST /chunked HTTP/1.1\r\nhost: reviews\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-sum: 5\r\n\r\n');
  t.regex(reply.text, /^HTTP\/1\.1 200 OK\r\n/);
  // The response is chunked as the app wrote it: its two writes are two chunks.
  t.true(reply.text.includes(`\r\ngot 5 bytes \r\n`));
  t.true(reply.text.includes(`\r\nsha ${sha(Buffer.from('abcde'))}\r\n0\r\nx-digest: ${sha(Buffer.from('abcde'))}\r\n\r\n`));
  t.deepEqual(app.seen.at(-1)!.trailers, { 'x-sum': '5' });
});

test('pipelined requests are answered in order on one connection; HEAD, 204 and 1xx interim responses keep the framing', async (t) => {
  const app = await startApp();
  t.teardown(() => app.close());
  const { address } = await mesh(t, app.port);
  const reply = await raw(
    address,
    'GET /a HTTP/1.1\r\nhost: r\r\n\r\n' +
      'HEAD /b HTTP/1.1\r\nhost: r\r\n\r\n' +
      'GET /nocontent HTTP/1.1\r\nhost: r\r\n\r\n' +
      'GET /early HTTP/1.1\r\nhost: r\r\n\r\n' +
      'POST /c HTTP/1.1\r\nhost: r\r\ncontent-length: 4\r\n\r\nwxyz' +
      'GET /d HTTP/1.1\r\nhost: r\r\nconnection: close\r\n\r\n',
  );
  const statusLines = [...reply.text.matchAll(/HTTP\/1\.1 \d{3} [^\r]*/g)].map((m) => m[0]);
  t.deepEqual(statusLines, ['HTTP/1.1 200 OK', 'HTTP/1.1 200 OK', 'HTTP/1.1 204 No Content', 'HTTP/1.1 103 Early Hints', 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK', 'HTTP/1.1 200 OK']);
  t.true(reply.text.includes('GET /a 0'));
  t.false(reply.text.includes('HEAD /b'), 'a HEAD response has no body');
  t.true(reply.text.toLowerCase().includes('link: </style.css>; rel=preload'));
  t.true(reply.text.includes('POST /c 4'));
  t.true(reply.text.endsWith('GET /d 0'));
  t.true(reply.closedByPeer, 'connection: close from the client ends the connection after its response');
  t.deepEqual(
    app.seen.map((s) => `${s.method} ${s.url}`),
    ['GET /a', 'HEAD /b', 'GET /nocontent', 'GET /early', 'POST /c', 'GET /d'],
  );
});

test('HTTP/1.0 and bodies over the 1 MiB replay buffer are handed to Node’s server and still work', async (t) => {
  const app = await startApp();
  t.teardown(() => app.close());
  const { address } = await mesh(t, app.port);
  const old = await raw(address, 'GET /legacy HTTP/1.0\r\nhost: r\r\n\r\n');
  t.regex(old.text, /^HTTP\/1\.[01] 200 OK\r\n/);
  t.true(old.text.endsWith('GET /legacy 0'));
  t.true(old.closedByPeer, 'HTTP/1.0 without keep-alive ends with the response');

  const big = randomBytes(3 * 1024 * 1024);
  const { res, body } = await send(address, { method: 'PUT', path: '/upload', body: big, headers: { 'content-length': String(big.length) } });
  t.is(res.statusCode, 200);
  t.is(body.toString(), `PUT /upload ${big.length}`);
  t.is(app.seen.at(-1)!.bodySha, sha(big));
  t.is(app.seen.at(-1)!.peer, spiffe('default', 'productpage'));

  // Large responses stream through with back-pressure, byte for byte.
  const n = 16 * 1024 * 1024 + 7;
  const down = await send(address, { path: `/big?n=${n}` });
  t.is(down.body.length, n);
  t.true(down.body.every((b) => b === 0x61));
});

test('smuggling shapes and malformed requests get a 400 and a closed connection; the app never sees them', async (t) => {
  const app = await startApp();
  t.teardown(() => app.close());
  const { address, client } = await mesh(t, app.port);
  const attacks = [
    'POST / HTTP/1.1\r\nhost: r\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: r\r\n\r\n',
    'POST / HTTP/1.1\r\nhost: r\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n',
    'POST / HTTP/1.1\r\nhost: r\r\ntransfer-encoding : chunked\r\n\r\n0\r\n\r\n',
    'POST / HTTP/1.1\r\nhost: r\r\ncontent-length: 3\r\ncontent-length: 5\r\n\r\nabcde',
    'GET / HTTP/1.1\r\nhost: r\r\nx-folded: a\r\n b\r\n\r\n',
    'POST / HTTP/1.1\r\nhost: r\r\ntransfer-encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n',
    'GET /\x01 HTTP/1.1\r\nhost: r\r\n\r\n',
  ];
  for (const attack of attacks) {
    const reply = await raw(address, attack);
    t.regex(reply.text, /^HTTP\/1\.1 (400|501) /, JSON.stringify(attack));
    t.true(reply.text.includes('x-causeway-error: CW_PROXY_BAD_REQUEST'), JSON.stringify(attack));
    t.true(reply.closedByPeer, JSON.stringify(attack));
  }
  t.deepEqual(app.seen, [], 'nothing malformed reached the app');
  // The sidecar is fine afterwards.
  const ok = await send(address, { path: '/after' });
  t.is(ok.res.statusCode, 200);
  t.true((await metricValue(client.sidecar, 'causeway_sidecar_http_requests_total', { direction: 'outbound', code: '200' })) >= 1);
});

test('a close-delimited response from the app reaches the client whole and ends the connection', async (t) => {
  // An old-style app: no Content-Length, no chunking, the body ends when it closes.
  const app = createTcpServer((socket) => {
    socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end'));
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.teardown(() => app.close());
  const { address } = await mesh(t, (app.address() as AddressInfo).port);
  const reply = await raw(address, 'GET / HTTP/1.1\r\nhost: r\r\n\r\n');
  t.regex(reply.text, /^HTTP\/1\.1 200 OK\r\n/);
  t.true(reply.text.toLowerCase().includes('connection: close'));
  t.true(reply.text.endsWith('\r\n\r\nuntil the end'));
  t.true(reply.closedByPeer);
});

test('an upgrade (WebSocket-style) crosses both sidecars: 101 relayed, then bytes flow both ways, and the app learns the caller', async (t) => {
  let peer: string | undefined;
  const app = createHttpServer((_req, res) => res.writeHead(426).end());
  app.on('upgrade', (req: IncomingMessage, socket: import('node:net').Socket, head: Buffer) => {
    peer = req.headers['x-causeway-peer-identity'] as string | undefined;
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${req.headers.upgrade}\r\n\r\n`);
    if (head.length > 0) socket.write(head.toString().toUpperCase());
    socket.on('data', (d: Buffer) => socket.write(d.toString().toUpperCase()));
    // Upgraded sockets are half-open by default: close when the mesh side does.
    socket.on('end', () => socket.end());
    upgraded.push(socket);
  });
  const upgraded: import('node:net').Socket[] = [];
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((r) => (upgraded.forEach((s) => s.destroy()), app.closeAllConnections(), app.close(() => r()))));
  const { address, client } = await mesh(t, (app.address() as AddressInfo).port);
  const socket = await new Promise<import('node:net').Socket>((resolve, reject) => {
    const req = httpRequest({ host: address, port: 9080, path: '/ws', headers: { connection: 'upgrade', upgrade: 'x-echo' }, agent: false });
    req.once('upgrade', (res: IncomingMessage, s: import('node:net').Socket) => {
      t.is(res.statusCode, 101);
      t.is(res.headers.upgrade, 'x-echo');
      resolve(s);
    });
    req.once('response', (res) => reject(new Error(`no upgrade: ${res.statusCode}`)));
    req.once('error', reject);
    req.end();
  });
  t.teardown(() => socket.destroy());
  const echoed: string[] = [];
  socket.on('data', (d: Buffer) => echoed.push(d.toString()));
  for (const word of ['hello', ' mesh', ' bytes']) socket.write(word);
  await waitFor(() => echoed.join('') === 'HELLO MESH BYTES', { what: 'the upgraded connection to echo every word', timeoutMs: 10_000, intervalMs: 20 });
  t.is(echoed.join(''), 'HELLO MESH BYTES');
  t.is(peer, spiffe('default', 'productpage'));
  t.is(await metricValue(client.sidecar, 'causeway_sidecar_http_requests_total', { direction: 'outbound', code: '101', result: 'upgraded' }), 1);
  // A plain request on a fresh connection still works (the upgraded connection left the pool).
  const plain = await send(address, { path: '/plain' });
  t.is(plain.res.statusCode, 426);
});

test('Expect: 100-continue (as curl sends for large bodies) gets its 100, then the body reaches the app', async (t) => {
  const app = await startApp();
  t.teardown(() => app.close());
  const { address } = await mesh(t, app.port);
  const socket = tcpConnect({ host: address, port: 9080 });
  t.teardown(() => socket.destroy());
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  socket.write('PUT /upload HTTP/1.1\r\nhost: r\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n');
  const answered = async (what: RegExp) => {
    await waitFor(() => what.test(text), { what: `an answer matching ${what}`, timeoutMs: 10_000, intervalMs: 20 });
    t.regex(text, what);
  };
  await answered(/^HTTP\/1\.1 100 Continue\r\n\r\n/);
  socket.write('abcde');
  await answered(/HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nPUT \/upload 5$/);
  t.is(app.seen.at(-1)!.bodySha, sha(Buffer.from('abcde')));
  t.is(app.seen.at(-1)!.peer, spiffe('default', 'productpage'));
});
