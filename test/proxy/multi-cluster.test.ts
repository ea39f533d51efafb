import test from 'ava';
import { Resolver } from 'node:dns/promises';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { reviewsSpec, startMesh, startReviewsCaller, startWorkload, targetsOf, type MeshWorkload, type MeshWorld } from './helpers/clusters.js';
import { get, load, metricValue, spiffe } from './helpers/mesh.js'
import { waitFor } from '../../testkit/ports.js';

// Three clusters on loopback, each with a real etcd, controller (CA + federation links)
// and SNI gateway: east and west share region eu, south is in us. Sidecars talk to
// their controller for real (discovery stream + registration).
test.serial.before(async (t) => {
  const world = await startMesh([
    { name: 'east', region: 'eu', zone: 'eu-1' },
    { name: 'west', region: 'eu', zone: 'eu-2' },
    { name: 'south', region: 'us', zone: 'us-1' },
  ]);
  (t.context as { world: MeshWorld }).world = world;
});

test.after.always(async (t) => {
  await (t.context as { world?: MeshWorld }).world?.close();
});

const ratingsSpec = { ...reviewsSpec, name: 'ratings', serviceAccounts: [spiffe('default', 'ratings')] };


test.serial('an app in east calls a service only in west/south by its natural name and port, through the gateway; the server learns east\'s SPIFFE ID', async (t) => {
  const world = (t.context as { world: MeshWorld }).world;
  const client = await startReviewsCaller(t, world, ['west', 'south']);
  t.deepEqual(new Set(targetsOf(client.sidecar, 'reviews').map((x) => x.kind)), new Set(['gateway']));

  const resolver = new Resolver({ timeout: 10_000, tries: 2 });
  resolver.setServers([`127.0.0.1:${client.sidecar.dnsPort}`]);
  const [address] = await resolver.resolve4('reviews.default.svc.causeway.internal');
  const res = await get(address!, 9080, '/hello');
  t.is(res.status, 200);
  t.is(res.json?.app, 'reviews-west', 'same region (west) before other regions (south)');
  t.is(res.json?.peer, spiffe('default', 'productpage'));
  t.is(res.json?.peerCluster, 'east');
  // Pinned to a cluster by name.
  const [southAddress] = await resolver.resolve4('reviews.default.svc.south.causeway.internal');
  t.is((await get(southAddress!, 9080)).json?.app, 'reviews-south');

  // Killing west's gateway moves the traffic to south (next region) with no failed request.
  const run = load(address!);
  await waitFor(() => run.ok() >= 20, { what: 'traffic through west', timeoutMs: 20_000 });
  await world.cluster('west').stopGateway();
  await waitFor(() => (run.apps.get('reviews-south') ?? 0) >= 20, { what: 'traffic through south', timeoutMs: 20_000 });
  await run.stop();
  t.deepEqual(run.failures, []);
  await world.cluster('west').startGateway();
});

test.serial('a service in both clusters is served locally; killing the local endpoints moves traffic to west with zero failed requests', async (t) => {
  const world = (t.context as { world: MeshWorld }).world;
  for (const name of ['east', 'west']) await world.cluster(name).admin.applyService(ratingsSpec);
  const workloads: MeshWorkload[] = [];
  t.teardown(async () => {
    for (const w of workloads) await w.close().catch(() => undefined);
  });
  const local1 = await startWorkload(world, 'east', { service: 'ratings' });
  const local2 = await startWorkload(world, 'east', { service: 'ratings' });
  workloads.push(local1, local2, await startWorkload(world, 'west', { service: 'ratings' }));
  const client = await startWorkload(world, 'east', { service: 'productpage', app: false });
  workloads.push(client);
  await waitFor(() => {
    const targets = targetsOf(client.sidecar, 'ratings');
    return targets.filter((x) => x.kind === 'endpoint' && x.healthy).length === 2 && targets.some((x) => x.kind === 'gateway' && x.healthy);
  }, { what: 'ratings: two local endpoints and west', timeoutMs: 20_000 });
  await client.sidecar.settled();
  const address = client.sidecar.outbound.lookup('default', 'ratings')!.address;
  const run = load(address);
  await waitFor(() => run.ok() >= 30, { what: 'local traffic', timeoutMs: 20_000 });
  t.is(run.apps.get('ratings-west'), undefined, 'served locally while local endpoints are up');
  await local1.kill();
  await local2.kill();
  await waitFor(() => (run.apps.get('ratings-west') ?? 0) >= 30, { what: 'traffic in west', timeoutMs: 20_000 });
  await run.stop();
  t.deepEqual(run.failures, []);
  t.true((await metricValue(client.sidecar, 'causeway_sidecar_http_requests_total', { destination_cluster: 'west', destination_service: 'ratings.default', code: '200' })) >= 30);
});

test.serial('authorization deny from the controller is enforced and counted; a controller restart under load fails no request', async (t) => {
  const world = (t.context as { world: MeshWorld }).world;
  const east = world.cluster('east');
  await east.admin.applyService({ ...ratingsSpec, name: 'details', serviceAccounts: [spiffe('default', 'details')] });
  const server = await startWorkload(world, 'east', { service: 'details' });
  const client = await startWorkload(world, 'east', { service: 'productpage', app: false });
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  await waitFor(() => targetsOf(client.sidecar, 'details').some((x) => x.healthy), { what: 'details endpoint', timeoutMs: 20_000 });
  await client.sidecar.settled();
  const address = client.sidecar.outbound.lookup('default', 'details')!.address;
  t.is((await get(address, 9080)).status, 200);

  const run = load(address);
  await waitFor(() => run.ok() >= 20, { what: 'traffic', timeoutMs: 20_000 });
  await east.stopController();
  await new Promise((r) => setTimeout(r, 500));
  await east.startController();
  await waitFor(() => run.ok() >= 60, { what: 'traffic after the restart', timeoutMs: 20_000 });
  await run.stop();
  t.deepEqual(run.failures, []);

  await east.admin.applyPolicy('authorization', { name: 'deny-productpage', namespace: 'default', service: 'details', action: 'deny', from: [{ identities: [spiffe('default', 'productpage')] }] });
  await waitFor(() => (server.sidecar.snapshot?.authorization.length ?? 0) > 0, { what: 'policy pushed', timeoutMs: 20_000 });
  await server.sidecar.settled();
  const denied = await get(address, 9080);
  t.is(denied.status, 403);
  t.true((await metricValue(server.sidecar, 'causeway_sidecar_authorization_denials_total', { policy: 'default/deny-productpage' })) >= 1);
  await east.admin.deletePolicy('authorization', 'deny-productpage', 'default');
});

test.serial("a traffic policy's split in east sends every request to west's v2 instances through the real gateway; v1 gets none", async (t) => {
  const world = (t.context as { world: MeshWorld }).world;
  const canarySpec = { ...reviewsSpec, name: 'canary', serviceAccounts: [spiffe('default', 'canary')], subsets: { v1: { version: 'v1' }, v2: { version: 'v2' } } };
  await world.cluster('west').admin.applyService(canarySpec);
  const v1 = await startWorkload(world, 'west', { service: 'canary', config: { labels: { version: 'v1' } } });
  const v2 = await startWorkload(world, 'west', { service: 'canary', config: { labels: { version: 'v2' } } });
  const client = await startWorkload(world, 'east', { service: 'productpage', app: false });
  t.teardown(async () => {
    for (const w of [client, v1, v2]) await w.close();
    await world.cluster('east').admin.deletePolicy('traffic', 'canary-v2', 'default');
  });
  await waitFor(() => targetsOf(client.sidecar, 'canary').some((x) => x.kind === 'gateway' && x.healthy && x.weight === 2), { what: 'canary imported with both instances', timeoutMs: 20_000 });
  // The policy is the caller's: it lives in east's catalog, about a service east imports.
  await world.cluster('east').admin.applyPolicy('traffic', { name: 'canary-v2', namespace: 'default', service: 'canary', split: [{ subset: 'v1', weight: 0 }, { subset: 'v2', weight: 1 }] });
  await waitFor(() => (client.sidecar.snapshot?.traffic.some((p) => p.name === 'canary-v2') ?? false), { what: 'policy pushed to the east sidecar', timeoutMs: 20_000 });
  await client.sidecar.settled();
  const address = client.sidecar.outbound.lookup('default', 'canary')!.address;
  for (let i = 0; i < 20; i++) t.is((await get(address, 9080)).status, 200);
  // Requests from east as each west sidecar's inbound saw them (its app's hits include health probes).
  const fromEast = (w: MeshWorkload) => metricValue(w.sidecar, 'causeway_sidecar_http_requests_total', { direction: 'inbound', source_cluster: 'east' });
  t.is(await fromEast(v1), 0, 'the gateway sent none of the v2 SNIs to v1');
  t.is(await fromEast(v2), 20);
});

/** One GET on an HTTP/2 session; resolves with the status and the echo app's JSON. */
function h2Get(session: ClientHttp2Session, path: string): Promise<{ status: number; json: Record<string, unknown> | undefined }> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path });
    let status = 0;
    const chunks: Buffer[] = [];
    stream.on('response', (headers) => (status = Number(headers[':status'])));
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      try {
        resolve({ status, json: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown> });
      } catch {
        resolve({ status, json: undefined });
      }
    });
    stream.on('error', reject);
  });
}

test.serial('HTTP/2 from the app on an http port crosses clusters through the real gateways; when west goes, the same connection\'s next streams fail over to south', async (t) => {
  const world = (t.context as { world: MeshWorld }).world;
  const h2Spec = { ...reviewsSpec, name: 'details', serviceAccounts: [spiffe('default', 'details')] };
  for (const name of world.clusters.keys()) await world.cluster(name).admin.applyService(h2Spec);
  const workloads: MeshWorkload[] = [];
  t.teardown(async () => {
    for (const w of workloads) await w.close().catch(() => undefined);
  });
  const west = await startWorkload(world, 'west', { service: 'details' });
  workloads.push(west, await startWorkload(world, 'south', { service: 'details' }));
  const client = await startWorkload(world, 'east', { service: 'productpage', app: false });
  workloads.push(client);
  await waitFor(() => targetsOf(client.sidecar, 'details').filter((x) => x.kind === 'gateway' && x.healthy).length === 2, { what: 'details through west and south', timeoutMs: 20_000 });
  await client.sidecar.settled();
  const address = client.sidecar.outbound.lookup('default', 'details')!.address;
  // h2c with prior knowledge on the http port: one connection for every request below.
  const session = h2connect(`http://${address}:9080`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  for (let i = 0; i < 10; i++) {
    const res = await h2Get(session, `/west/${i}`);
    t.is(res.status, 200);
    t.is(res.json?.app, 'details-west', 'same region (west) before other regions (south)');
    t.is(res.json?.peer, spiffe('default', 'productpage'));
    t.is(res.json?.peerCluster, 'east');
  }
  await west.kill();
  // Each stream is planned on its own: the next ones go to south without a new connection, and none fails.
  const after = [];
  for (let i = 0; i < 20; i++) after.push(await h2Get(session, `/after/${i}`));
  t.deepEqual(after.map((r) => r.status), Array(20).fill(200));
  t.is(after.at(-1)!.json?.app, 'details-south');
  t.is(await metricValue(client.sidecar, 'causeway_sidecar_h2_sessions', { direction: 'outbound', peer: 'app' }), 1);
});
