import test from 'ava';
import { Resolver } from 'node:dns/promises';
import { createServer, type Server } from 'node:net';
import type { Sidecar } from '../../proxy/index.js';
import { startMesh, startWorkload, type MeshWorkload, type MeshWorld } from './helpers/clusters.js';
import { get, spiffe } from './helpers/mesh.js'
import { waitFor } from '../../testkit/ports.js';

// Several sidecars in one network namespace, as on a VM or bare-metal host that runs
// several workloads: one real cluster (etcd, controller, gateway), real sidecars with
// their own certificates, real DNS and mTLS. The bug this pins: two sidecars with the
// default outbound range both answered DNS with the same loopback addresses, and a call
// by name left with the other workload's identity.
test.serial.before(async (t) => {
  const world = await startMesh([{ name: 'east', region: 'eu', zone: 'eu-1' }]);
  (t.context as { world: MeshWorld }).world = world;
  const spec = (name: string) => ({ name, namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', name)], exported: false });
  for (const name of ['reviews', 'productpage', 'details', 'ratings']) await world.cluster('east').admin.applyService(spec(name));
});

test.after.always(async (t) => {
  await (t.context as { world?: MeshWorld }).world?.close();
});

function worldOf(t: { context: unknown }): MeshWorld {
  return (t.context as { world: MeshWorld }).world;
}

async function resolveByName(sidecar: Sidecar, name: string): Promise<string> {
  const resolver = new Resolver({ timeout: 5_000, tries: 2 });
  resolver.setServers([`127.0.0.1:${sidecar.dnsPort}`]);
  const [address] = await resolver.resolve4(name);
  return address!;
}

function reviewsReady(sidecar: Sidecar): boolean {
  return (sidecar.snapshot?.services.find((s) => s.name === 'reviews')?.targets ?? []).some((x) => x.healthy);
}

test.serial('regression: two sidecars with the default outbound range on one host each call by name with their own identity; a colliding explicit range refuses to start', async (t) => {
  const world = worldOf(t);
  const workloads: MeshWorkload[] = [];
  t.teardown(async () => {
    for (const w of workloads.reverse()) await w.close();
  });
  workloads.push(await startWorkload(world, 'east', { service: 'reviews' }));
  // `auto` is the default; the helper pins test ranges, so these two ask for the default back.
  const productpage = await startWorkload(world, 'east', { service: 'productpage', app: false, config: { sidecar: { outboundRange: 'auto' } } });
  workloads.push(productpage);
  const details = await startWorkload(world, 'east', { service: 'details', app: false, config: { sidecar: { outboundRange: 'auto' } } });
  workloads.push(details);

  const pRange = productpage.sidecar.outboundRange!;
  const dRange = details.sidecar.outboundRange!;
  t.regex(pRange, /^127\.\d+\.0\.0\/16$/);
  t.not(pRange, dRange, 'each sidecar claims its own range');

  for (const [caller, sa] of [[productpage, 'productpage'], [details, 'details']] as const) {
    await waitFor(() => reviewsReady(caller.sidecar), { what: `${sa} sees a healthy reviews`, timeoutMs: 20_000 });
    await caller.sidecar.settled();
    const address = await resolveByName(caller.sidecar, 'reviews.default.svc.causeway.internal');
    t.true(address.startsWith(caller.sidecar.outboundRange!.split('.').slice(0, 2).join('.') + '.'), `${sa}'s DNS answers an address of its own range (${address})`);
    const res = await get(address, 9080, '/who');
    t.is(res.status, 200);
    t.is(res.json?.peer, spiffe('default', sa), `reviews sees ${sa}'s identity`);
  }

  // A third sidecar told to use productpage's range: refused at start, naming the setting.
  const error = await t.throwsAsync(startWorkload(world, 'east', { service: 'ratings', app: false, config: { sidecar: { outboundRange: pRange } } }));
  t.is((error as { code?: string }).code, 'CW_PROXY_OUTBOUND_RANGE_TAKEN');
  t.regex(error!.message, /sidecar\.outboundRange/);
  // …and productpage is untouched by the attempt.
  const again = await get(await resolveByName(productpage.sidecar, 'reviews.default.svc.causeway.internal'), 9080, '/who');
  t.is(again.json?.peer, spiffe('default', 'productpage'));
});

test.serial('an outbound listener that cannot bind keeps the sidecar not ready, naming sidecar.outboundRange, and DNS does not answer its address until it binds', async (t) => {
  const world = worldOf(t);
  const workloads: MeshWorkload[] = [];
  t.teardown(async () => {
    for (const w of workloads.reverse()) await w.close();
  });
  workloads.push(await startWorkload(world, 'east', { service: 'reviews' }));
  // The allocator hands the first service key of the snapshot (details: services come sorted) the range's first address.
  const range = `127.${230 + (process.pid % 20)}.77.0/24`;
  const squatter: Server = createServer((s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    squatter.once('error', reject);
    squatter.listen({ host: range.replace('.0/24', '.1'), port: 9080 }, () => resolve());
  });
  t.teardown(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
  const caller = await startWorkload(world, 'east', { service: 'details', app: false, config: { sidecar: { outboundRange: range } } });
  workloads.push(caller);
  await waitFor(() => reviewsReady(caller.sidecar), { what: 'details sees a healthy reviews', timeoutMs: 20_000 });
  await caller.sidecar.settled();
  await waitFor(() => !caller.sidecar.readiness().ready && caller.sidecar.readiness().reasons.some((r) => r.includes('for details.default')), { what: 'details not ready because of its own listener', timeoutMs: 20_000 });
  const reasons = caller.sidecar.readiness().reasons.join('\n');
  t.regex(reasons, /sidecar\.outboundRange/);
  t.regex(reasons, /EADDRINUSE/);
  await t.throwsAsync(resolveByName(caller.sidecar, 'details.default.svc.causeway.internal'), { code: 'ENOTFOUND' }, 'DNS never answers an address another process holds');
  // Other services keep working meanwhile.
  const res = await get(await resolveByName(caller.sidecar, 'reviews.default.svc.causeway.internal'), 9080, '/who');
  t.is(res.json?.peer, spiffe('default', 'details'));

  await new Promise<void>((resolve) => squatter.close(() => resolve()));
  await waitFor(() => caller.sidecar.readiness().ready, { what: 'details ready once the address is free', timeoutMs: 20_000 });
  t.is(await resolveByName(caller.sidecar, 'details.default.svc.causeway.internal'), range.replace('.0/24', '.1'));
});
