import test from 'ava';
import {} from '../../controller/index.js';
import { Etcd3Store } from '../../store/index.js';
import { ClusterInfo, EtcdKeys, decodeCatalogValue } from '../../mesh/index.js';
import { startEtcd } from '../../testkit/etcd.js';
import { startFaultProxy } from '../../testkit/fault-proxy.js';
import { waitFor } from '../../testkit/ports.js';
import { controllerWorld } from './harness.js';
import { controllerConfig, listedControllers, registeredControllers, startController } from './processes.js';

/**
 * A controller is listed while it lives: `/causeway/v1/controllers/<id>` on its own lease
 * (controller.leaseTtlSeconds), mirrored into `/causeway/v1/cluster` `controllers` by every
 * live controller.
 */

const TTL_SECONDS = 3;
/** Lease expiry is checked by etcd about twice a second; the watch and the record's CAS write add a little. */
const SLACK_MS = 1500;

test('regression "a crashed controller stays listed in /causeway/v1/cluster controllers forever": a SIGKILLed controller leaves within one lease TTL', async (t) => {
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const extra = [`leaseTtlSeconds: ${TTL_SECONDS}`];
  const a = await controllerConfig(t, etcd, { extra });
  const b = await controllerConfig(t, etcd, { extra, caDir: a.caDir });
  const procA = startController(t, a.file);
  const procB = startController(t, b.file);
  await Promise.all([procA.waitForOutput(/serving gRPC on port \d+/, 90_000), procB.waitForOutput(/serving gRPC on port \d+/, 90_000)]);
  const both = [`127.0.0.1:${a.grpcPort}`, `127.0.0.1:${b.grpcPort}`].sort();
  await waitFor(() => JSON.stringify(listedControllers(etcd)) === JSON.stringify(both) && JSON.stringify(registeredControllers(etcd)) === JSON.stringify(both), { what: 'both controllers listed and registered', timeoutMs: 15_000 });

  await procA.kill('SIGKILL');
  const killed = Date.now();
  const alone = [`127.0.0.1:${b.grpcPort}`];
  await waitFor(() => JSON.stringify(listedControllers(etcd)) === JSON.stringify(alone), { what: 'the dead controller gone from the record', timeoutMs: TTL_SECONDS * 1000 + 10_000, intervalMs: 100 });
  const tookMs = Date.now() - killed;
  t.deepEqual(registeredControllers(etcd), alone);
  t.true(tookMs <= TTL_SECONDS * 1000 + SLACK_MS, `left the record ${tookMs} ms after SIGKILL (TTL ${TTL_SECONDS} s)`);
  t.log(`left the record ${tookMs} ms after SIGKILL`);

  // The last one, SIGKILLed: no controller is left to rewrite the record, but its
  // registration — what the gateway and `workload bundle` go by — goes within the TTL.
  await procB.kill('SIGKILL');
  const lastKilled = Date.now();
  await waitFor(() => registeredControllers(etcd).length === 0, { what: 'the last registration gone', timeoutMs: TTL_SECONDS * 1000 + 10_000, intervalMs: 100 });
  t.true(Date.now() - lastKilled <= TTL_SECONDS * 1000 + SLACK_MS, `the last registration went ${Date.now() - lastKilled} ms after SIGKILL`);
});

test('a live controller stays listed: its lease revoked under it (as when etcd forgets it), it registers again within a third of the TTL; SIGTERM leaves at once', async (t) => {
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const a = await controllerConfig(t, etcd, { extra: [`leaseTtlSeconds: ${TTL_SECONDS}`] });
  const proc = startController(t, a.file);
  await proc.waitForOutput(/serving gRPC on port \d+/, 90_000);
  const me = [`127.0.0.1:${a.grpcPort}`];
  await waitFor(() => JSON.stringify(registeredControllers(etcd)) === JSON.stringify(me) && JSON.stringify(listedControllers(etcd)) === JSON.stringify(me), { what: 'registered and listed' });

  const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => store.close());
  const key = EtcdKeys.controller(`127.0.0.1-${a.grpcPort}`);
  const before = await store.get(key);
  t.truthy(before, `registration at ${key}`);
  // Revoking deletes the key; the controller sees it go (watch) and registers at once, often
  // before this test could read the gap: a new lease is the proof.
  await store.revokeLease(before!.lease);
  const after = await waitFor(async () => {
    const now = await store.get(key);
    return now && now.lease !== before!.lease ? now : undefined;
  }, { what: 'registered again on a new lease', timeoutMs: TTL_SECONDS * 1000 + 5000, intervalMs: 100 });
  t.truthy(after);
  await waitFor(() => JSON.stringify(listedControllers(etcd)) === JSON.stringify(me), { what: 'still listed in the record' });

  // etcd restarted (leader change, reconnect): leases survive with a fresh TTL; it stays.
  await etcd.restart();
  await new Promise((resolve) => setTimeout(resolve, TTL_SECONDS * 1000 + 1000));
  await waitFor(() => JSON.stringify(registeredControllers(etcd)) === JSON.stringify(me), { what: 'registered after the etcd restart', timeoutMs: 10_000 });

  proc.child.kill('SIGTERM');
  t.is(await proc.exited, 0);
  t.deepEqual(registeredControllers(etcd), [], 'a stopped controller revokes its registration');
  t.deepEqual(listedControllers(etcd), [], 'and leaves the record');
});

test('a listed controller of an earlier version (no registration, re-adds itself) is left in the record after two removals: no rewrite war', async (t) => {
  const world = await controllerWorld(t);
  const controller = await world.startController();
  const me = { address: '127.0.0.1', port: controller.grpcPort };
  const legacy = { address: '10.9.9.9', port: 15012 };
  const listed = async () => {
    const kv = await world.store.get(EtcdKeys.cluster);
    const decoded = kv ? decodeCatalogValue(ClusterInfo, EtcdKeys.cluster, kv.value) : undefined;
    return { kv, controllers: decoded?.ok ? decoded.value.controllers : [] };
  };
  await waitFor(async () => (await listed()).controllers.some((c) => c.port === me.port), { what: 'listed' });
  // What a controller before registrations did on every record change that lacked it.
  let readds = 0;
  let stopped = false;
  const olderController = (async () => {
    while (!stopped) {
      const { kv, controllers } = await listed();
      if (kv && !controllers.some((c) => c.address === legacy.address)) {
        const value = JSON.parse(kv.value.toString()) as { controllers: unknown[] };
        value.controllers = [...controllers, legacy];
        if (await world.store.putIfUnchanged(EtcdKeys.cluster, JSON.stringify(value), kv.modRevision)) readds++;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  t.teardown(async () => {
    stopped = true;
    await olderController;
  });
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const settled = await listed();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  stopped = true;
  await olderController;
  const after = await listed();
  t.true(readds <= 3, `the older controller had to add itself back ${readds} times`);
  t.is(after.kv?.modRevision, settled.kv?.modRevision, 'the record stopped changing');
  t.deepEqual(after.controllers, [legacy, me].sort((a, b) => (a.address < b.address ? -1 : 1)));
});

test('a partition from etcd longer than the lease TTL: the registration expires meanwhile, and the controller registers again once etcd answers', async (t) => {
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(etcd.clientUrl).port) });
  t.teardown(() => proxy.close());
  // A process of its own: it exits at the end, etcd3's watch reconnect timers and all.
  const a = await controllerConfig(t, etcd, { extra: ['leaseTtlSeconds: 2'], etcdEndpoint: proxy.url() });
  const proc = startController(t, a.file);
  await proc.waitForOutput(/serving gRPC on port \d+/, 90_000);
  const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => store.close());
  const key = EtcdKeys.controller(`127.0.0.1-${a.grpcPort}`);
  const before = await waitFor(async () => store.get(key), { what: 'registered' });

  proxy.cut({ refuse: true });
  // Seen from etcd (the test's own client is not behind the proxy): the registration expires.
  await waitFor(async () => (await store.get(key)) === undefined, { what: 'registration expired during the partition', timeoutMs: 10_000 });
  proxy.heal();
  const after = await waitFor(async () => store.get(key), { what: 'registered again after the partition', timeoutMs: 15_000, intervalMs: 100 });
  t.not(after.lease, before.lease, 'on a new lease');
  await waitFor(() => JSON.stringify(listedControllers(etcd)) === JSON.stringify([`127.0.0.1:${a.grpcPort}`]), { what: 'listed in the record again' });
  proc.child.kill('SIGTERM');
  t.is(await proc.exited, 0);
});
