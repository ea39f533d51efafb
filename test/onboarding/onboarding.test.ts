import test from 'ava';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { existsSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {} from '../../controller/index.js';
import { Etcd3Store } from '../../store/index.js';
import { EtcdKeys, ExportedService, ImportedService, decodeCatalogValue } from '../../mesh/index.js';
import { startMesh, startWorkload } from '../proxy/helpers/clusters.js';
import { get, startEchoApp } from '../proxy/helpers/mesh.js';
import { applyGroup, endpointOf, hostBundle, spiffe, startHost, webGroup } from './helpers.js'
import { waitFor } from '../../testkit/ports.js';

// Two clusters on loopback, each with a real etcd, controller (CA + federation) and SNI
// gateway. A "host" is onboarded into east from a bundle and runs `causeway sidecar` as a
// real process, reaching east's controller only through east's gateway (controller SNI).

async function healthyIn(store: Etcd3Store, key: string, schema: typeof ExportedService | typeof ImportedService): Promise<number> {
  const kv = await store.get(key);
  if (!kv) return -1;
  const decoded = decodeCatalogValue(schema, key, kv.value);
  return decoded.ok ? decoded.value.healthy.reduce((n, h) => n + h.healthy, 0) : -1;
}

test('a host onboarded from the bundle registers as <group>-<address>, is exported to peers, calls and is called by mesh name; stop → gone within the lease; restart → back without a token', async (t) => {
  const mesh = await startMesh([
    { name: 'east', region: 'eu', zone: 'eu-1' },
    { name: 'west', region: 'us', zone: 'us-1' },
  ]);
  t.teardown(() => mesh.close());
  const east = mesh.cluster('east');
  const west = mesh.cluster('west');
  const eastStore = new Etcd3Store({ endpoints: east.etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => eastStore.close());
  const westStore = new Etcd3Store({ endpoints: west.etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => westStore.close());

  // The operator: a group whose service does not exist yet (apply creates and exports it).
  const applied = await applyGroup(eastStore, webGroup(), true);
  t.is(applied.service, 'created');
  // A service in east for the host to call, and a caller in west.
  // Exported: the gateway passes only exported services, also to a host of its own cluster.
  await east.admin.applyService({ name: 'reviews', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'reviews')], exported: true });
  await east.admin.applyService({ name: 'frontend', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'frontend')] });
  await west.admin.applyService({ name: 'client', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'client')] });
  const reviews = await startWorkload(mesh, 'east', { service: 'reviews' });
  t.teardown(() => reviews.close());
  const client = await startWorkload(mesh, 'west', { service: 'client', app: false });
  t.teardown(() => client.close());
  // A service only in west, for the host to reach through east's gateway, which forwards to west's.
  await west.admin.applyService({ name: 'ratings', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'ratings')], exported: true });
  const ratings = await startWorkload(mesh, 'west', { service: 'ratings' });
  t.teardown(() => ratings.close());
  const gatewayAddress = `127.0.0.1:${east.gateway!.port}`;
  // An east workload that knows its gateway, so it reaches endpoints in other networks through it.
  const frontend = await startWorkload(mesh, 'east', { service: 'frontend', app: false, config: { networkGateway: gatewayAddress } });
  t.teardown(() => frontend.close());

  // The host: its app keeps its own port; the bundle points at east's gateway.
  const app = await startEchoApp('web-on-host');
  t.teardown(() => app.close());
  const dir = join(mesh.dir, 'host-bundle');
  const { bundle, dnsPort } = await hostBundle({ cluster: east.config, ca: (await mesh.pki.cluster('east')).ca, group: webGroup(), dir, controllerAddress: gatewayAddress, viaGateway: true, appPort: app.port, pkcs12: true });
  t.is(bundle.endpointId, 'web-vms-127.0.0.1');

  let host = startHost(bundle);
  t.teardown(() => host.stop(2000));
  await host.waitForOutput(/sidecar web\.default \(spiffe:\/\/causeway\.internal\/ns\/default\/sa\/web-vm\)/, 30_000);
  await waitFor(async () => (await endpointOf(eastStore, 'default', 'web', bundle.endpointId))?.health === 'healthy', { what: 'the host registered and healthy in east', timeoutMs: 30_000 });
  // --format pkcs12: the sidecar keeps a keystore of its identity for a JVM or .NET app on the host.
  const keystore = join(dir, 'state', 'workload.p12');
  t.is(statSync(keystore).mode & 0o777, 0o600);
  t.is(statSync(bundle.files.pkcs12Password!).mode & 0o777, 0o600);
  const p12 = spawnSync('openssl', ['pkcs12', '-in', keystore, '-passin', `file:${bundle.files.pkcs12Password}`, '-nokeys', '-clcerts'], { encoding: 'utf8' });
  t.is(p12.status, 0, p12.stderr);
  t.is(new X509Certificate(p12.stdout).subjectAltName, `URI:${bundle.identity}`);
  const endpoint = (await endpointOf(eastStore, 'default', 'web', bundle.endpointId))!;
  t.is(endpoint.identity, spiffe('default', 'web-vm'));
  t.is(endpoint.cluster, 'east');
  t.deepEqual(endpoint.labels, { version: 'v1', 'causeway.io/network': 'web-vms' });
  t.is(statSync(join(dir, 'state', 'key.pem')).mode & 0o777, 0o600, 'the host key stays 0600 in its state directory');

  // In east's exports, hence in west's imports.
  await waitFor(async () => (await healthyIn(eastStore, EtcdKeys.exportedService('default', 'web'), ExportedService)) === 1, { what: 'east exports web with one healthy host', timeoutMs: 30_000 });
  await waitFor(async () => (await healthyIn(westStore, EtcdKeys.importedService('east', 'default', 'web'), ImportedService)) === 1, { what: 'west imports web from east', timeoutMs: 30_000 });

  // West's workload → the host, by mesh name, through east's gateway; the host's app learns the caller.
  const westResolver = new Resolver({ timeout: 2000, tries: 1 });
  westResolver.setServers([`127.0.0.1:${client.sidecar.dnsPort}`]);
  await waitFor(() => client.sidecar.snapshot?.services.some((s) => s.name === 'web' && s.targets.some((x) => x.healthy)) ?? false, { what: 'west sidecar sees web', timeoutMs: 30_000 });
  await client.sidecar.settled();
  const [webAddress] = await westResolver.resolve4('web.default.svc.causeway.internal');
  const toHost = await get(webAddress!, 8080, '/from-west');
  t.is(toHost.status, 200);
  t.is(toHost.json?.app, 'web-on-host');
  t.is(toHost.json?.peer, spiffe('default', 'client'));
  t.is(toHost.json?.peerCluster, 'west');

  // East's workload → the host, through east's gateway (the host is in another network).
  await waitFor(() => frontend.sidecar.snapshot?.services.some((s) => s.name === 'web' && s.targets.some((x) => x.kind === 'gateway' && x.cluster === 'east' && x.healthy)) ?? false, { what: 'east frontend reaches web through its gateway', timeoutMs: 30_000 });
  await frontend.sidecar.settled();
  const eastResolver = new Resolver({ timeout: 2000, tries: 1 });
  eastResolver.setServers([`127.0.0.1:${frontend.sidecar.dnsPort}`]);
  const [webInEast] = await eastResolver.resolve4('web.default.svc.causeway.internal');
  const fromEast = await get(webInEast!, 8080, '/from-east');
  t.is(fromEast.status, 200);
  t.is(fromEast.json?.app, 'web-on-host');
  t.is(fromEast.json?.peer, spiffe('default', 'frontend'));
  t.is(fromEast.json?.peerCluster, 'east');

  // The host's app → reviews in east, by name, through the host sidecar's DNS and loopback listener.
  const hostResolver = new Resolver({ timeout: 2000, tries: 1 });
  hostResolver.setServers([`127.0.0.1:${dnsPort}`]);
  let reviewsAddress: string | undefined;
  await waitFor(async () => {
    reviewsAddress = (await hostResolver.resolve4('reviews.default.svc.causeway.internal').catch(() => []))[0];
    return reviewsAddress !== undefined;
  }, { what: 'the host sidecar resolves reviews', timeoutMs: 30_000 });
  const fromHost = await get(reviewsAddress!, 9080, '/from-host');
  t.is(fromHost.status, 200);
  t.is(fromHost.json?.app, 'reviews-east');
  t.is(fromHost.json?.peer, spiffe('default', 'web-vm'));

  // The host's app → ratings, only in west: through east's gateway (the host reaches no other), forwarded to west's.
  let ratingsAddress: string | undefined;
  await waitFor(async () => {
    ratingsAddress = (await hostResolver.resolve4('ratings.default.svc.causeway.internal').catch(() => []))[0];
    return ratingsAddress !== undefined;
  }, { what: 'the host sidecar resolves ratings', timeoutMs: 30_000 });
  let fromHostToWest: Awaited<ReturnType<typeof get>> | undefined;
  await waitFor(async () => {
    fromHostToWest = await get(ratingsAddress!, 9080, '/from-host').catch(() => undefined);
    return fromHostToWest?.status === 200;
  }, { what: 'the host reaches ratings in west', timeoutMs: 30_000 });
  t.is(fromHostToWest?.json?.app, 'ratings-west');
  t.is(fromHostToWest?.json?.peer, spiffe('default', 'web-vm'));
  t.is(fromHostToWest?.json?.peerCluster, 'east');

  // Host stops without deregistering (a crash, a power cut): the lease ends the endpoint, in east and in west.
  await host.kill('SIGKILL');
  await waitFor(async () => (await endpointOf(eastStore, 'default', 'web', bundle.endpointId)) === undefined, { what: 'the endpoint gone after the lease TTL', timeoutMs: 30_000 });
  await waitFor(async () => (await healthyIn(westStore, EtcdKeys.importedService('east', 'default', 'web'), ImportedService)) === 0, { what: 'west sees no healthy host', timeoutMs: 30_000 });

  // Restart with no token at all: the certificate in the state directory is still valid.
  rmSync(bundle.files.joinToken);
  t.false(existsSync(bundle.files.joinToken));
  host = startHost(bundle, 'host-restarted');
  await waitFor(async () => (await endpointOf(eastStore, 'default', 'web', bundle.endpointId))?.health === 'healthy', { what: 'the host back after restart without a token', timeoutMs: 30_000 });
  await waitFor(async () => (await healthyIn(westStore, EtcdKeys.importedService('east', 'default', 'web'), ImportedService)) === 1, { what: 'west imports the host again', timeoutMs: 30_000 });

  // A graceful stop (systemctl stop → SIGTERM) deregisters at once.
  t.is(await host.stop(5000), 0);
  t.is(await endpointOf(eastStore, 'default', 'web', bundle.endpointId), undefined);
});
