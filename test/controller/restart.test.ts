import test from 'ava';
import { connect, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { waitFor } from '../../testkit/ports.js';
import { controllerWorld, reviews } from './harness.js';

/** One request over TCP to the target the node's last snapshot names (what a sidecar does). */
function request(address: string, port: number, body: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: address, port });
    let data = '';
    socket.setTimeout(2000, () => socket.destroy(new Error('timeout')));
    socket.on('connect', () => socket.end(body));
    socket.on('data', (chunk) => (data += chunk.toString()));
    socket.on('end', () => resolve(data));
    socket.on('error', reject);
  });
}

test('a controller restart under a stream of requests loses none of them', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const app = createServer((s) => s.pipe(s)).listen(0, '127.0.0.31');
  t.teardown(() => app.close());
  await new Promise((r) => app.once('listening', r));
  const appPort = (app.address() as AddressInfo).port;

  let controller = await world.startController({ leaseTtlSeconds: 4 });
  const grpcPort = controller.grpcPort;
  const sidecar = await world.registration(grpcPort, 'default/reviews', { service: 'reviews', namespace: 'default', endpointId: 'r-1', address: '127.0.0.31', inboundPort: appPort });
  await sidecar.start();
  const node = await world.discovery(grpcPort, 'default/productpage');
  await waitFor(() => node.snapshot?.services[0]?.targets.some((x) => x.healthy));
  let disconnects = 0;
  node.on('disconnected', () => disconnects++);

  let sent = 0;
  let sentWhileDown = 0;
  let controllerDown = false;
  const failures: string[] = [];
  let running = true;
  const load = (async () => {
    while (running) {
      const target = node.snapshot?.services.find((s) => s.name === 'reviews')?.targets.find((x) => x.healthy);
      const body = `req-${sent++}`;
      try {
        if (!target) throw new Error('no healthy target in the node\'s snapshot');
        const reply = await request(target.address, target.port, body);
        if (reply !== body) throw new Error(`reply ${reply}`);
        if (controllerDown) sentWhileDown++;
      } catch (error) {
        failures.push(`${body}: ${(error as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  })();

  await waitFor(() => sent >= 20, { what: 'requests flowing before the restart' });
  controllerDown = true;
  await controller.stop();
  // While no controller runs, a second sidecar starts registering: it must get in once one is back.
  const late = await world.registration(grpcPort, 'default/reviews', { service: 'reviews', namespace: 'default', endpointId: 'r-2', address: '127.0.0.32', inboundPort: appPort });
  const lateRegistered = late.start();
  await new Promise((r) => setTimeout(r, 700));
  controller = await world.startController({ grpcPort, leaseTtlSeconds: 4 });
  controllerDown = false;
  await lateRegistered;
  const beatsAfter: number[] = [];
  sidecar.on('heartbeat', (ttl) => beatsAfter.push(ttl));
  await waitFor(() => controller.nodes().length === 1 && node.snapshot?.services[0]?.targets.length === 2, { what: 'node resynced with both endpoints' });
  await waitFor(() => beatsAfter.length > 0, { what: 'heartbeats through the new controller' });
  const sentAfterResync = sent;
  await waitFor(() => sent >= sentAfterResync + 20, { what: 'requests after the resync' });
  running = false;
  await load;

  t.log(`${sent} requests (${sentWhileDown} while no controller ran), ${failures.length} failed, ${disconnects} discovery disconnects`);
  t.true(sentWhileDown > 0, 'requests were served while the controller was away');
  t.true(disconnects >= 1, 'the discovery stream did break');
  t.deepEqual(failures, []);
  t.deepEqual([...controller.catalogView!.endpointsOf('default/reviews').keys()].sort(), ['r-1', 'r-2']);
});

test('an etcd outage makes the controller unready while nodes keep their snapshot; it recovers when etcd returns', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController({ leaseTtlSeconds: 10 });
  const node = await world.discovery(controller, 'default/productpage');
  await node.firstSnapshot();
  await world.etcd.stop();
  await waitFor(() => !controller.readiness().ready, { timeoutMs: 20_000, what: 'unready while etcd is down' });
  t.true(controller.readiness().reasons.some((r) => /etcd/.test(r)));
  t.truthy(node.snapshot, 'nodes keep serving their last snapshot');
  await world.etcd.restart();
  await waitFor(() => controller.readiness().ready, { timeoutMs: 30_000, what: 'ready again' });
  const sidecar = await world.registration(controller, 'default/reviews', { service: 'reviews', namespace: 'default', endpointId: 'after-outage', address: '127.0.0.41', inboundPort: 15006 });
  await sidecar.start();
  await waitFor(() => node.snapshot?.services[0]?.targets.length === 1, { timeoutMs: 20_000, what: 'registration after the outage reaches the node' });
  t.is(node.snapshot?.services[0]?.targets[0]?.endpointId, 'after-outage');
});

test('heartbeats recover after a silent partition from etcd (traffic held, no connection error)', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const { startFaultProxy } = await import('../../testkit/fault-proxy.js');
  const { Controller } = await import('../../controller/index.js');
  const { parseConfig } = await import('../../mesh/index.js');
  const etcdPort = Number(new URL(world.etcd.clientUrl).port);
  const proxy = await startFaultProxy({ host: '127.0.0.1', port: etcdPort });
  t.teardown(() => proxy.close());
  const base = structuredClone(world.config({ leaseTtlSeconds: 10 })) as Record<string, unknown>;
  const config = parseConfig('cluster', { ...base, etcd: { endpoints: [proxy.url()], dialTimeoutMs: 1000 } });
  const controller = new Controller({ config, intermediate: (await world.pki.cluster('east')).ca, observability: false });
  t.teardown(() => controller.stop());
  await controller.start();
  const sidecar = await world.registration(controller, 'default/reviews', { service: 'reviews', namespace: 'default', endpointId: 'r-p', address: '127.0.0.51', inboundPort: 15006 }, { heartbeatIntervalMs: 300 });
  await sidecar.start();
  const failures: number[] = [];
  sidecar.on('error', (e) => failures.push(e.code));
  proxy.pause();
  await waitFor(() => failures.length > 0, { timeoutMs: 20_000, what: 'heartbeats failing while etcd is unreachable' });
  proxy.resume();
  const beat = new Promise((resolve) => sidecar.once('heartbeat', resolve));
  await beat;
  t.true(sidecar.isRegistered);
  t.is((await world.store.get('/causeway/v1/endpoints/default/reviews/r-p'))?.key, '/causeway/v1/endpoints/default/reviews/r-p');
});

test('a controller started before its etcd waits unready and starts serving once etcd is up', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  await world.etcd.stop();
  const { Controller } = await import('../../controller/index.js');
  const controller = new Controller({ config: world.config(), intermediate: (await world.pki.cluster('east')).ca });
  t.teardown(() => controller.stop());
  const started = controller.start();
  await waitFor(() => controller.readyPort, { what: 'readiness endpoint up before etcd' });
  const unready = await fetch(`http://127.0.0.1:${controller.readyPort}/healthz/ready`);
  t.is(unready.status, 503);
  t.regex(await unready.text(), /catalog not loaded/);
  await world.etcd.restart();
  await started;
  await waitFor(() => controller.readiness().ready, { timeoutMs: 20_000, what: 'ready once etcd is up' });
  const node = await world.discovery(controller, 'default/productpage');
  t.deepEqual((await node.firstSnapshot()).services.map((s) => s.name), ['reviews']);
});
