import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { stringify } from 'yaml';
import { EtcdKeys } from '../../mesh/index.js';
import { Etcd3CatalogStore, FederationError, FederationErrorCodes, grantPeerAccess, peerUserName } from '../../federation/index.js';
import { waitFor } from '../fixtures/index.js';
import { causeway, connectionTo, exportService, exportedService, publishPeer, readImport, startCluster, startFederation } from './helpers.js';

test('a granted peer reads exports and nothing else, writes nothing, and can run a link with those credentials', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a', { tls: true }), startCluster(t, 'b')]);
  // The documented etcd settings: client-cert auth (the fixture's TLS mode) + auth enabled.
  a.etcd.etcdctl(['user', 'add', 'root', '--no-password']);
  a.etcd.etcdctl(['user', 'grant-role', 'root', 'root']);
  a.etcd.etcdctl(['auth', 'enable']);

  await publishPeer(t, a);
  await exportService(a, exportedService('default', 'reviews'));
  await a.store.commit([{ put: '/causeway/v1/endpoints/default/reviews/ep-1', value: '{}' }]);

  const access = await grantPeerAccess(a.store, { peer: 'b' });
  t.is(access.user, peerUserName('b'));
  t.true(access.authEnabled);
  // Granting twice is harmless (the command is re-runnable).
  await grantPeerAccess(a.store, { peer: 'b' });

  const cert = a.etcd.pki!.issue(access.user);
  const peerCreds = { caFile: a.etcd.pki!.caCertFile, ...cert };
  const asPeer = Etcd3CatalogStore.connect(connectionTo(a.etcd.endpoints, peerCreds));
  t.teardown(() => asPeer.close());

  const exportsSeen = await asPeer.list(EtcdKeys.exportsPrefix);
  t.true(exportsSeen.entries.some((e) => e.key === EtcdKeys.exportedService('default', 'reviews')));

  const denied = (error: unknown) => error instanceof FederationError && error.code === FederationErrorCodes.etcdPermissionDenied;
  await t.throwsAsync(asPeer.list(EtcdKeys.endpointsPrefix), { instanceOf: FederationError, code: FederationErrorCodes.etcdPermissionDenied });
  await t.throwsAsync(asPeer.get(EtcdKeys.endpoint('default', 'reviews', 'ep-1')), { code: FederationErrorCodes.etcdPermissionDenied });
  await t.throwsAsync(asPeer.get(EtcdKeys.cluster), { code: FederationErrorCodes.etcdPermissionDenied });
  for (const key of [EtcdKeys.exportedService('default', 'evil'), EtcdKeys.importedService('b', 'default', 'evil'), EtcdKeys.endpoint('default', 'x', 'y')]) {
    const error = await t.throwsAsync(asPeer.commit([{ put: key, value: '{}' }]));
    t.true(denied(error), `write to ${key}: ${String(error)}`);
  }
  await t.throwsAsync(asPeer.commit([{ delete: EtcdKeys.exportedService('default', 'reviews') }]), { code: FederationErrorCodes.etcdPermissionDenied });
  t.truthy(await a.store.get(EtcdKeys.exportedService('default', 'reviews')));

  // b's federation mirrors a over exactly those credentials.
  const { federation } = await startFederation(t, b, [{ peer: 'a', etcd: connectionTo(a.etcd.endpoints, peerCreds) }]);
  await federation.whenReady();
  const imported = await waitFor(async () => {
    const imp = await readImport(b, 'a', 'default', 'reviews');
    return imp && !imp.stale ? imp : undefined;
  }, { timeoutMs: 20_000, what: 'fresh import over peer credentials' });
  t.is(imported.peer, 'a');
});

test('causeway federation grant creates the read-only role and user, and warns while etcd auth is off', async (t) => {
  const a = await startCluster(t, 'a', { tls: true });
  const dir = mkdtempSync(join(tmpdir(), 'cw-grant-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'cluster.yaml');
  const root = a.etcd.rootClient!;
  writeFileSync(
    config,
    stringify({
      cluster: { name: 'a', locality: { region: 'r', zone: 'z' } },
      etcd: { endpoints: a.etcd.endpoints, tls: { ca: root.caFile, cert: root.certFile, key: root.keyFile } },
    }),
  );
  const off = await causeway(['federation', 'grant', '--peer', 'west', '--config', config]);
  t.is(off.code, 0, off.stderr);
  t.regex(off.stdout, /granted: etcd user "causeway-peer-west"/);
  t.regex(off.stdout, /warning: etcd auth is NOT enabled/);

  a.etcd.etcdctl(['user', 'add', 'root', '--no-password']);
  a.etcd.etcdctl(['user', 'grant-role', 'root', 'root']);
  a.etcd.etcdctl(['auth', 'enable']);
  const on = await causeway(['federation', 'grant', '--peer', 'west', '--user', 'west-federation', '--json', '--config', config]);
  t.is(on.code, 0, on.stderr);
  t.like(JSON.parse(on.stdout), { peer: 'west', user: 'west-federation', role: 'causeway-peer-west-exports-read', prefix: '/causeway/v1/exports/', authEnabled: true });
  const role = a.etcd.etcdctl(['role', 'get', 'causeway-peer-west-exports-read']);
  t.regex(role, /Read:\s*\[\/causeway\/v1\/exports\/, \/causeway\/v1\/exports0\)/);
  t.notRegex(role, /Write:\s*\S/);
  t.regex(a.etcd.etcdctl(['user', 'get', 'west-federation']), /causeway-peer-west-exports-read/);

  const revoked = await causeway(['federation', 'revoke', '--peer', 'west', '--user', 'west-federation', '--config', config]);
  t.is(revoked.code, 0, revoked.stderr);
  t.throws(() => a.etcd.etcdctl(['user', 'get', 'west-federation']));
});
