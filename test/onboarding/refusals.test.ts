import test from 'ava';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistrationClient } from '../../api-client/index.js';
import { CatalogAdmin, Controller } from '../../controller/index.js';
import { Etcd3Store } from '../../store/index.js';
import { controllerIdentity, parseConfig, type ClusterConfig } from '../../mesh/index.js';
import { startEtcd } from '../../testkit/etcd.js';
import { createMeshPki, type MeshPki, type MeshPkiCluster } from '../../testkit/mesh-pki.js';
import { startEchoApp } from '../proxy/helpers/mesh.js';
import { TD, applyGroup, editConfig, endpointOf, hostBundle, spiffe, startHost, webGroup } from './helpers.js'
import { waitFor } from '../../testkit/ports.js';

// One cluster with a real etcd and controller (CA hosted); every host is a real
// `causeway sidecar` process started from a bundle that was tampered with or went stale.

interface World {
  dir: string;
  pki: MeshPki;
  east: MeshPkiCluster;
  config: ClusterConfig;
  controller: Controller;
  store: Etcd3Store;
  appPort: number;
}

test.serial.before(async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-onboard-refuse-'));
  const etcd = await startEtcd({ name: 'east' });
  const pki = await createMeshPki(join(dir, 'pki'), { trustDomain: TD });
  const east = await pki.cluster('east');
  const config = parseConfig('cluster', {
    cluster: { name: 'east', locality: { region: 'eu', zone: 'eu-1' } },
    trustDomain: TD,
    etcd: { endpoints: etcd.endpoints },
    controller: { host: '127.0.0.1', grpcPort: 0, endpointLeaseTtlSeconds: 3, pushDebounceMs: 20 },
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
  });
  const controller = new Controller({ config, intermediate: east.ca, observability: false });
  await controller.start();
  const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  const app = await startEchoApp('host-app');
  await applyGroup(store, webGroup());
  await applyGroup(store, webGroup({ name: 'db-vms', service: 'db', serviceAccount: 'db-vm', ports: [{ name: 'tcp', port: 5432, protocol: 'tcp' }] }));
  await new CatalogAdmin(store).applyService({ name: 'payments', namespace: 'default', ports: [{ name: 'http', port: 8080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'payments')] });
  const world: World = { dir, pki, east, config, controller, store, appPort: app.port };
  (t.context as { world: World; close: () => Promise<void> }).world = world;
  (t.context as { close: () => Promise<void> }).close = async () => {
    await app.close();
    await controller.stop();
    await store.close();
    await etcd.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
});

test.after.always(async (t) => {
  await (t.context as { close?: () => Promise<void> }).close?.();
});

const worldOf = (t: import('ava').ExecutionContext) => (t.context as { world: World }).world;
let n = 0;

async function bundleIn(w: World, group = webGroup(), extra: { ttlSeconds?: number; now?: Date } = {}) {
  return hostBundle({ cluster: w.config, ca: w.east.ca, group, dir: join(w.dir, `bundle-${++n}`), controllerAddress: `127.0.0.1:${w.controller.grpcPort}`, viaGateway: false, appPort: w.appPort, ...extra });
}

test.serial('an expired join token: the sidecar gets no certificate, says why, exits non-zero, registers nothing', async (t) => {
  const w = worldOf(t);
  const { bundle } = await bundleIn(w, webGroup(), { ttlSeconds: 60, now: new Date(Date.now() - 3600_000) });
  const host = startHost(bundle, 'expired');
  t.teardown(() => host.stop(1000));
  t.is(await host.exited, 1);
  t.regex(host.output(), /causeway: error: could not get the first workload certificate: .*expired/);
  t.is(await endpointOf(w.store, 'default', 'web', bundle.endpointId), undefined);
});

test.serial("another group's token: the CA refuses to sign the group's identity with it", async (t) => {
  const w = worldOf(t);
  const { bundle } = await bundleIn(w);
  const other = await bundleIn(w, webGroup({ name: 'db-vms', service: 'db', serviceAccount: 'db-vm', ports: [{ name: 'tcp', port: 5432, protocol: 'tcp' }] }));
  copyFileSync(other.bundle.files.joinToken, bundle.files.joinToken);
  const host = startHost(bundle, 'other-group-token');
  t.teardown(() => host.stop(1000));
  t.is(await host.exited, 1);
  t.regex(host.output(), /could not get the first workload certificate: the CSR asks for spiffe:\/\/causeway\.internal\/ns\/default\/sa\/web-vm but the caller authenticated as spiffe:\/\/causeway\.internal\/ns\/default\/sa\/db-vm/);
  t.is(await endpointOf(w.store, 'default', 'web', bundle.endpointId), undefined);
});

test.serial("a bundle edited to claim another service account: the token names only the group's identity", async (t) => {
  const w = worldOf(t);
  const { bundle } = await bundleIn(w);
  editConfig(bundle.files.config, (c) => ({ ...c, serviceAccount: 'payments' }));
  const host = startHost(bundle, 'other-identity');
  t.teardown(() => host.stop(1000));
  t.is(await host.exited, 1);
  t.regex(host.output(), /could not get the first workload certificate: the CSR asks for spiffe:\/\/causeway\.internal\/ns\/default\/sa\/payments but the caller authenticated as spiffe:\/\/causeway\.internal\/ns\/default\/sa\/web-vm/);
});

test.serial("a bundle used for a service the group's identity may not serve: the controller refuses the registration", async (t) => {
  const w = worldOf(t);
  const { bundle } = await bundleIn(w);
  editConfig(bundle.files.config, (c) => ({ ...c, service: 'payments' }));
  const host = startHost(bundle, 'other-service');
  t.teardown(() => host.stop(1000));
  // The identity is genuine (the token matches), so the certificate comes; the registration does not.
  await host.waitForOutput(/the controller refused this endpoint registration/, 30_000);
  t.regex(host.output(), /spiffe:\/\/causeway\.internal\/ns\/default\/sa\/web-vm may not serve payments\.default/);
  t.is(await endpointOf(w.store, 'default', 'payments', bundle.endpointId), undefined);
  t.is(await endpointOf(w.store, 'default', 'web', bundle.endpointId), undefined);
});

test.serial('the controller refuses the group identity for another service at the API too (PERMISSION_DENIED), and accepts it for its own', async (t) => {
  const w = worldOf(t);
  const cert = await w.pki.workload('east', 'default/web-vm');
  const tls = { key: cert.privateKeyPem, certChain: cert.certChainPem, trustBundle: cert.trustBundlePem };
  const register = (service: string) =>
    new Promise<string>((resolve) => {
      const client = new RegistrationClient({
        address: `127.0.0.1:${w.controller.grpcPort}`,
        tls,
        expectedServerId: controllerIdentity(TD),
        endpoint: { service, namespace: 'default', endpointId: `web-vms-127.0.0.${service.length}`, address: '127.0.0.1', inboundPort: 15006, labels: {}, locality: { region: 'eu', zone: 'eu-1' } },
      });
      client.once('refused', (error) => {
        void client.stop({ deregister: false });
        resolve(`refused ${String(error.code)} ${error.details}`);
      });
      client.once('registered', () => {
        void client.stop({ deregister: true });
        resolve('registered');
      });
      void client.start();
    });
  t.regex(await register('payments'), /^refused 7 .*may not serve payments\.default/);
  t.is(await register('web'), 'registered');
  await waitFor(async () => (await endpointOf(w.store, 'default', 'web', 'web-vms-127.0.0.3')) === undefined, { what: 'deregistered', timeoutMs: 30_000 });
});
