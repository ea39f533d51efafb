import test, { type ExecutionContext } from 'ava';
import { createServer as createHttpServer, request as httpRequest, type ServerResponse } from 'node:http';
import { connect as tcpConnect, type AddressInfo } from 'node:net';
import { StaticSnapshotSource } from '../../proxy/index.js';
import { createMeshPki, type MeshPki } from './helpers/pki.js';
import { captureLog, endpointTarget, get, service, snapshot, spiffe, startEchoApp, startTcpEchoApp, startTestSidecar, type LogLine as Line } from './helpers/mesh.js';
import { freePort, waitFor } from '../../testkit/ports.js';

// Real sidecars on loopback (mTLS, real apps); snapshots are pushed by hand so that each
// failure the sidecar can meet is produced for real, and its access-log line is read
// back from the logger's output stream.

let pki: MeshPki;
test.before(async () => {
  pki = await createMeshPki();
});

/** Envoy's default format, in Envoy's order, then the mesh's fields. */
const FIELDS = [
  'start_time', 'method', 'path', 'protocol', 'response_code', 'response_flags', 'bytes_received', 'bytes_sent', 'duration',
  'upstream_service_time', 'x_forwarded_for', 'user_agent', 'request_id', 'authority', 'upstream_host',
  'direction', 'response_code_details', 'upstream_cluster', 'source_cluster', 'destination_service', 'source_principal', 'destination_principal', 'trace_id', 'retries', 'route', 'end_reason', 'grpc_status', 'result',
];

/** The access fields of a line, in the order the line has them. */
function fieldsOf(line: Line): string[] {
  return Object.keys(line).filter((k) => FIELDS.includes(k));
}

async function waitForLine(lines: () => Line[], match: (l: Line) => boolean, what: string): Promise<Line> {
  return waitFor(() => lines().find(match), { what, timeoutMs: 20_000 });
}

async function sidecarWithLog(t: ExecutionContext, options: Parameters<typeof startTestSidecar>[0]) {
  const out = captureLog();
  const sc = await startTestSidecar({ ...options, pki, config: { ...options.config, sidecar: { accessLog: { enabled: true }, ...options.config?.sidecar } }, extra: { log: out.log } });
  t.teardown(() => sc.close());
  return { sc, access: out.access };
}

/** An app whose paths misbehave on demand: /hold… never answers (until released), /cut breaks off its body, /reset closes without answering. */
async function startUnrulyApp(t: ExecutionContext) {
  const held: ServerResponse[] = [];
  const server = createHttpServer((req, res) => {
    req.resume();
    if (req.url?.startsWith('/hold')) held.push(res);
    else if (req.url === '/cut') {
      res.writeHead(200, { 'content-length': '100' });
      res.write('0123456789', () => res.socket?.destroy());
    } else if (req.url === '/reset') req.socket.destroy();
    else res.writeHead(200, { 'content-length': '2' }).end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return { port: (server.address() as AddressInfo).port, held };
}

test('a request leaves one line on each side, Envoy\'s fields first and in Envoy\'s order, every field as the request had it', async (t) => {
  const app = await startEchoApp('reviews-east');
  t.teardown(() => app.close());
  const server = await sidecarWithLog(t, { cluster: 'east', service: 'reviews', pki, ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] });
  const source = new StaticSnapshotSource();
  const client = await sidecarWithLog(t, { cluster: 'east', service: 'productpage', pki, source });
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sc.sidecar.inboundPort)])]));
  await client.sc.sidecar.settled();
  const address = client.sc.sidecar.outbound.lookup('default', 'reviews')!.address;

  const before = Date.now();
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest(
      {
        host: address,
        port: 9080,
        path: '/hello?x=1',
        method: 'POST',
        agent: false,
        headers: { 'user-agent': 'access-test/1', 'x-request-id': 'req-1', 'x-forwarded-for': '10.1.2.3', traceparent: `00-${traceId}-00f067aa0ba902b7-01`, 'content-length': '5' },
      },
      (r) => {
        let body = '';
        r.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ status: r.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end('hello');
  });
  t.is(res.status, 200);

  const out = await waitForLine(client.access, (l) => l.request_id === 'req-1', 'the outbound line');
  t.deepEqual(fieldsOf(out), FIELDS);
  t.is(out.msg, 'outbound request');
  t.true(Date.parse(out.start_time as string) >= before - 5 && Date.parse(out.start_time as string) <= Date.now());
  t.is(out.method, 'POST');
  t.is(out.path, '/hello?x=1');
  t.is(out.protocol, 'HTTP/1.1');
  t.is(out.response_code, 200);
  t.is(out.response_flags, '-');
  t.is(out.bytes_received, 5);
  t.is(out.bytes_sent, Buffer.byteLength(res.body));
  t.true(typeof out.duration === 'number' && out.duration >= 0);
  t.true(typeof out.upstream_service_time === 'number' && (out.upstream_service_time as number) <= (out.duration as number) + 1);
  t.is(out.x_forwarded_for, '10.1.2.3');
  t.is(out.user_agent, 'access-test/1');
  t.is(out.authority, `${address}:9080`);
  t.is(out.upstream_host, `127.0.0.1:${server.sc.sidecar.inboundPort}`);
  t.is(out.direction, 'outbound');
  t.is(out.response_code_details, null);
  t.is(out.upstream_cluster, 'east');
  t.is(out.destination_service, 'reviews.default');
  t.is(out.source_principal, spiffe('default', 'productpage'));
  t.is(out.destination_principal, spiffe('default', 'reviews'));
  t.is(out.trace_id, traceId);
  t.is(out.retries, 0);
  t.is(out.grpc_status, null);

  const inbound = await waitForLine(server.access, (l) => l.request_id === 'req-1', 'the inbound line');
  t.deepEqual(fieldsOf(inbound), FIELDS);
  t.is(inbound.msg, 'inbound request');
  t.is(inbound.direction, 'inbound');
  t.is(inbound.response_code, 200);
  t.is(inbound.response_flags, '-');
  t.is(inbound.bytes_received, 5);
  t.is(inbound.bytes_sent, Buffer.byteLength(res.body));
  t.is(inbound.upstream_host, `127.0.0.1:${app.port}`);
  t.is(inbound.source_cluster, 'east');
  t.is(inbound.source_principal, spiffe('default', 'productpage'));
  t.is(inbound.destination_principal, spiffe('default', 'reviews'));
  t.is(inbound.trace_id, traceId);
});

test('the access log is off by default: no line at all', async (t) => {
  const out = captureLog();
  const app = await startEchoApp('reviews-east');
  t.teardown(() => app.close());
  const server = await startTestSidecar({ cluster: 'east', service: 'reviews', pki, ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }], extra: { log: out.log } });
  t.teardown(() => server.close());
  const source = new StaticSnapshotSource();
  const client = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source, extra: { log: out.log } });
  t.teardown(() => client.close());
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort)])]));
  await client.sidecar.settled();
  for (let i = 0; i < 3; i++) t.is((await get(client.sidecar.outbound.lookup('default', 'reviews')!.address, 9080, '/', { agent: false })).status, 200);
  t.is(app.hits(), 3);
  t.deepEqual(out.access(), []);
});

/** Sends a request, answers with its status (0 when the connection was cut). */
function request(address: string, port: number, path: string, options: { method?: string } = {}): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: address, port, path, method: options.method ?? 'GET', agent: false }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
      res.once('error', () => resolve(0));
      res.once('aborted', () => resolve(0));
    });
    req.once('error', () => resolve(0));
    req.end();
  });
}

test('every failure the sidecar can meet logs its Envoy response flag', async (t) => {
  const unruly = await startUnrulyApp(t);
  const slow = await sidecarWithLog(t, { cluster: 'east', service: 'slow', pki, ports: [{ name: 'http', port: 9080, targetPort: unruly.port, protocol: 'http' }] });
  const tcpApp = await startTcpEchoApp('db');
  t.teardown(() => tcpApp.close());
  const db = await sidecarWithLog(t, { cluster: 'east', service: 'db', pki, ports: [{ name: 'tcp', port: 5432, targetPort: tcpApp.port, protocol: 'tcp' }] });
  const nowherePort = await freePort();
  const source = new StaticSnapshotSource();
  const client = await sidecarWithLog(t, {
    cluster: 'east',
    service: 'productpage',
    pki,
    source,
    config: { upstreams: [{ service: 'nowhere.default', port: 9080, localPort: nowherePort }], sidecar: { accessLog: true, circuit: { maxConnections: 1, maxPendingConnects: 10 } } },
  });
  const [closed1, closed2] = [await freePort(), await freePort()];
  const tcpPort = [{ name: 'tcp', port: 5432, protocol: 'tcp' as const }];
  const services = [
    service('empty', []),
    service('refused', [endpointTarget('east', closed1)]),
    service('twice', [endpointTarget('east', closed1), endpointTarget('east', closed2, { address: '127.0.0.2' })]),
    service('slow', [endpointTarget('east', slow.sc.sidecar.inboundPort)]),
    service('db', [endpointTarget('east', db.sc.sidecar.inboundPort)], { ports: tcpPort }),
    service('dbdown', [endpointTarget('east', closed1)], { ports: tcpPort }),
  ];
  source.push(snapshot('east', services));
  await client.sc.sidecar.settled();
  const at = (svc: string) => client.sc.sidecar.outbound.lookup('default', svc)!.address;
  const outbound = (path: string) => waitForLine(client.access, (l) => l.path === path, `outbound line of ${path}`);

  // Each case: what the app got, the flag, and for some the retry count.
  const expect = async (svc: string, path: string, status: number, flags: string, retries = 0) => {
    t.is(await request(at(svc), 9080, path), status, `${svc}${path}: status`);
    const line = await outbound(path);
    t.is(line.response_code, status, `${svc}${path}: response_code`);
    t.is(line.response_flags, flags, `${svc}${path}: response_flags`);
    t.is(line.retries, retries, `${svc}${path}: retries`);
    return line;
  };
  await expect('empty', '/no-endpoints', 503, 'UH');
  const refused = await expect('refused', '/connect-refused', 503, 'UF');
  t.is(refused.upstream_host, `127.0.0.1:${closed1}`);
  await expect('twice', '/retries-exhausted', 503, 'UF,URX', 1);
  // An explicit upstream the catalog does not know: its protocol is unknown, so it is a TCP
  // listener, and the connection is closed with no route.
  t.is(await request('127.0.0.1', nowherePort, '/unknown-service'), 0);
  const unknown = await waitForLine(client.access, (l) => l.destination_service === 'nowhere.default', 'the unknown service line');
  t.is(unknown.msg, 'outbound connection');
  t.is(unknown.response_flags, 'NR');
  t.is(unknown.upstream_host, null);

  // The breaker: one request in flight fills it (maxConnections 1); the next is refused.
  const first = request(at('slow'), 9080, '/hold');
  await waitFor(() => unruly.held.length === 1, { what: 'the held request at the app', timeoutMs: 20_000 });
  await expect('slow', '/overflow', 503, 'UO');
  unruly.held.shift()!.writeHead(200, { 'content-length': '0' }).end();
  t.is(await first, 200);

  // The app answers half a body, then closes: upstream connection termination on both sides.
  t.is(await request(at('slow'), 9080, '/cut'), 0);
  t.is((await outbound('/cut')).response_flags, 'UC');
  t.is((await waitForLine(slow.access, (l) => l.path === '/cut', 'inbound line of /cut')).response_flags, 'UC');

  // The app closes without answering: the server sidecar answers 503 for it (UC in its line).
  t.is(await request(at('slow'), 9080, '/reset', { method: 'POST' }), 503);
  const reset = await waitForLine(slow.access, (l) => l.path === '/reset', 'inbound line of /reset');
  t.is(reset.response_code, 503);
  t.is(reset.response_flags, 'UC');

  // The app hangs up: downstream disconnect (response code 0, as in Envoy), on both sides.
  await new Promise<void>((resolve) => {
    const req = httpRequest({ host: at('slow'), port: 9080, path: '/hold-hang-up', method: 'GET', agent: false });
    req.once('error', () => resolve());
    req.end();
    void waitFor(() => unruly.held.length === 1, { what: 'the request at the app', timeoutMs: 20_000 }).then(() => {
      req.destroy();
      resolve();
    });
  });
  const hangUp = await outbound('/hold-hang-up');
  t.is(hangUp.response_code, 0);
  t.is(hangUp.response_flags, 'DC');
  t.is((await waitForLine(slow.access, (l) => l.path === '/hold-hang-up', 'inbound line of /hold-hang-up')).response_flags, 'DC');
  unruly.held.length = 0;

  // A traffic policy's request timeout: UT, 504.
  source.push(snapshot('east', services, { traffic: [{ schema: 1, name: 'slow-timeout', namespace: 'default', service: 'slow', requestTimeoutMs: 300 }] }));
  await client.sc.sidecar.settled();
  await expect('slow', '/hold-timeout', 504, 'UT');

  // A route's rate limit: RL, 429, and the line names the route and why the request ended.
  const limited = { schema: 1 as const, name: 'slow-limited', namespace: 'default', service: 'slow', routes: [{ name: 'limited', match: { path: { prefix: '/limited' }, headers: [] }, rateLimit: { requestsPerSecond: 1, burst: 1 } }] };
  source.push(snapshot('east', services, { traffic: [limited] }));
  await client.sc.sidecar.settled();
  const allowed = await expect('slow', '/limited-1', 200, '-');
  t.is(allowed.route, 'limited');
  t.is(allowed.end_reason, 'ok');
  const refusedByLimit = await expect('slow', '/limited-2', 429, 'RL');
  t.is(refusedByLimit.route, 'limited');
  t.is(refusedByLimit.end_reason, 'rate-limited');

  // Authorization: the server sidecar denies; its line names the policy (Envoy's RBAC details).
  (slow.sc.source as StaticSnapshotSource).push(snapshot('east', [], { authorization: [{ schema: 1, name: 'deny-productpage', namespace: 'default', service: 'slow', action: 'deny', from: [{ identities: [spiffe('default', 'productpage')] }], ports: [] }] }));
  await slow.sc.sidecar.settled();
  t.is(await request(at('slow'), 9080, '/denied'), 403);
  const denied = await waitForLine(slow.access, (l) => l.path === '/denied', 'inbound line of /denied');
  t.is(denied.response_code, 403);
  t.is(denied.response_flags, '-');
  t.is(denied.response_code_details, 'rbac_access_denied_matched_policy[default/deny-productpage]');
  t.is(denied.source_principal, spiffe('default', 'productpage'));
  t.is((await outbound('/denied')).response_code, 403);

  // TCP: a connection gets a line too (the fields that apply), on both sides.
  const echoed = await new Promise<string>((resolve, reject) => {
    const socket = tcpConnect({ host: at('db'), port: 5432 }, () => socket.write('ping'));
    socket.once('data', (d: Buffer) => {
      resolve(d.toString());
      socket.end();
    });
    socket.once('error', reject);
  });
  t.is(echoed, 'db:ping');
  const tcp = await waitForLine(client.access, (l) => l.destination_service === 'db.default', 'the outbound TCP line');
  t.deepEqual(fieldsOf(tcp), FIELDS);
  t.is(tcp.msg, 'outbound connection');
  t.is(tcp.response_flags, '-');
  t.is(tcp.bytes_received, 4);
  t.is(tcp.bytes_sent, 'db:ping'.length);
  t.is(tcp.method, null);
  t.is(tcp.destination_principal, spiffe('default', 'db'));
  const tcpIn = await waitForLine(db.access, (l) => l.msg === 'inbound connection', 'the inbound TCP line');
  t.is(tcpIn.source_principal, spiffe('default', 'productpage'));
  await new Promise<void>((resolve) => {
    const socket = tcpConnect({ host: at('dbdown'), port: 5432 });
    socket.on('error', () => undefined).once('close', () => resolve());
  });
  const down = await waitForLine(client.access, (l) => l.destination_service === 'dbdown.default', 'the failed TCP line');
  t.is(down.response_flags, 'UF');

  // A TCP port closes a denied connection; its inbound line names the policy.
  (db.sc.source as StaticSnapshotSource).push(snapshot('east', [], { authorization: [{ schema: 1, name: 'no-tcp', namespace: 'default', service: 'db', action: 'deny', from: [], ports: [] }] }));
  await db.sc.sidecar.settled();
  await new Promise<void>((resolve) => {
    const socket = tcpConnect({ host: at('db'), port: 5432 }, () => socket.write('ping'));
    socket.on('error', () => undefined).once('close', () => resolve());
  });
  const tcpDenied = await waitForLine(db.access, (l) => l.result === 'denied', 'the denied TCP line');
  t.is(tcpDenied.msg, 'inbound connection');
  t.is(tcpDenied.response_code_details, 'rbac_access_denied_matched_policy[default/no-tcp]');
  t.is(tcpDenied.source_principal, spiffe('default', 'productpage'));
});

test('an existing config with accessLog: true still validates and turns the log on', async (t) => {
  const { sc, access } = await sidecarWithLog(t, { cluster: 'east', service: 'productpage', pki, source: new StaticSnapshotSource(), config: { sidecar: { accessLog: true } } });
  t.deepEqual(sc.sidecar.config.sidecar.accessLog, true);
  (sc.source as StaticSnapshotSource).push(snapshot('east', [service('empty', [])]));
  await sc.sidecar.settled();
  t.is(await request(sc.sidecar.outbound.lookup('default', 'empty')!.address, 9080, '/x'), 503);
  t.is((await waitForLine(access, (l) => l.path === '/x', 'the line')).response_flags, 'UH');
});

