import test, { type ExecutionContext } from 'ava';
import { connect as h2connect, constants, createServer as createH2cServer, type IncomingHttpHeaders } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { ServiceError } from '@grpc/grpc-js';
import { connect as netConnect } from 'node:net';
import { startMesh, startWorkload, targetsOf, type MeshWorkload, type MeshWorld } from './helpers/clusters.js';
import { echo, echoClient, GrpcCode, startGrpcEchoApp, type EchoClient, type GrpcEchoApp } from './helpers/grpc.js';
import { captureLog, endpointTarget, metricValue, service, snapshot, spiffe, startTestSidecar, type LogLine } from './helpers/mesh.js';
import { createMeshPki, type MeshPki } from './helpers/pki.js';
import { TrafficPolicy, type SnapshotTarget } from '../../mesh/index.js';
import { StaticSnapshotSource } from '../../proxy/index.js';
import { waitFor } from '../../testkit/ports.js';

// Three clusters on loopback (real etcd, controllers, SNI gateways, sidecars, mTLS):
// the caller in east (eu); greeter in west and south, both in region us, so east's
// sidecar sees their two gateways in one priority group and picks per call between them.
const greeterSpec = { name: 'greeter', namespace: 'default', ports: [{ name: 'grpc', port: 9090, protocol: 'grpc' }], serviceAccounts: [spiffe('default', 'greeter')], exported: true };
const productpageSpec = { name: 'productpage', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'productpage')], exported: false };

interface Greeter {
  readonly workload: MeshWorkload;
  readonly app: GrpcEchoApp;
  close(): Promise<void>;
}

interface World {
  world: MeshWorld;
  client: MeshWorkload;
  greeters: Map<string, Greeter>;
}

/** A greeter workload: a gRPC app and its sidecar; `inboundProtocol: 'tcp'` makes its inbound carry the port as bytes, as sidecars before HTTP/2 did. */
async function startGreeter(world: MeshWorld, cluster: string, inboundProtocol: 'grpc' | 'tcp' = 'grpc', name = `greeter-${cluster}${inboundProtocol === 'tcp' ? '-tcp' : ''}`): Promise<Greeter> {
  const app = await startGrpcEchoApp(name);
  const workload = await startWorkload(world, cluster, { service: 'greeter', app: false, ports: [{ name: 'grpc', port: 9090, targetPort: app.port, protocol: inboundProtocol }], config: { probe: { tcp: { port: app.port } } } });
  return {
    workload,
    app,
    async close() {
      await workload.close();
      await app.close();
    },
  };
}

function ctx(t: { context: unknown }): World {
  return t.context as World;
}

test.serial.before(async (t) => {
  const world = await startMesh([
    { name: 'east', region: 'eu', zone: 'eu-1' },
    { name: 'west', region: 'us', zone: 'us-1' },
    { name: 'south', region: 'us', zone: 'us-2' },
  ]);
  Object.assign(t.context as object, { world, greeters: new Map() });
  for (const name of world.clusters.keys()) {
    await world.cluster(name).admin.applyService(productpageSpec);
    await world.cluster(name).admin.applyService(greeterSpec);
  }
  const greeters = ctx(t).greeters;
  greeters.set('west', await startGreeter(world, 'west'));
  greeters.set('south', await startGreeter(world, 'south'));
  // Five calls in flight can all meet a failing cluster before it is ejected: a retry
  // budget floor of 5 lets each of them retry (the budget itself is tested in
  // traffic-routes.test.ts).
  const client = await startWorkload(world, 'east', { service: 'productpage', app: false, config: { sidecar: { retryBudget: { percent: 20, minConcurrent: 5 } } } });
  ctx(t).client = client;
  await waitFor(() => new Set(targetsOf(client.sidecar, 'greeter').filter((x) => x.kind === 'gateway' && x.healthy).map((x) => x.cluster)).size === 2, { what: 'greeter imported from west and south', timeoutMs: 30_000 });
  await client.sidecar.settled();
});

test.after.always(async (t) => {
  const c = t.context as Partial<World>;
  await c.client?.close().catch(() => undefined);
  for (const g of c.greeters?.values() ?? []) await g.close().catch(() => undefined);
  await c.world?.close();
});

function channel(t: { context: unknown; teardown(fn: () => void): void }, cluster?: string): EchoClient {
  const address = ctx(t).client.sidecar.outbound.lookup('default', 'greeter', cluster)!.address;
  const client = echoClient(address, 9090);
  t.teardown(() => client.close());
  return client;
}

/** `count` unary calls on one channel, `concurrency` at a time; answers per app, and every failure. */
async function calls(client: EchoClient, count: number, concurrency = 5): Promise<{ apps: Map<string, number>; peers: Set<string | null>; failures: ServiceError[] }> {
  const apps = new Map<string, number>();
  const peers = new Set<string | null>();
  const failures: ServiceError[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const answer = await echo(client);
      if ('code' in answer) failures.push(answer);
      else {
        apps.set(answer.app, (apps.get(answer.app) ?? 0) + 1);
        peers.add(answer.peer);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { apps, peers, failures };
}

test.serial('100 unary calls on ONE gRPC channel spread over endpoints in two clusters; the servers learn the caller\'s SPIFFE ID', async (t) => {
  const { client } = ctx(t);
  const result = await calls(channel(t), 100);
  t.deepEqual(result.failures, []);
  t.true((result.apps.get('greeter-west') ?? 0) > 0, `west served none: ${JSON.stringify([...result.apps])}`);
  t.true((result.apps.get('greeter-south') ?? 0) > 0, `south served none: ${JSON.stringify([...result.apps])}`);
  t.deepEqual([...result.peers], [spiffe('default', 'productpage')]);
  // Each call is one request in the sidecar's metrics; each peer is one pooled HTTP/2 session.
  const requests = async (cluster: string) => metricValue(client.sidecar, 'causeway_sidecar_http_requests_total', { direction: 'outbound', destination_cluster: cluster, destination_service: 'greeter.default', code: '200' });
  t.is((await requests('west')) + (await requests('south')), 100);
  t.is(await metricValue(client.sidecar, 'causeway_sidecar_grpc_responses_total', { direction: 'outbound', grpc_status: '0' }), 100);
  t.is(await metricValue(client.sidecar, 'causeway_sidecar_h2_sessions', { direction: 'outbound', peer: 'mesh' }), 2);
  t.is(await metricValue(client.sidecar, 'causeway_sidecar_h2_sessions', { direction: 'outbound', peer: 'app' }), 1);
  t.true((await metricValue(ctx(t).greeters.get('west')!.workload.sidecar, 'causeway_sidecar_h2_sessions', { direction: 'inbound', peer: 'mesh' })) >= 1);
});

test.serial('calls that get UNAVAILABLE from one cluster are retried on the other and its gateway is ejected; no call fails', async (t) => {
  const { client, greeters } = ctx(t);
  const south = greeters.get('south')!;
  south.app.failWith(GrpcCode.UNAVAILABLE);
  t.teardown(() => south.app.failWith(undefined));
  const before = south.app.calls();
  const result = await calls(channel(t), 100);
  t.deepEqual(result.failures, []);
  t.is(result.apps.get('greeter-south'), undefined);
  t.is(result.apps.get('greeter-west'), 100);
  t.true(south.app.calls() > before, 'south was tried');
  t.true((await metricValue(client.sidecar, 'causeway_sidecar_outlier_ejections_total', { destination_cluster: 'south', reason: 'grpc-status' })) >= 1);
  t.true((await metricValue(client.sidecar, 'causeway_sidecar_grpc_responses_total', { direction: 'inbound', grpc_status: '14' })) === 0, 'the client sidecar counts only outbound calls');
});

test.serial('server-streaming calls pass through message by message', async (t) => {
  const stream = channel(t).Count(Buffer.from('20'));
  const received: { app: string; i: number }[] = [];
  for await (const message of stream as AsyncIterable<Buffer>) received.push(JSON.parse(message.toString()) as { app: string; i: number });
  t.deepEqual(received.map((m) => m.i), Array.from({ length: 20 }, (_, i) => i));
  t.is(new Set(received.map((m) => m.app)).size, 1, 'one call, one server');
});

test.serial('a client-streaming call of 1 MiB (beyond what a replay holds) streams through whole', async (t) => {
  const answer = await new Promise<{ app: string; bytes: number; messages: number }>((resolve, reject) => {
    const call = channel(t).Size((error, response) => (error ? reject(error) : resolve(JSON.parse(response!.toString()) as { app: string; bytes: number; messages: number })));
    for (let i = 0; i < 64; i++) call.write(Buffer.alloc(16 * 1024, i));
    call.end();
  });
  t.is(answer.messages, 64);
  t.is(answer.bytes, 64 * 16 * 1024);
});

test.serial('authorization is decided per stream: a denied call gets PERMISSION_DENIED, counted; the sidecar\'s own failures are gRPC UNAVAILABLE with a message', async (t) => {
  const { world, client, greeters } = ctx(t);
  const west = world.cluster('west');
  await west.admin.applyPolicy('authorization', { name: 'deny-productpage', namespace: 'default', service: 'greeter', action: 'deny', from: [{ identities: [spiffe('default', 'productpage')] }] });
  const westSidecar = greeters.get('west')!.workload.sidecar;
  t.teardown(async () => {
    await west.admin.deletePolicy('authorization', 'deny-productpage', 'default');
    // The next tests call west again: the policy must be gone from its sidecar first.
    await waitFor(() => westSidecar.snapshot?.authorization.length === 0, { what: 'policy removed from west', timeoutMs: 20_000 });
  });
  await waitFor(() => (westSidecar.snapshot?.authorization.length ?? 0) > 0, { what: 'policy pushed to west', timeoutMs: 20_000 });
  await westSidecar.settled();
  const denied = await echo(channel(t, 'west'));
  t.true('code' in denied && denied.code === GrpcCode.PERMISSION_DENIED, JSON.stringify(denied));
  t.true((await metricValue(westSidecar, 'causeway_sidecar_authorization_denials_total', { policy: 'default/deny-productpage' })) >= 1);
  t.true((await metricValue(westSidecar, 'causeway_sidecar_grpc_responses_total', { direction: 'inbound', grpc_status: String(GrpcCode.PERMISSION_DENIED) })) >= 1);

  // A service with a gRPC port and no endpoint anywhere: the sidecar answers itself.
  await world.cluster('east').admin.applyService({ ...greeterSpec, name: 'nobody', serviceAccounts: [spiffe('default', 'nobody')] });
  await waitFor(() => client.sidecar.outbound.lookup('default', 'nobody'), { what: 'a listener for nobody', timeoutMs: 20_000 });
  const lonely = echoClient(client.sidecar.outbound.lookup('default', 'nobody')!.address, 9090);
  t.teardown(() => lonely.close());
  const refused = await echo(lonely);
  t.true('code' in refused && refused.code === GrpcCode.UNAVAILABLE && /no healthy/.test(refused.details), JSON.stringify(refused));
});

test.serial('garbage and HTTP/1.1 on a gRPC listener fail only that connection: the sidecar stays up and calls on other connections go on', async (t) => {
  const { client } = ctx(t);
  const address = client.sidecar.outbound.lookup('default', 'greeter')!.address;
  const garbage = [Buffer.from('GET / HTTP/1.1\r\nhost: x\r\n\r\n'), Buffer.alloc(4096, 0xff)];
  for (const bytes of garbage) {
    const socket = netConnect({ host: address, port: 9090 });
    t.teardown(() => socket.destroy());
    socket.on('error', () => {});
    socket.write(bytes);
  }
  await waitFor(async () => (await metricValue(client.sidecar, 'causeway_sidecar_h2_sessions', { direction: 'outbound', peer: 'app' })) === 0, { what: 'the failed sessions to be gone', timeoutMs: 10_000 });
  const result = await calls(channel(t), 10);
  t.deepEqual(result.failures, []);
});

test.serial('grpc-timeout is the call\'s deadline: the sidecar answers DEADLINE_EXCEEDED when it passes and cancels the call upstream', async (t) => {
  const { client, greeters } = ctx(t);
  for (const g of greeters.values()) g.app.delay(5000);
  t.teardown(() => {
    for (const g of greeters.values()) g.app.delay(0);
  });
  const cancelledBefore = [...greeters.values()].reduce((n, g) => n + g.app.cancelled(), 0);
  // A raw HTTP/2 client: it sends grpc-timeout but keeps no deadline of its own, so what ends the call is the sidecar.
  const address = client.sidecar.outbound.lookup('default', 'greeter')!.address;
  const session = h2connect(`http://${address}:9090`);
  t.teardown(() => session.close());
  const started = Date.now();
  const stream = session.request({ ':method': 'POST', ':path': '/cw.test.Echo/Echo', 'content-type': 'application/grpc', te: 'trailers', 'grpc-timeout': '300m' });
  const message = Buffer.from('hi');
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  stream.end(frame);
  const [headers, flags] = await new Promise<[IncomingHttpHeaders, number]>((resolve) => stream.once('response', (h: IncomingHttpHeaders, f: number) => resolve([h, f])));
  t.is(headers['grpc-status'], String(GrpcCode.DEADLINE_EXCEEDED));
  t.is(flags & constants.NGHTTP2_FLAG_END_STREAM, constants.NGHTTP2_FLAG_END_STREAM, 'a trailers-only response');
  t.true(Date.now() - started < 4000, `answered after ${Date.now() - started} ms`);
  await waitFor(() => [...greeters.values()].reduce((n, g) => n + g.app.cancelled(), 0) > cancelledBefore, { what: 'the app to see the call cancelled', timeoutMs: 10_000 });
  t.true((await metricValue(client.sidecar, 'causeway_sidecar_grpc_responses_total', { direction: 'outbound', grpc_status: String(GrpcCode.DEADLINE_EXCEEDED) })) >= 1);
});

test.serial('a peer whose inbound carries the port as TCP (a sidecar from before HTTP/2) still serves the calls, on the same session', async (t) => {
  const { world, client } = ctx(t);
  const old = await startGreeter(world, 'east', 'tcp');
  t.teardown(() => old.close());
  await waitFor(() => targetsOf(client.sidecar, 'greeter').some((x) => x.kind === 'endpoint' && x.healthy), { what: 'the east greeter endpoint', timeoutMs: 20_000 });
  await client.sidecar.settled();
  const result = await calls(channel(t, 'east'), 20);
  t.deepEqual(result.failures, []);
  t.is(result.apps.get('greeter-east-tcp'), 20);
  t.is(await metricValue(old.workload.sidecar, 'causeway_sidecar_h2_sessions', { direction: 'inbound' }), 0, 'the old-style inbound terminated no HTTP/2');
});

/** A sample of west's gateway's metrics (in-process gateway, text format). */
async function gatewaySample(world: MeshWorld, cluster: string, name: string, labels: string): Promise<number | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${world.cluster(cluster).gateway!.metricsPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? undefined : Number(line.split(' ').at(-1));
}

test.serial('calls to one peer cluster spread over its endpoints: a session to its gateway per healthy endpoint behind it (the gateway balances per connection)', async (t) => {
  const { world, client, greeters } = ctx(t);
  const second = await startGreeter(world, 'west', 'grpc', 'greeter-west-2');
  t.teardown(() => second.close());
  const westWeight = () => targetsOf(client.sidecar, 'greeter').find((x) => x.kind === 'gateway' && x.cluster === 'west')?.weight;
  await waitFor(() => westWeight() === 2, { what: "west's gateway target with 2 healthy endpoints behind it", timeoutMs: 30_000 });
  // West's gateway routes to both (its table can trail the export east read the weight from).
  await waitFor(async () => (await gatewaySample(world, 'west', 'causeway_gateway_service_endpoints', 'health="healthy"')) === 2, { what: "west's gateway routing to 2 healthy greeter endpoints", timeoutMs: 30_000 });
  await client.sidecar.settled();
  const inboundSessions = (g: Greeter) => metricValue(g.workload.sidecar, 'causeway_sidecar_h2_sessions', { direction: 'inbound', peer: 'mesh' });
  const result = await calls(channel(t, 'west'), 60);
  t.deepEqual(result.failures, []);
  t.true((result.apps.get('greeter-west') ?? 0) > 0 && (result.apps.get('greeter-west-2') ?? 0) > 0, `both west endpoints serve: ${JSON.stringify([...result.apps])}`);
  t.true((await inboundSessions(greeters.get('west')!)) >= 1 && (await inboundSessions(second)) >= 1, 'each west sidecar holds a session from east');
  await second.close();
  await waitFor(() => westWeight() === 1, { what: "west's gateway target back to 1 endpoint", timeoutMs: 30_000 });
  await client.sidecar.settled();
  const after = await calls(channel(t, 'west'), 20);
  t.deepEqual(after.failures, [], 'calls go on after the endpoint left and the sessions shrank to one');
  t.deepEqual([...after.apps.keys()], ['greeter-west']);
});

test.serial('a whole cluster killed while calls run on one channel: zero failed calls', async (t) => {
  const { world, greeters } = ctx(t);
  const client = channel(t);
  const apps = new Map<string, number>();
  const failures: ServiceError[] = [];
  let running = true;
  const worker = async () => {
    while (running) {
      const answer = await echo(client);
      if ('code' in answer) failures.push(answer);
      else apps.set(answer.app, (apps.get(answer.app) ?? 0) + 1);
    }
  };
  const workers = Array.from({ length: 4 }, worker);
  await waitFor(() => (apps.get('greeter-south') ?? 0) >= 20 && (apps.get('greeter-west') ?? 0) >= 20, { what: 'calls served by both clusters', timeoutMs: 30_000 });
  const south = greeters.get('south')!;
  await south.workload.kill();
  await south.app.close();
  await world.cluster('south').stopGateway();
  const westBefore = apps.get('greeter-west') ?? 0;
  await waitFor(() => (apps.get('greeter-west') ?? 0) >= westBefore + 100, { what: '100 more calls after south died', timeoutMs: 30_000 });
  running = false;
  await Promise.all(workers);
  t.deepEqual(failures.map((f) => f.message), []);
  greeters.delete('south');
  await world.cluster('south').startGateway();
});

// Traffic policy routes on gRPC ports, through real sidecars (mTLS, HTTP/2 both hops)
// with snapshots fed by hand (StaticSnapshotSource), as in traffic-routes.test.ts.
const greeterPorts: { name: string; port: number; protocol: 'grpc' | 'http2' }[] = [{ name: 'grpc', port: 9090, protocol: 'grpc' }];
let routePki: MeshPki | undefined;

/** A greeter app behind its own sidecar, as an endpoint target of the hand-fed snapshots. */
async function routedGreeter(t: ExecutionContext, name: string, log?: ReturnType<typeof captureLog>): Promise<{ app: GrpcEchoApp; target: SnapshotTarget }> {
  const app = await startGrpcEchoApp(name);
  t.teardown(() => app.close());
  return { app, target: await greeterSidecar(t, app.port, 'grpc', log) };
}

/** The sidecar of a greeter app listening on `appPort`, serving port 9090 as `protocol`; its endpoint target. */
async function greeterSidecar(t: ExecutionContext, appPort: number, protocol: 'grpc' | 'http2', log?: ReturnType<typeof captureLog>): Promise<SnapshotTarget> {
  routePki ??= await createMeshPki();
  const sc = await startTestSidecar({
    cluster: 'east',
    service: 'greeter',
    pki: routePki,
    ports: [{ name: protocol, port: 9090, targetPort: appPort, protocol }],
    config: log ? { sidecar: { accessLog: { enabled: true } } } : {},
    extra: log ? { log: log.log } : undefined,
  });
  t.teardown(() => sc.close());
  return endpointTarget('east', sc.sidecar.inboundPort);
}

/** A client sidecar whose snapshot has greeter at `targets` under a traffic policy; one gRPC channel to it. */
async function routedChannel(t: ExecutionContext, targets: SnapshotTarget[], policy: Record<string, unknown>, log?: ReturnType<typeof captureLog>, ports = greeterPorts) {
  routePki ??= await createMeshPki();
  const source = new StaticSnapshotSource();
  const sc = await startTestSidecar({ cluster: 'east', service: 'productpage', pki: routePki, source, config: log ? { sidecar: { accessLog: { enabled: true } } } : {}, extra: log ? { log: log.log } : undefined });
  t.teardown(() => sc.close());
  source.push(snapshot('east', [service('greeter', targets, { ports })], { traffic: [TrafficPolicy.parse({ schema: 1, name: 'greeter', namespace: 'default', service: 'greeter', ...policy })] }));
  await sc.sidecar.settled();
  const address = sc.sidecar.outbound.lookup('default', 'greeter')!.address;
  const client = echoClient(address, 9090);
  t.teardown(() => client.close());
  return { sc, client, address };
}

/** Outlier detection that never ejects within a test: every call meets both targets' answers. */
const noEjection = { consecutiveFailures: 1000, baseEjectionMs: 1000 };

test.serial("a route's retries.on names the gRPC codes retried: with unavailable every call succeeds on the other target, without it UNAVAILABLE reaches the app", async (t) => {
  const bad = await routedGreeter(t, 'greeter-bad');
  const good = await routedGreeter(t, 'greeter-good');
  bad.app.failWith(GrpcCode.UNAVAILABLE);
  const targets = [bad.target, good.target];
  const retried = await routedChannel(t, targets, { outlierDetection: noEjection, routes: [{ name: 'echo', match: { path: { prefix: '/cw.test.Echo/' } }, retries: { attempts: 1, on: ['unavailable'] } }] });
  const withCode = await calls(retried.client, 30, 2);
  t.deepEqual(withCode.failures, []);
  t.is(withCode.apps.get('greeter-good'), 30);
  t.true(bad.app.calls() > 0, 'the failing target was tried');
  t.true((await metricValue(retried.sc.sidecar, 'causeway_sidecar_http_retries_total', { destination_service: 'greeter.default', route: 'echo', reason: 'response' })) >= 1);

  const badBefore = bad.app.calls();
  const notRetried = await routedChannel(t, targets, { outlierDetection: noEjection, routes: [{ name: 'echo', match: { path: { prefix: '/cw.test.Echo/' } }, retries: { attempts: 1, on: ['connect-failure', 'internal'] } }] });
  const withoutCode = await calls(notRetried.client, 30, 2);
  t.true(withoutCode.failures.length > 0, 'calls that met the failing target failed');
  t.is(withoutCode.failures.length, bad.app.calls() - badBefore, 'each call the failing target answered failed, none was retried');
  t.deepEqual(new Set(withoutCode.failures.map((f) => f.code)), new Set([GrpcCode.UNAVAILABLE]));
  t.is(await metricValue(notRetried.sc.sidecar, 'causeway_sidecar_http_retries_total', { destination_service: 'greeter.default', route: 'echo', reason: 'response' }), 0);
});

/** A route retrying UNAVAILABLE once on the other target. */
const retryUnavailable = { routes: [{ name: 'echo', match: { path: { prefix: '/cw.test.Echo/' } }, retries: { attempts: 1, on: ['unavailable'] } }] };

test.serial('UNAVAILABLE in the trailers after response headers (no message) is retried on the other target like a trailers-only one, and the target is ejected; no call fails', async (t) => {
  const clientLog = captureLog();
  const bad = await routedGreeter(t, 'greeter-bad');
  const good = await routedGreeter(t, 'greeter-good');
  // grpc-js sends the response headers at sendMetadata(), the status later in the trailers.
  bad.app.failWith(GrpcCode.UNAVAILABLE, 'headers');
  const { sc, client } = await routedChannel(t, [bad.target, good.target], { outlierDetection: { consecutiveFailures: 3, baseEjectionMs: 60_000 }, ...retryUnavailable }, clientLog);
  const result = await calls(client, 40, 2);
  t.deepEqual(result.failures.map((f) => `${f.code} ${f.details}`), []);
  t.is(result.apps.get('greeter-good'), 40);
  const badCalls = bad.app.calls();
  t.true(badCalls >= 1, 'the failing target was tried');
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_http_retries_total', { destination_service: 'greeter.default', route: 'echo', reason: 'response' }), badCalls, 'each call the failing target answered was retried');
  t.true((await metricValue(sc.sidecar, 'causeway_sidecar_outlier_ejections_total', { destination_cluster: 'east', reason: 'grpc-status' })) >= 1, 'ejected for its grpc-status');
  const outbound = (l: LogLine) => l.direction === 'outbound' && l.destination_service === 'greeter.default';
  const lines = await waitFor(() => (clientLog.access().filter(outbound).length === 40 ? clientLog.access().filter(outbound) : undefined), { what: 'forty outbound access-log lines', timeoutMs: 20_000 });
  t.is(lines.filter((l) => l.retries === 1).length, badCalls, 'a retried call logs retries: 1');
  for (const line of lines) t.like(line, { grpc_status: 0, result: 'ok', response_code: 200 });
  // Ejected: the next calls never meet it.
  const more = await calls(client, 20, 2);
  t.deepEqual(more.failures, []);
  t.is(bad.app.calls(), badCalls, 'no call reached the ejected target');
});

test.serial('a response that sent a message before UNAVAILABLE is committed: the app gets the message and the status, nothing is retried', async (t) => {
  const bad = await routedGreeter(t, 'greeter-bad');
  const good = await routedGreeter(t, 'greeter-good');
  bad.app.failWith(GrpcCode.UNAVAILABLE, 'message');
  const { sc, client } = await routedChannel(t, [bad.target, good.target], { outlierDetection: noEjection, ...retryUnavailable });
  const outcomes: { apps: string[]; code: number }[] = [];
  for (let i = 0; i < 20; i++) {
    outcomes.push(
      await new Promise((resolve) => {
        const apps: string[] = [];
        const stream = client.Count(Buffer.from('1'));
        stream.on('data', (m: Buffer) => apps.push((JSON.parse(m.toString()) as { app: string }).app));
        stream.once('error', (error: ServiceError) => resolve({ apps, code: error.code }));
        stream.once('end', () => resolve({ apps, code: GrpcCode.OK }));
      }),
    );
  }
  const failed = outcomes.filter((o) => o.code !== GrpcCode.OK);
  t.true(failed.length > 0, 'calls met the failing target');
  t.is(failed.length, bad.app.calls(), 'each call the failing target answered failed: none was retried');
  for (const o of failed) t.deepEqual(o, { apps: ['greeter-bad'], code: GrpcCode.UNAVAILABLE }, 'the message, then the status');
  for (const o of outcomes.filter((x) => x.code === GrpcCode.OK)) t.deepEqual(o.apps, ['greeter-good']);
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_http_retries_total', { destination_service: 'greeter.default', route: 'echo' }), 0);
});

test.serial('trailers after response headers with a status the route does not retry, or with OK and no message, reach the app as they came', async (t) => {
  const bad = await routedGreeter(t, 'greeter-bad');
  const good = await routedGreeter(t, 'greeter-good');
  bad.app.failWith(GrpcCode.INTERNAL, 'headers');
  const { sc, client } = await routedChannel(t, [bad.target, good.target], { outlierDetection: noEjection, ...retryUnavailable });
  const result = await calls(client, 20, 2);
  t.true(result.failures.length > 0, 'calls met the failing target');
  t.is(result.failures.length, bad.app.calls(), 'each call the failing target answered failed: INTERNAL is not retried here');
  t.deepEqual(new Set(result.failures.map((f) => `${f.code} ${f.details}`)), new Set([`${GrpcCode.INTERNAL} greeter-bad fails on purpose`]));
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_http_retries_total', { destination_service: 'greeter.default', route: 'echo' }), 0);

  // Headers, then trailers with OK: a server stream with no message.
  bad.app.failWith(undefined);
  for (const g of [bad, good]) g.app.holdFirstMessage(Promise.resolve());
  const messages: Buffer[] = [];
  const stream = client.Count(Buffer.from('0'));
  stream.on('data', (m: Buffer) => messages.push(m));
  await new Promise<void>((resolve, reject) => {
    stream.once('end', resolve);
    stream.once('error', reject);
  });
  t.deepEqual(messages, []);
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_grpc_responses_total', { direction: 'outbound', grpc_status: '0' }), result.apps.get('greeter-good')! + 1);
});

test.serial("a server-streaming call whose first message waits gets its response headers anyway: the server sends the message only once the app has seen the headers", async (t) => {
  const one = await routedGreeter(t, 'greeter-one');
  const two = await routedGreeter(t, 'greeter-two');
  let headersSeen!: () => void;
  const gate = new Promise<void>((resolve) => (headersSeen = resolve));
  for (const g of [one, two]) g.app.holdFirstMessage(gate);
  const { sc, client } = await routedChannel(t, [one.target, two.target], { outlierDetection: noEjection, ...retryUnavailable });
  const events: string[] = [];
  const stream = client.Count(Buffer.from('3'));
  t.teardown(() => stream.cancel());
  stream.once('metadata', () => {
    events.push('metadata');
    headersSeen();
  });
  stream.on('data', () => events.push('message'));
  const ended = new Promise<void>((resolve, reject) => {
    stream.once('end', resolve);
    stream.once('error', reject);
  });
  // Held for good, the headers would never come: the server waits for them to send anything.
  await waitFor(() => events.length >= 4, { what: 'the headers, then three messages', timeoutMs: 20_000 });
  await ended;
  t.deepEqual(events, ['metadata', 'message', 'message', 'message']);
  t.is(one.app.calls() + two.app.calls(), 1, 'one call, not retried');
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_grpc_responses_total', { direction: 'outbound', grpc_status: '0' }), 1);
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_grpc_headers_hold_expired_total', { destination_service: 'greeter.default' }), 1, 'counted as a call whose headers waited the whole hold');
});

test.serial("a gRPC route over its rate limit answers RESOURCE_EXHAUSTED (trailers-only, grpc-status 8) and the call never reaches the app; the access log has one HTTP/2 line per call with grpc_status from the trailers", async (t) => {
  const clientLog = captureLog();
  const serverLog = captureLog();
  const greeter = await routedGreeter(t, 'greeter-limited', serverLog);
  const { sc, client } = await routedChannel(t, [greeter.target], { routes: [{ name: 'limited', match: { path: { prefix: '/cw.test.Echo/' } }, rateLimit: { requestsPerSecond: 1, burst: 2 } }] }, clientLog);
  // At once, so that the refill (1 a second) adds little while they arrive.
  const answers = await Promise.all(Array.from({ length: 8 }, () => echo(client)));
  const limited = answers.filter((a): a is ServiceError => 'code' in a);
  const passed = answers.length - limited.length;
  t.true(passed >= 2 && limited.length >= 3, `${passed} passed, ${limited.length} limited`);
  t.deepEqual(new Set(limited.map((f) => f.code)), new Set([GrpcCode.RESOURCE_EXHAUSTED]));
  t.regex(limited[0]!.details, /route limited is over its rate limit \(1 requests\/s, burst 2\)/);
  t.is(limited[0]!.metadata.get('x-causeway-error')[0], 'CW_PROXY_RATE_LIMITED');
  t.is(greeter.app.calls(), passed, 'a refused call never reaches the app');
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_rate_limited_total', { destination_service: 'greeter.default', route: 'limited' }), limited.length);
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_grpc_responses_total', { direction: 'outbound', grpc_status: '8' }), limited.length);

  const outbound = (l: LogLine) => l.direction === 'outbound' && l.destination_service === 'greeter.default';
  const lines = await waitFor(() => (clientLog.access().filter(outbound).length === 8 ? clientLog.access().filter(outbound) : undefined), { what: 'eight outbound access-log lines', timeoutMs: 20_000 });
  const ok = lines.filter((l) => l.grpc_status === 0);
  t.is(ok.length, passed, 'an answered call logs grpc-status 0, which came in its trailers (after the message)');
  for (const line of ok) {
    t.like(line, { method: 'POST', path: '/cw.test.Echo/Echo', protocol: 'HTTP/2', response_code: 200, response_flags: '-', route: 'limited', end_reason: 'ok', result: 'ok', upstream_cluster: 'east', destination_principal: spiffe('default', 'greeter'), source_principal: spiffe('default', 'productpage') });
    t.true((line.bytes_sent as number) > 0 && (line.bytes_received as number) > 0, JSON.stringify(line));
  }
  const refused = lines.filter((l) => l.grpc_status === 8);
  t.is(refused.length, limited.length);
  for (const line of refused) t.like(line, { protocol: 'HTTP/2', response_code: 200, response_flags: 'RL', route: 'limited', end_reason: 'rate-limited', result: 'CW_PROXY_RATE_LIMITED' });
  const inbound = await waitFor(() => (serverLog.access().filter((l) => l.direction === 'inbound').length === passed ? serverLog.access().filter((l) => l.direction === 'inbound') : undefined), { what: 'the server sidecar\'s inbound lines', timeoutMs: 20_000 });
  for (const line of inbound) t.like(line, { protocol: 'HTTP/2', path: '/cw.test.Echo/Echo', response_code: 200, grpc_status: 0, result: 'ok', source_principal: spiffe('default', 'productpage') });
});

test.serial("an http2 port (not gRPC): streams take the route their :path matches, and one over the route's rate limit gets 429 with CW_PROXY_RATE_LIMITED", async (t) => {
  const app = createH2cServer((req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(`h2 app ${req.url}`));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => app.close(() => resolve())));
  const target = await greeterSidecar(t, (app.address() as AddressInfo).port, 'http2');
  const { sc, address } = await routedChannel(t, [target], { routes: [{ name: 'limited', match: { path: { prefix: '/limited' } }, rateLimit: { requestsPerSecond: 1, burst: 1 } }] }, undefined, [{ name: 'http2', port: 9090, protocol: 'http2' }]);
  const session = h2connect(`http://${address}:9090`);
  t.teardown(() => session.close());
  session.on('error', () => {});
  const get = (path: string) =>
    new Promise<{ status: number; headers: IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const stream = session.request({ ':path': path });
      const chunks: Buffer[] = [];
      let headers: IncomingHttpHeaders = {};
      stream.once('response', (h) => (headers = h));
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.once('end', () => resolve({ status: Number(headers[':status']), headers, body: Buffer.concat(chunks).toString() }));
      stream.once('error', reject);
    });
  const answers = await Promise.all(Array.from({ length: 5 }, () => get('/limited/x')));
  const limited = answers.filter((a) => a.status === 429);
  t.is(answers.filter((a) => a.status === 200).length + limited.length, 5, answers.map((a) => a.status).join(','));
  t.true(limited.length >= 2, `${limited.length} limited`);
  t.is(limited[0]!.headers['x-causeway-error'], 'CW_PROXY_RATE_LIMITED');
  t.regex(limited[0]!.body, /route limited is over its rate limit/);
  t.is(await metricValue(sc.sidecar, 'causeway_sidecar_rate_limited_total', { destination_service: 'greeter.default', route: 'limited' }), limited.length);
  const others = await Promise.all(Array.from({ length: 5 }, () => get('/other')));
  t.deepEqual(others.map((a) => `${a.status} ${a.body}`), Array.from({ length: 5 }, () => '200 h2 app /other'), 'other paths take the default route, which has no limit');
});
