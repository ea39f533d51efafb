import test from 'ava';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { DEFAULT_CONTROLLER_SERVER_NAME, controllerIdentity } from '../../mesh/index.js';
import { waitFor } from '../../testkit/ports.js';
import { RegistrationClientConstructor } from '../../api-client/index.js';
import { controllerWorld, reviews, TD } from './harness.js';

/** Raw clients dial 127.0.0.1; a name keeps the IP out of SNI (RFC 6066, DEP0123). */
const NO_IP_SNI = { 'grpc.ssl_target_name_override': DEFAULT_CONTROLLER_SERVER_NAME };
const endpoint = (id: string, address = '127.0.0.10') => ({ service: 'reviews', namespace: 'default', endpointId: id, address, inboundPort: 15006, labels: { version: 'v1' } });

test('a registered endpoint appears in other nodes\' snapshots, and leaves them within the TTL when its sidecar dies', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController();
  const watcher = await world.discovery(controller, 'default/productpage');
  const first = await watcher.firstSnapshot();
  t.deepEqual(first.services.find((s) => s.name === 'reviews')?.targets, []);

  const sidecar = await world.registration(controller, 'default/reviews', endpoint('reviews-1'));
  await sidecar.start();
  const seen = await waitFor(() => watcher.snapshot?.services.find((s) => s.name === 'reviews')?.targets[0], { what: 'endpoint in the snapshot' });
  t.like(seen, { kind: 'endpoint', address: '127.0.0.10', port: 15006, priority: 0, healthy: true, identity: 'spiffe://causeway.internal/ns/default/sa/reviews', endpointId: 'reviews-1' });
  t.deepEqual(seen.labels, { version: 'v1' });

  // Killed sidecar: no more heartbeats, no deregistration. TTL is 2 s here.
  sidecar.abandon();
  const killedAt = Date.now();
  await waitFor(() => watcher.snapshot?.services.find((s) => s.name === 'reviews')?.targets.length === 0, { timeoutMs: 15_000, what: 'endpoint to expire' });
  t.log(`endpoint gone ${Date.now() - killedAt} ms after the last heartbeat stopped (TTL 2 s)`);
});

test('heartbeats keep an endpoint alive past its TTL and carry health changes', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController();
  const sidecar = await world.registration(controller, 'default/reviews', endpoint('reviews-2'));
  await sidecar.start();
  const watcher = await world.discovery(controller, 'default/productpage');
  await waitFor(() => watcher.snapshot?.services[0]?.targets.length === 1);
  let dropped = false;
  watcher.on('snapshot', (s) => (dropped ||= s.services[0]?.targets.length !== 1));
  const beats: number[] = [];
  sidecar.on('heartbeat', (ttl) => beats.push(ttl));
  const since = Date.now();
  // Past 1.5 × the 2 s TTL, on heartbeats alone.
  await waitFor(() => beats.length >= 3 && Date.now() - since > 3000, { timeoutMs: 30_000, what: 'heartbeats past the TTL' });
  t.false(dropped, 'the endpoint never left the snapshot');
  t.is(watcher.snapshot?.services[0]?.targets.length, 1);
  sidecar.setHealth('unhealthy');
  await waitFor(() => watcher.snapshot?.services[0]?.targets[0]?.healthy === false, { what: 'unhealthy target' });
  t.is(watcher.snapshot?.services[0]?.targets[0]?.weight, 0);
  // A clean shutdown deregisters at once instead of waiting for the lease.
  await sidecar.stop({ deregister: true });
  await waitFor(() => watcher.snapshot?.services[0]?.targets.length === 0, { what: 'deregistered endpoint gone' });
});

test('a node whose identity may not serve the service cannot register for it', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController();
  const impostor = await world.registration(controller, 'default/ratings', endpoint('reviews-evil'));
  const refused = new Promise<ServiceError>((resolve) => impostor.once('refused', resolve));
  void impostor.start();
  const error = await refused;
  t.is(error.code, status.PERMISSION_DENIED);
  t.regex(error.details, /spiffe:\/\/causeway\.internal\/ns\/default\/sa\/ratings may not serve reviews\.default/);
  await impostor.stop();
  t.is(controller.catalogView?.endpointsOf('default/reviews').size, 0);

  // No client certificate at all: UNAUTHENTICATED (the server only requests one).
  const pki = await world.identity('default/reviews');
  const anonymous = new RegistrationClientConstructor(`127.0.0.1:${controller.grpcPort}`, credentials.createSsl(Buffer.from(pki.trustBundle), null, null, { checkServerIdentity: () => undefined }), NO_IP_SNI);
  t.teardown(() => anonymous.close());
  const anonymousError = await new Promise<ServiceError>((resolve) =>
    (anonymous as unknown as { Register(req: object, cb: (e: ServiceError) => void): void }).Register({ service: 'reviews', namespace: 'default', endpointId: 'x', address: '127.0.0.1', inboundPort: 1 }, resolve),
  );
  t.is(anonymousError.code, status.UNAUTHENTICATED);

  // An endpoint for an unknown service is refused with FAILED_PRECONDITION.
  const lost = await world.registration(controller, 'default/reviews', { ...endpoint('x1'), service: 'nope' });
  const unknown = new Promise<ServiceError>((resolve) => lost.once('refused', resolve));
  void lost.start();
  t.is((await unknown).code, status.FAILED_PRECONDITION);
  await lost.stop();
  t.truthy(controllerIdentity(TD));
});

test('a heartbeat for an endpoint registered through another controller works (controllers share etcd)', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const a = await world.startController();
  const b = await world.startController();
  const viaA = await world.registration(a, 'default/reviews', endpoint('reviews-3'));
  await viaA.start();
  viaA.abandon();
  const key = '/causeway/v1/endpoints/default/reviews/reviews-3';
  const lease = (await world.store.get(key))?.lease;
  t.truthy(lease);
  // Bare Heartbeat calls through B, no Register: B finds the lease A granted.
  const tls = await world.identity('default/reviews');
  const client = new RegistrationClientConstructor(
    `127.0.0.1:${b.grpcPort}`,
    credentials.createSsl(Buffer.from(String(tls.trustBundle)), Buffer.from(String(tls.key)), Buffer.from(String(tls.certChain)), { checkServerIdentity: () => undefined }),
    NO_IP_SNI,
  );
  t.teardown(() => client.close());
  const heartbeat = () =>
    new Promise<{ leaseTtlSeconds: number }>((resolve, reject) =>
      (client as unknown as { Heartbeat(req: object, cb: (e: ServiceError | null, r: { leaseTtlSeconds: number }) => void): void }).Heartbeat(
        { service: 'reviews', namespace: 'default', endpointId: 'reviews-3', health: 'healthy' },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
  for (let i = 0; i < 3; i++) t.true((await heartbeat()).leaseTtlSeconds > 0);
  t.is((await world.store.get(key))?.lease, lease, 'the same lease, refreshed by B');
  t.is(b.catalogView?.endpointsOf('default/reviews').size, 1);
  await waitFor(() => a.catalogView?.cluster?.value.controllers.length === 2, { what: 'both controllers listed in /causeway/v1/cluster' });
  // The record is rewritten without them (e.g. restored from an old backup): both add themselves back.
  await world.store.put('/causeway/v1/cluster', JSON.stringify({ ...a.catalogView!.cluster!.value, controllers: [] }));
  await waitFor(() => a.catalogView?.cluster?.value.controllers.length === 2, { what: 'controllers back in the record' });
  await waitFor(() => b.catalogView?.cluster?.value.controllers.length === 2, { what: 'the second controller sees both back too' });
  t.is(a.catalogView?.cluster?.value.controllers.length, 2);
});

test('a registration may carry the sidecar\'s metrics port: stored with the endpoint, absent for older sidecars, refused when not a port', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController();
  const withPort = await world.registration(controller, 'default/reviews', { ...endpoint('reviews-m1'), metricsPort: 15090 });
  const without = await world.registration(controller, 'default/reviews', endpoint('reviews-m2', '127.0.0.11'));
  await Promise.all([withPort.start(), without.start()]);
  const stored = await waitFor(() => {
    const all = controller.catalogView?.endpointsOf('default/reviews');
    return all && all.size === 2 ? [...all.values()] : undefined;
  }, { what: 'both endpoints in the catalog' });
  const byId = new Map(stored.map((e) => [e.value.id, e.value]));
  t.is(byId.get('reviews-m1')?.metricsPort, 15090);
  t.false('metricsPort' in (byId.get('reviews-m2') ?? {}), 'an old-style registration stays valid, with no port');

  const bad = await world.registration(controller, 'default/reviews', { ...endpoint('reviews-m3'), metricsPort: 70_000 });
  const refused = new Promise<ServiceError>((resolve) => bad.once('refused', resolve));
  void bad.start();
  const error = await refused;
  t.is(error.code, status.INVALID_ARGUMENT);
  t.regex(error.details, /metricsPort/);
  await Promise.all([bad.stop(), withPort.stop(), without.stop()]);
});
