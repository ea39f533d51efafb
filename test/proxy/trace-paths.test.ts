import test from 'ava';
import { createServer, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { productpageSpec, reviewsSpec, startMesh, startWorkload, targetsOf, type MeshWorkload, type MeshWorld } from './helpers/clusters.js';
import { echo, echoClient, GrpcCode, startGrpcEchoApp, type GrpcEchoApp } from './helpers/grpc.js';
import { captureLog, endpointTarget, get as meshGet, service, snapshot, spiffe, startTestSidecar, type LogLine } from './helpers/mesh.js';
import { createMeshPki } from './helpers/pki.js';
import { StaticSnapshotSource } from '../../proxy/index.js';
import { attrs, callTrace, startOtlpReceiver, type ReceivedSpan } from './helpers/otlp.js';
import { waitFor } from '../../testkit/ports.js';

// Spans and x-request-id on the sidecar's other HTTP paths, through a real gateway:
// east's productpage calls west's reviews (HTTP) and greeter (gRPC); every sidecar
// exports to a small OTLP receiver and writes its access log into memory. The last test
// (the switch turned off) uses two hand-fed sidecars of its own.

const greeterSpec = { name: 'greeter', namespace: 'default', ports: [{ name: 'grpc', port: 9090, protocol: 'grpc' }], serviceAccounts: [spiffe('default', 'greeter')], exported: true };
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface World {
  receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
  world: MeshWorld;
  workloads: MeshWorkload[];
  grpcApp: GrpcEchoApp;
  /** The headers west's reviews app got, by request path. */
  seen: Map<string, IncomingHttpHeaders>;
  closeApp: () => Promise<void>;
  clientLog: ReturnType<typeof captureLog>;
  reviewsLog: ReturnType<typeof captureLog>;
  greeterLog: ReturnType<typeof captureLog>;
  client: MeshWorkload;
}

const ctx = (t: { context: unknown }) => t.context as World;

test.serial.before(async (t) => {
  const c = t.context as World;
  c.workloads = [];
  c.receiver = await startOtlpReceiver();
  c.world = await startMesh([
    { name: 'east', region: 'eu', zone: 'eu-1' },
    { name: 'west', region: 'eu', zone: 'eu-2' },
  ]);
  for (const name of ['east', 'west']) await c.world.cluster(name).admin.applyService(productpageSpec);
  await c.world.cluster('west').admin.applyService(reviewsSpec);
  await c.world.cluster('west').admin.applyService(greeterSpec);
  const seen = (c.seen = new Map());
  const app = createServer((req, res) => {
    seen.set(req.url ?? '', req.headers);
    req.resume();
    req.once('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n'));
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  const appPort = (app.address() as AddressInfo).port;
  c.closeApp = () => {
    app.closeAllConnections();
    return new Promise<void>((resolve) => app.close(() => resolve()));
  };
  c.grpcApp = await startGrpcEchoApp('greeter-west');
  const tracing = { otlpEndpoint: c.receiver.url, sampling: 1, exportIntervalMs: 100 };
  const sidecar = { tracing, accessLog: true };
  c.reviewsLog = captureLog();
  c.workloads.push(await startWorkload(c.world, 'west', { service: 'reviews', app: false, log: c.reviewsLog.log, ports: [{ name: 'http', port: 9080, targetPort: appPort, protocol: 'http' }], config: { sidecar, probe: { tcp: { port: appPort } } } }));
  c.greeterLog = captureLog();
  c.workloads.push(await startWorkload(c.world, 'west', { service: 'greeter', app: false, log: c.greeterLog.log, ports: [{ name: 'grpc', port: 9090, targetPort: c.grpcApp.port, protocol: 'grpc' }], config: { sidecar, probe: { tcp: { port: c.grpcApp.port } } } }));
  c.clientLog = captureLog();
  c.client = await startWorkload(c.world, 'east', { service: 'productpage', app: false, log: c.clientLog.log, config: { sidecar } });
  c.workloads.push(c.client);
  for (const service of ['reviews', 'greeter']) {
    await waitFor(() => targetsOf(c.client.sidecar, service).some((x) => x.kind === 'gateway' && x.healthy), { what: `west's ${service} through west's gateway`, timeoutMs: 60_000 });
  }
  await c.client.sidecar.settled();
});

test.after.always(async (t) => {
  const c = t.context as Partial<World>;
  for (const w of c.workloads ?? []) await w.close().catch(() => undefined);
  await c.grpcApp?.close().catch(() => undefined);
  await c.closeApp?.().catch(() => undefined);
  await c.world?.close();
  await c.receiver?.close();
});

/** The trace whose server span `isServer` picks (client → gateway hop → server, linked), checked for west's gateway and both parties. */
async function traceOf(t: import('ava').ExecutionContext, isServer: (r: ReceivedSpan) => boolean): Promise<{ client: ReceivedSpan; hop: ReceivedSpan; server: ReceivedSpan }> {
  const { client, hop, server } = await callTrace(t, ctx(t).receiver.spans, isServer);
  t.is(hop.span.name, 'gateway west');
  const h = attrs(hop.span.attributes);
  t.is(h['causeway.hop'], 'gateway');
  t.is(client.resource['causeway.cluster'], 'east');
  t.is(server.resource['causeway.cluster'], 'west');
  const s = attrs(server.span.attributes);
  t.is(s['causeway.source.principal'], spiffe('default', 'productpage'));
  t.is(s['causeway.source.cluster'], 'east');
  t.is(s['causeway.destination.cluster'], 'west');
  t.is(attrs(client.span.attributes)['causeway.source.principal'], spiffe('default', 'productpage'));
  return { client, hop, server };
}

function accessLine(log: ReturnType<typeof captureLog>, path: string): Promise<LogLine> {
  return waitFor(() => log.access().find((l) => l.path === path), { what: `the access-log line of ${path}`, timeoutMs: 30_000 });
}

/** One HTTP/1.1 GET through east's sidecar to reviews with `headers`; the status. */
function get(t: import('ava').ExecutionContext, path: string, headers: Record<string, string> = {}): Promise<number> {
  const address = ctx(t).client.sidecar.outbound.lookup('default', 'reviews')!.address;
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: address, port: 9080, path, agent: false, headers }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
    req.end();
  });
}

test.serial('a gRPC call east → gateway → west leaves one trace client → hop → server with rpc.grpc.status_code, and one generated x-request-id on both sides', async (t) => {
  const c = ctx(t);
  const client = echoClient(c.client.sidecar.outbound.lookup('default', 'greeter')!.address, 9090);
  t.teardown(() => client.close());
  const answer = await echo(client);
  t.false('code' in answer, JSON.stringify(answer));
  const { client: clientSpan, hop, server } = await traceOf(t, (r) => attrs(r.span.attributes)['url.path'] === '/cw.test.Echo/Echo');
  for (const span of [clientSpan, server]) {
    const a = attrs(span.span.attributes);
    t.is(a['rpc.grpc.status_code'], '0');
    t.is(a['http.response.status_code'], '200');
    t.is(a['http.request.method'], 'POST');
    t.is(a['causeway.destination.service'], 'greeter.default');
    t.not(span.span.status?.code, 2);
  }
  t.is(attrs(hop.span.attributes)['causeway.destination.principal'], spiffe('default', 'greeter'));
  t.is(attrs(server.span.attributes)['causeway.destination.principal'], spiffe('default', 'greeter'));
  const out = await accessLine(c.clientLog, '/cw.test.Echo/Echo');
  const inbound = await accessLine(c.greeterLog, '/cw.test.Echo/Echo');
  t.regex(String(out.request_id), UUID_V4);
  t.is(inbound.request_id, out.request_id);
  t.is(out.trace_id, server.span.traceId);
  t.is(inbound.trace_id, server.span.traceId);
});

test.serial("an HTTP/1.0 request (Node's server path) leaves its client span, gateway hop and server span, and gets an x-request-id", async (t) => {
  const c = ctx(t);
  const address = c.client.sidecar.outbound.lookup('default', 'reviews')!.address;
  const response = await new Promise<string>((resolve, reject) => {
    const socket = netConnect({ host: address, port: 9080 }, () => socket.write('GET /http10 HTTP/1.0\r\nhost: reviews\r\n\r\n'));
    const chunks: Buffer[] = [];
    socket.on('data', (b: Buffer) => chunks.push(b));
    socket.once('end', () => resolve(Buffer.concat(chunks).toString()));
    socket.once('error', reject);
  });
  t.regex(response, /^HTTP\/1\.[01] 200 /);
  const { client: clientSpan } = await traceOf(t, (r) => attrs(r.span.attributes)['url.path'] === '/http10');
  const a = attrs(clientSpan.span.attributes);
  t.is(a['http.request.method'], 'GET');
  t.is(a['http.response.status_code'], '200');
  t.is(a['causeway.destination.cluster'], 'west');
  const out = await accessLine(c.clientLog, '/http10');
  t.is(out.protocol, 'HTTP/1.0');
  t.is(out.trace_id, clientSpan.span.traceId);
  const id = c.seen.get('/http10')?.['x-request-id'];
  t.regex(String(id), UUID_V4);
  t.is(out.request_id, id);
  t.is((await accessLine(c.reviewsLog, '/http10')).request_id, id);
});

test.serial('x-request-id on the fast path: generated when absent (app and both access logs see it), kept when valid, replaced when invalid', async (t) => {
  const c = ctx(t);
  t.is(await get(t, '/rid-absent'), 200);
  const generated = c.seen.get('/rid-absent')?.['x-request-id'];
  t.regex(String(generated), UUID_V4);
  t.is((await accessLine(c.clientLog, '/rid-absent')).request_id, generated);
  t.is((await accessLine(c.reviewsLog, '/rid-absent')).request_id, generated);

  t.is(await get(t, '/rid-kept', { 'x-request-id': 'order-4711:retry/2' }), 200);
  t.is(c.seen.get('/rid-kept')?.['x-request-id'], 'order-4711:retry/2');
  t.is((await accessLine(c.clientLog, '/rid-kept')).request_id, 'order-4711:retry/2');
  t.is((await accessLine(c.reviewsLog, '/rid-kept')).request_id, 'order-4711:retry/2');

  for (const [path, bad] of [
    ['/rid-long', 'x'.repeat(129)],
    ['/rid-space', 'has a space'],
  ] as const) {
    t.is(await get(t, path, { 'x-request-id': bad }), 200);
    const replaced = c.seen.get(path)?.['x-request-id'];
    t.regex(String(replaced), UUID_V4, path);
    t.is((await accessLine(c.clientLog, path)).request_id, replaced);
    t.is((await accessLine(c.reviewsLog, path)).request_id, replaced);
  }
  // The longest acceptable id is kept as it is.
  const longest = 'y'.repeat(128);
  t.is(await get(t, '/rid-128', { 'x-request-id': longest }), 200);
  t.is(c.seen.get('/rid-128')?.['x-request-id'], longest);
});

test.serial('a failing gRPC call: its spans carry the gRPC status and an error status on both sides', async (t) => {
  const c = ctx(t);
  const client = echoClient(c.client.sidecar.outbound.lookup('default', 'greeter')!.address, 9090);
  t.teardown(() => client.close());
  c.grpcApp.failWith(GrpcCode.NOT_FOUND);
  t.teardown(() => c.grpcApp.failWith(undefined));
  const answer = await echo(client, 'fail');
  t.is('code' in answer ? answer.code : undefined, GrpcCode.NOT_FOUND);
  const { client: clientSpan, server } = await traceOf(t, (r) => attrs(r.span.attributes)['rpc.grpc.status_code'] === String(GrpcCode.NOT_FOUND));
  for (const span of [clientSpan, server]) {
    t.is(attrs(span.span.attributes)['rpc.grpc.status_code'], String(GrpcCode.NOT_FOUND));
    t.is(span.span.status?.code, 2);
  }
});

test.serial("Expect: 100-continue goes through Node's server path on both sidecars: the server span comes from the callee's Node path, the app gets its traceparent", async (t) => {
  const c = ctx(t);
  const address = c.client.sidecar.outbound.lookup('default', 'reviews')!.address;
  const status = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: address, port: 9080, path: '/expect', method: 'POST', agent: false, headers: { expect: '100-continue', 'content-type': 'text/plain', 'content-length': '5' } }, (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('continue', () => req.end('hello'));
    req.once('error', reject);
  });
  t.is(status, 200);
  const { server } = await traceOf(t, (r) => attrs(r.span.attributes)['url.path'] === '/expect');
  t.is(attrs(server.span.attributes)['http.request.method'], 'POST');
  // The app's traceparent names the server span of the callee's sidecar.
  const traceparent = String(c.seen.get('/expect')?.traceparent);
  t.is(traceparent, `00-${server.span.traceId}-${server.span.spanId}-01`);
  t.regex(String(c.seen.get('/expect')?.['x-request-id']), UUID_V4);
});

test.serial('sidecar.requestId.generate: false leaves x-request-id to the app: none is added, the access log has null', async (t) => {
  const pki = await createMeshPki();
  const seen: (string | undefined)[] = [];
  const app = createServer((req, res) => {
    seen.push(req.headers['x-request-id'] as string | undefined);
    req.resume();
    res.writeHead(200, { 'content-length': '2' }).end('ok');
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    app.closeAllConnections();
    return new Promise<void>((resolve) => app.close(() => resolve()));
  });
  const server = await startTestSidecar({ cluster: 'east', service: 'reviews', pki, ports: [{ name: 'http', port: 9080, targetPort: (app.address() as AddressInfo).port, protocol: 'http' }] });
  t.teardown(() => server.close());
  const source = new StaticSnapshotSource();
  const log = captureLog();
  const client = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source, config: { sidecar: { accessLog: true, requestId: { generate: false } } }, extra: { log: log.log } });
  t.teardown(() => client.close());
  source.push(snapshot('east', [service('reviews', [endpointTarget('east', server.sidecar.inboundPort)])]));
  await client.sidecar.settled();
  const res = await meshGet(client.sidecar.outbound.lookup('default', 'reviews')!.address, 9080, '/no-id', { agent: false });
  t.is(res.status, 200);
  t.deepEqual(seen, [undefined]);
  t.is((await accessLine(log, '/no-id')).request_id, null);
});
