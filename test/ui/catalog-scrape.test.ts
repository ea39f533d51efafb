import test from 'ava';
import { splitCertificates } from '../../ca/index.js';
import { Endpoint, EtcdKeys, decodeCatalogValue } from '../../mesh/index.js';
import { Etcd3Store } from '../../store/index.js';
import { runMeshView, type MeshView } from '../../ui/index.js';
import { waitFor } from '../../testkit/index.js';
import { productpageSpec, reviewsSpec, startMesh, startWorkload, targetsOf, type MeshWorkload } from '../proxy/helpers/clusters.js';
import { load } from '../proxy/helpers/mesh.js';

/**
 * Two loopback clusters with real etcds, controllers and gateways; productpage's sidecar
 * in east and reviews' sidecar in west register with their controllers for real and
 * list their /metrics port. `causeway ui` for east, given neither --prometheus nor
 * --scrape, finds east's sidecar through the catalog and shows the traffic east → west,
 * a one-hour certificate as expiring, and its renewal as a `certificate-renewed` event.
 * Certificates are installed into the running sidecar as its certificate client does
 * after a CA call (the CA exchange has its own tests).
 */
test('without --prometheus or --scrape the view scrapes the metrics ports the sidecars registered: traffic, certificates near expiry, and a renewal as an event', async (t) => {
  const world = await startMesh([
    { name: 'east', region: 'eu', zone: 'eu-1' },
    { name: 'west', region: 'eu', zone: 'eu-2' },
  ]);
  t.teardown(() => world.close());
  await world.cluster('east').admin.applyService(productpageSpec);
  await world.cluster('west').admin.applyService(reviewsSpec);
  const workloads: MeshWorkload[] = [];
  t.teardown(async () => {
    for (const w of workloads) await w.close().catch(() => undefined);
  });
  const server = await startWorkload(world, 'west', { service: 'reviews', serveObservability: true });
  workloads.push(server);
  const client = await startWorkload(world, 'east', { service: 'productpage', app: false, serveObservability: true });
  workloads.push(client);

  // Both registrations carry the metrics port the sidecar actually serves.
  for (const [cluster, workload, service] of [['east', client, 'productpage'], ['west', server, 'reviews']] as const) {
    const store = new Etcd3Store({ endpoints: world.cluster(cluster).etcd.endpoints, dialTimeoutMs: 5000 });
    t.teardown(() => store.close());
    const endpoint = await waitFor(async () => {
      const { entries } = await store.list(`${EtcdKeys.endpointsPrefix}default/${service}/`);
      const decoded = entries.map((e) => decodeCatalogValue(Endpoint, e.key, e.value)).find((d) => d.ok);
      return decoded?.ok ? decoded.value : undefined;
    }, { timeoutMs: 30_000, what: `${service}'s endpoint in ${cluster}'s catalog` });
    t.is(endpoint.metricsPort, workload.sidecar.observability!.metricsPort, `${service} lists its metrics port`);
  }

  await waitFor(() => targetsOf(client.sidecar, 'reviews').some((x) => x.healthy), { what: 'reviews imported from west', timeoutMs: 30_000 });
  await client.sidecar.settled();
  const reviews = client.sidecar.outbound.lookup('default', 'reviews');
  if (!reviews) throw new Error('no outbound listener for reviews.default');
  const run = load(reviews.address, { workers: 2 });
  t.teardown(() => run.stop());

  const view = await runMeshView({ config: world.cluster('east').config, port: 0, refreshMs: 500 });
  t.teardown(() => view.stop());
  const flow = await waitFor(async () => {
    const v = (await (await fetch(new URL('api/mesh', view.url))).json().catch(() => undefined)) as MeshView | undefined;
    const f = v?.traffic.flows.find((x) => x.sourceCluster === 'east' && x.destinationCluster === 'west' && x.service === 'reviews.default');
    return f && f.requestsPerSecond > 0 ? { traffic: v!.traffic, flow: f } : undefined;
  }, { timeoutMs: 60_000, what: 'traffic east → west in the view' });
  t.log(`flow east → west: ${flow.flow.requestsPerSecond.toFixed(1)} req/s, p99 ${flow.flow.p99Ms?.toFixed(1)} ms, ${run.ok()} requests ok`);
  t.is(flow.traffic.source, 'scrape');
  t.is(flow.traffic.error, undefined, 'every listed target answered');
  t.is(flow.flow.health, 'ok');
  t.is(flow.flow.errorRatio, 0);
  t.true((flow.flow.p99Ms ?? 0) > 0, 'p99 from the histogram buckets');
  await run.stop();
  t.deepEqual(run.failures, []);

  const mesh = async () => (await (await fetch(new URL('api/mesh', view.url))).json()) as MeshView;
  const install = async (ttlSeconds: number, ageSeconds = 0) => {
    const cert = await world.pki.workload('east', 'default/productpage', { ttlSeconds, now: new Date(Date.now() - ageSeconds * 1000) });
    client.sidecar.identity.set({ keyPem: cert.privateKeyPem, chainPem: splitCertificates(cert.certChainPem), trustBundlePem: splitCertificates(cert.trustBundlePem) });
  };
  // A fresh three-hour certificate is not expiring: renewals happen at half-life, so a short lifetime is no warning by itself.
  await install(3 * 3600);
  const fresh = await waitFor(async () => {
    const c = (await mesh()).certificates;
    return c.expiring.length === 0 && c.error === undefined ? c : undefined;
  }, { timeoutMs: 30_000, what: 'no certificate expiring with a fresh three-hour one served' });
  t.deepEqual(fresh.expiring, []);
  // An eleven-hour certificate ten hours into its life replacing it: one hour left, inside the warning window
  // (under 30 % of its lifetime and under 6 h), and no renewal (notAfter moved back).
  await install(11 * 3600, 10 * 3600);
  const instance = `127.0.0.1:${client.sidecar.observability!.metricsPort}`;
  const expiring = await waitFor(async () => {
    const c = (await mesh()).certificates;
    return c.expiring.some((x) => x.identity === client.spiffeId) ? c : undefined;
  }, { timeoutMs: 30_000, what: 'the one-hour certificate listed as expiring' });
  t.is(expiring.source, 'scrape');
  t.like(expiring.expiring.find((c) => c.identity === client.spiffeId), { cluster: 'east', instance });
  const oldNotAfter = client.sidecar.identity.notAfter!;
  t.deepEqual((await mesh()).events.filter((e) => e.kind === 'certificate-renewed'), [], 'a notAfter moving back is no renewal');

  await install(3 * 3600);
  const event = await waitFor(async () => (await mesh()).events.find((e) => e.kind === 'certificate-renewed'), { timeoutMs: 30_000, what: 'a certificate-renewed event' });
  t.is(event.cluster, 'east');
  t.is(event.severity, 'info');
  t.true(event.message.startsWith(`certificate of ${client.spiffeId} at ${instance} renewed: valid until `), event.message);
  t.true(event.message.includes(`(was ${new Date(Math.floor(oldNotAfter.getTime() / 1000) * 1000).toISOString()})`), event.message);
  const after = (await mesh()).events.filter((e) => e.kind === 'certificate-renewed');
  t.is(after.length, 1, 'one renewal, one event');
  const warnings = (await mesh()).events.filter((e) => e.kind === 'certificate-expiry' && e.message.includes(client.spiffeId));
  t.is(warnings.length, 1, 'the renewed certificate, still inside the window, is not announced again');
});
