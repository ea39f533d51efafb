import test from 'ava';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import dns2 from 'dns2';
import { generateKeyPairSync } from 'node:crypto';
import { Client, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { CREATE_CERTIFICATE_PATH } from '../../api-client/index.js';
import { CaError, createCsr, mintJoinToken, requestCertificate, signingServiceChannelCredentials } from '../../ca/index.js';
import { CATALOG_SCHEMA_VERSION, EtcdKeys, ExportedService, controllerIdentity, decodeCatalogValue } from '../../mesh/index.js';
import { waitFor } from '../../testkit/ports.js';
import { controllerWorld, reviews, spiffe, TD } from './harness.js';

const endpoint = (id: string, address = '127.0.0.10') => ({ service: 'reviews', namespace: 'default', endpointId: id, address, inboundPort: 15006, labels: { version: 'v1' } });

test('a nacked snapshot leaves the node on its previous version, and the next good one is delivered', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController();
  const nacks: string[] = [];
  const node = await world.discovery(controller, 'default/productpage', {
    accept: (s) => (s.services.some((svc) => svc.name === 'poison') ? 'cannot apply service "poison"' : undefined),
  });
  node.on('nack', (version) => nacks.push(version));
  const good = await node.firstSnapshot();

  await world.admin.applyService({ ...reviews, name: 'poison' });
  await waitFor(() => nacks.length === 1, { what: 'a nack' });
  t.is(node.version, good.version, 'the node keeps the version it had');
  await waitFor(() => controller.nodes()[0]?.nackedVersion === nacks[0]);
  t.like(controller.nodes()[0], { ackedVersion: good.version, nackReason: 'cannot apply service "poison"' });

  await world.admin.deleteService('poison', 'default');
  await world.admin.applyService({ ...reviews, name: 'details' });
  await waitFor(() => node.snapshot?.services.some((s) => s.name === 'details'), { what: 'the next good version' });
  t.not(node.version, good.version);
  await waitFor(() => controller.nodes()[0]?.ackedVersion === node.version);
});

test('export counts follow endpoint health: reported by the sidecar and from active checks', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService({ ...reviews, exported: true });
  const controller = await world.startController();
  const exportKey = EtcdKeys.exportedService('default', 'reviews');
  const readExport = async () => {
    const kv = await world.store.get(exportKey);
    if (!kv) return undefined;
    const d = decodeCatalogValue(ExportedService, exportKey, kv.value);
    return d.ok ? d.value : undefined;
  };
  const a = await world.registration(controller, 'default/reviews', endpoint('r-a', '127.0.0.11'));
  const b = await world.registration(controller, 'default/reviews', endpoint('r-b', '127.0.0.12'));
  await Promise.all([a.start(), b.start()]);
  await waitFor(async () => (await readExport())?.healthy[0]?.healthy === 2, { what: 'two healthy' });
  const first = await readExport();
  t.deepEqual(first?.healthy, [{ locality: { region: 'eu', zone: 'eu-1' }, healthy: 2, total: 2 }]);

  a.setHealth('unhealthy');
  await waitFor(async () => (await readExport())?.healthy[0]?.healthy === 1, { what: 'one healthy after a sidecar reports unhealthy' });
  t.is((await readExport())?.exportedAt, first?.exportedAt, 'exportedAt is kept across updates');
  t.regex(await controller.registry.metrics(), /causeway_controller_exported_service_healthy_endpoints\{namespace="default",service="reviews",component="controller"\} 1/);

  // Active check: a workload group probes TCP on the endpoint address; r-b listens nowhere.
  const app = createServer((s) => s.end()).listen(0, '127.0.0.11');
  t.teardown(() => app.close());
  await new Promise((r) => app.once('listening', r));
  const probePort = (app.address() as AddressInfo).port;
  await world.store.put(
    EtcdKeys.workloadGroup('default', 'reviews-vms'),
    JSON.stringify({ schema: 1, name: 'reviews-vms', namespace: 'default', service: 'reviews', serviceAccount: 'reviews', ports: [{ name: 'http', port: 9080 }], probe: { tcp: { port: probePort } } }),
  );
  a.setHealth('healthy');
  const node = await world.discovery(controller, 'default/productpage');
  const health = () => Object.fromEntries((node.snapshot?.services[0]?.targets ?? []).map((x) => [x.endpointId, x.healthy]));
  await waitFor(() => health()['r-a'] === true && health()['r-b'] === false, { what: 'r-a healthy (reported and probed), r-b failing its active check' });
  t.deepEqual(health(), { 'r-a': true, 'r-b': false });
  await waitFor(async () => (await readExport())?.healthy[0]?.healthy === 1);
  t.deepEqual((await readExport())?.healthy, [{ locality: { region: 'eu', zone: 'eu-1' }, healthy: 1, total: 2 }]);

  await world.admin.setExported('reviews', 'default', false);
  await waitFor(async () => (await readExport()) === undefined, { what: 'unexport removes the export' });
  t.truthy(controller.catalogView?.exportedCluster);
  t.is(controller.catalogView?.exportedCluster?.value.name, 'east');
  t.is(controller.catalogView?.heartbeat?.value.cluster, 'east');
});

test('imports become gateway targets by locality priority; stale and conflicting ones leave load balancing', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController();
  const put = (peer: string, region: string, extra: Record<string, unknown> = {}) =>
    world.store.put(
      EtcdKeys.importedService(peer, 'default', 'reviews'),
      JSON.stringify({
        schema: CATALOG_SCHEMA_VERSION,
        peer,
        service: { schema: 1, ...reviews, ports: [{ name: 'http', port: 9080, protocol: 'http' }], exported: true, subsets: {} },
        healthy: [{ locality: { region, zone: `${region}-1` }, healthy: 3, total: 4 }],
        gateways: [{ address: `10.0.${region === 'eu' ? 1 : 2}.1`, port: 15443 }],
        peerLocality: { region, zone: `${region}-1` },
        peerNetwork: 'default',
        exportedAt: new Date().toISOString(),
        peerRevision: '7',
        ...extra,
      }),
    );
  await put('west', 'eu');
  await put('far', 'us', { stale: true });
  await put('odd', 'us', { conflict: 'ports differ from west' });
  const node = await world.discovery(controller, 'default/productpage');
  await waitFor(() => node.snapshot?.services[0]?.targets.length === 2);
  const [west, far] = node.snapshot!.services[0]!.targets;
  t.like(west, { kind: 'gateway', cluster: 'west', address: '10.0.1.1', port: 15443, priority: 1, weight: 3, healthy: true, stale: false });
  t.like(far, { kind: 'gateway', cluster: 'far', priority: 2, healthy: false, stale: true });
  // A node in another region sees west as "other region".
  const usNode = await world.discovery(controller, 'default/us-client', { region: 'us' });
  await waitFor(() => usNode.snapshot?.services[0]?.targets.length === 2);
  t.is(usNode.snapshot!.services[0]!.targets[0]!.priority, 2);
});

test('bad etcd values are logged with their key and skipped', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  await world.store.put(EtcdKeys.service('default', 'junk'), '{"schema":1,"name":"junk"');
  await world.store.put(EtcdKeys.service('default', 'wrong'), JSON.stringify({ schema: 1, name: 'other', namespace: 'default', ports: [{ name: 'a', port: 1 }], serviceAccounts: [spiffe('default', 'x')] }));
  await world.store.put('/causeway/v1/nonsense/key', 'x');
  const controller = await world.startController();
  const invalid = controller.catalogView!.invalid;
  t.true(invalid.has(EtcdKeys.service('default', 'junk')));
  t.regex(invalid.get(EtcdKeys.service('default', 'wrong')) ?? '', /does not match the key/);
  t.true(invalid.has('/causeway/v1/nonsense/key'));
  const node = await world.discovery(controller, 'default/productpage');
  const snapshot = await node.firstSnapshot();
  t.deepEqual(snapshot.services.map((s) => s.name), ['reviews']);
  // A value turning bad later drops what the key held.
  await world.store.put(EtcdKeys.service('default', 'reviews'), 'garbage');
  await waitFor(() => node.snapshot?.services.length === 0, { what: 'reviews dropped' });
  t.is(controller.readiness().ready, true);
});

test('operator DNS answers A and SRV with healthy endpoints', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController({ dns: true });
  const a = await world.registration(controller, 'default/reviews', endpoint('r-a', '127.0.0.21'));
  const b = await world.registration(controller, 'default/reviews', endpoint('r-b', '127.0.0.22'));
  await Promise.all([a.start(), b.start()]);
  b.setHealth('unhealthy');
  await waitFor(() => [...controller.catalogView!.endpointsOf('default/reviews').values()].some((e) => e.value.health === 'unhealthy'));
  const resolver = new dns2({ nameServers: ['127.0.0.1'], port: controller.dnsPort!, recursive: false, timeout: 2000 } as never);
  const answer = await resolver.resolveA('reviews.default.svc.causeway.internal');
  t.deepEqual(answer.answers.map((x) => x.address), ['127.0.0.21']);
  const srv = await resolver.resolve('_http._tcp.reviews.default.svc.causeway.internal', 'SRV');
  t.like(srv.answers[0], { port: 15006, target: '127.0.0.21' });
  const pinned = await resolver.resolveA('reviews.default.svc.east.causeway.internal');
  t.deepEqual(pinned.answers.map((x) => x.address), ['127.0.0.21']);
  const missing = await resolver.resolveA('nope.default.svc.causeway.internal');
  t.is((missing as unknown as { header: { rcode: number } }).header.rcode, 3, 'NXDOMAIN');
});

test('the controller hosts the CA: a join token buys a certificate that can then register', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController();
  const east = await world.pki.cluster('east');
  const id = spiffe('default', 'reviews');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const csr = createCsr(privateKey, id);
  const issued = await requestCertificate(
    { address: `127.0.0.1:${controller.grpcPort}`, trustBundlePem: world.pki.trustBundlePem, controllerSpiffeId: controllerIdentity(TD) },
    { joinToken: mintJoinToken(east.ca, { spiffeId: id }) },
    { csr, validitySeconds: 3600 },
  );
  const { RegistrationClient } = await import('../../api-client/index.js');
  const client = new RegistrationClient({
    address: `127.0.0.1:${controller.grpcPort}`,
    cluster: 'east',
    tls: { key: keyPem, certChain: issued.certChain.join(''), trustBundle: issued.trustBundle.join('') },
    expectedServerId: controllerIdentity(TD),
    endpoint: endpoint('from-token'),
  });
  t.teardown(() => client.stop());
  await client.start();
  t.is(controller.catalogView?.endpointsOf('default/reviews').size ?? (await waitFor(() => controller.catalogView?.endpointsOf('default/reviews').size)), 1);
});

test('regression: every CA refusal is counted — a CSR over gRPC\'s 4 MiB limit and bytes that are no request, refused by grpc-js before the signer runs', async (t) => {
  const world = await controllerWorld(t);
  const controller = await world.startController();
  const east = await world.pki.cluster('east');
  const id = spiffe('default', 'reviews');
  const signer = { address: `127.0.0.1:${controller.grpcPort}`, trustBundlePem: world.pki.trustBundlePem, controllerSpiffeId: controllerIdentity(TD) };
  const refusals = async (reason: string) => {
    const text = await controller.registry.metrics(); // what /metrics serves
    return Number(new RegExp(`^causeway_ca_refusals_total\\{[^}]*reason="${reason}"[^}]*\\} (\\d+)$`, 'm').exec(text)?.[1]);
  };
  t.is(await refusals('request_too_large'), 0, 'listed from the start, like every reason');

  // A real client, a real join token, a CSR padded past 4 MiB.
  const csr = createCsr(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, id) + ' '.repeat(5 * 1024 * 1024);
  const error = await t.throwsAsync(requestCertificate(signer, { joinToken: mintJoinToken(east.ca, { spiffeId: id }) }, { csr, validitySeconds: 3600 }), { instanceOf: CaError });
  t.regex(error.message, /RESOURCE_EXHAUSTED/);
  t.is(await refusals('request_too_large'), 1);

  // Bytes that do not decode as a CreateCertificateRequest.
  const raw = new Client(signer.address, signingServiceChannelCredentials(signer), { 'grpc.ssl_target_name_override': 'causeway-controller' });
  t.teardown(() => raw.close());
  const junk = await new Promise<ServiceError>((resolve) =>
    raw.makeUnaryRequest(CREATE_CERTIFICATE_PATH, () => Buffer.from([0x0f]) /* field 1, wire type 7: no such type */, (b: Buffer) => b, {}, new Metadata(), (e) => resolve(e!)),
  );
  t.is(junk.code, status.INTERNAL);
  t.is(await refusals('request_malformed'), 1);
  // The signer's own refusals are still counted once, by the signer.
  await t.throwsAsync(requestCertificate(signer, { joinToken: 'not-a-token' }, { csr: createCsr(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, id), validitySeconds: 3600 }));
  t.is(await refusals('token_malformed'), 1);
  t.is(await refusals('request_too_large'), 1);
});

test('readiness and metrics are served over HTTP', async (t) => {
  const world = await controllerWorld(t);
  const controller = await world.startController();
  const ready = await fetch(`http://127.0.0.1:${controller.readyPort}/healthz/ready`);
  t.is(ready.status, 200);
  t.is(controller.readiness().reasons.length, 0);
  const registry = await controller.registry.metrics();
  t.regex(registry, /causeway_controller_connected_nodes/);
  t.regex(registry, /causeway_ready\{component="controller"\} 1/);
});


test('a node reconnecting with the current version is told it is connected and is not sent that version again', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController();
  const first = await (await world.discovery(controller, 'default/productpage', { nodeId: 'a' })).firstSnapshot();
  const pushes = async () => (await controller.metrics.pushes.get()).values.reduce((n, v) => n + v.value, 0);
  const before = await pushes();
  const again = await world.discovery(controller, 'default/productpage', { nodeId: 'b', initialSnapshot: first, start: false });
  const connected = new Promise<void>((resolve) => again.once('connected', resolve));
  again.start();
  await connected;
  await waitFor(() => controller.nodes().find((n) => n.nodeId === 'b'));
  t.like(controller.nodes().find((n) => n.nodeId === 'b'), { ackedVersion: first.version, sentVersion: first.version });
  t.is(await pushes(), before);
  t.is(again.version, first.version);
});

test('the discovery stream refuses a node of another cluster with FAILED_PRECONDITION', async (t) => {
  const world = await controllerWorld(t);
  const controller = await world.startController();
  const stray = await world.discovery(controller, 'default/productpage', { nodeId: 'stray', cluster: 'west', region: 'us', start: false });
  const error = await new Promise<Error & { code?: number }>((resolve) => stray.once('disconnected', resolve).start());
  t.is(error.code, 9);
  t.regex(error.message, /serves cluster east, not west/);
  t.is(stray.snapshot, undefined);
});
