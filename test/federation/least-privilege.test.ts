import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { parse, stringify } from 'yaml';
import { EtcdKeys, LinkConfig } from '../../mesh/index.js';
import { connectFederationStore, FederationError, FederationErrorCodes, grantPeerAccess, peerRoleName, peerUserName } from '../../federation/index.js';
import type { EtcdStore } from '../../store/index.js';
import { createTestPki } from '../../testkit/test-pki.js';
import { causeway, connectionTo, exportService, exportedService, publishPeer, startCluster, startFederation, waitForFreshImport, type TestCluster } from './helpers.js';

test('a granted peer reads exports and nothing else, writes nothing, and can run a link with those credentials', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a', { tls: true }), startCluster(t, 'b')]);
  // The documented etcd settings: client-cert auth (the fixture's TLS mode) + auth enabled.
  a.etcd.enableAuth();

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
  const asPeer = connectFederationStore(connectionTo(a.etcd.endpoints, peerCreds));
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
  const imported = await waitForFreshImport(b, 'a', 'default', 'reviews', 'fresh import over peer credentials');
  t.is(imported.peer, 'a');
});

test('causeway federation grant creates the read-only role and user in the export store, turning its auth on when it is off', async (t) => {
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
      // This test's one etcd plays the export store too (grant works on the export store only).
      exportStore: { endpoints: a.etcd.endpoints, tls: { ca: root.caFile, cert: root.certFile, key: root.keyFile } },
    }),
  );
  const off = await causeway(['federation', 'grant', '--peer', 'west', '--config', config]);
  t.is(off.code, 0, off.stderr);
  t.regex(off.stdout, /granted: export-store user "causeway-peer-west"/);
  t.notRegex(off.stdout, /warning: etcd auth is NOT enabled/, 'grant bootstraps auth (user root, role root) instead of warning');
  t.regex(a.etcd.etcdctl(['user', 'get', 'root']), /Roles: root/);

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

test('grant --client-ca issues the peer a working certificate and links[] entry, checks it, and refuses a wrong CA key before granting anything', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a', { tls: true }), startCluster(t, 'b')]);
  a.etcd.enableAuth();
  await publishPeer(t, a);
  await exportService(a, exportedService('default', 'reviews'));

  const { dir, config } = rootConfig(t, a);
  const pki = a.etcd.pki!;
  const caKey = join(pki.dir, 'ca-key.pem');
  const out = join(dir, 'b-at-a');

  // A key that is not the CA's: refused with the reason, and nothing granted or written.
  const otherKey = join(dir, 'other-key.pem');
  writeFileSync(otherKey, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const wrong = await causeway(['federation', 'grant', '--peer', 'c', '--config', config, '--client-ca', pki.caCertFile, '--client-ca-key', otherKey, '--out', join(dir, 'c-at-a')]);
  t.is(wrong.code, 1, wrong.stdout);
  t.regex(wrong.stderr, /the client CA key does not belong to the client CA certificate .*CW_CA_INVALID/);
  t.throws(() => a.etcd.etcdctl(['user', 'get', peerUserName('c')]), undefined, 'no user was created for c');
  t.false(existsSync(join(dir, 'c-at-a')));
  const half = await causeway(['federation', 'grant', '--peer', 'c', '--config', config, '--client-ca', pki.caCertFile]);
  t.is(half.code, 2);
  t.regex(half.stderr, /--client-ca and --client-ca-key go together/);

  const granted = await causeway(['federation', 'grant', '--peer', 'b', '--config', config, '--client-ca', pki.caCertFile, '--client-ca-key', caKey, '--out', out, '--days', '1']);
  t.is(granted.code, 0, granted.stderr);
  t.regex(granted.stdout, /checked with it: reads \/causeway\/v1\/exports\/ \(\d+ keys\), refused \/causeway\/v1\/endpoints\//);
  t.is(statSync(join(out, 'key.pem')).mode & 0o777, 0o600);
  const cert = new X509Certificate(readFileSync(join(out, 'cert.pem')));
  t.is(cert.subject, `CN=${peerUserName('b')}`);
  t.is(cert.subjectAltName, 'URI:spiffe://causeway.internal/ns/causeway-system/sa/federation');
  t.true(cert.verify(new X509Certificate(readFileSync(pki.caCertFile)).publicKey));
  const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
  // The test PKI's CA lives 2 days, so 1 day is the most it can give.
  t.true(days > 0.99 && days <= 1.01, `valid for ${days} days`);

  // The written entry reaches a through its gateway (the config's advertised one); b's
  // federation runs a link with exactly its credentials (direct here: no gateway in this test;
  // test/federation/gateway-link.test.ts goes through one).
  const links = (parse(readFileSync(join(out, 'link.yaml'), 'utf8')) as unknown[]).map((l) => LinkConfig.parse(l));
  t.like(links[0], { peer: 'a', gateways: ['127.0.0.1:15443'] });
  const { federation } = await startFederation(t, b, [{ peer: 'a', etcd: { endpoints: a.etcd.endpoints, dialTimeoutMs: 2000, tls: links[0]!.tls! } }]);
  await federation.whenReady();
  const imported = await waitForFreshImport(b, 'a', 'default', 'reviews', 'import over the issued credentials');
  t.is(imported.peer, 'a');

  // The key is never overwritten.
  const again = await causeway(['federation', 'grant', '--peer', 'b', '--config', config, '--client-ca', pki.caCertFile, '--client-ca-key', caKey, '--out', out]);
  t.is(again.code, 2);
  t.regex(again.stderr, /key\.pem already exists; pick another --out or remove it \(nothing was changed\)/);
});

/** A cluster config for `a` (its etcd as main etcd and export store) using its root client certificate, in a fresh temp folder. */
function rootConfig(t: import('ava').ExecutionContext, a: TestCluster): { dir: string; config: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cw-grant-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const root = a.etcd.rootClient!;
  const config = join(dir, 'a.yaml');
  writeFileSync(config, stringify({
      cluster: { name: 'a', locality: { region: 'r', zone: 'z' } },
      etcd: { endpoints: a.etcd.endpoints, tls: { ca: root.caFile, cert: root.certFile, key: root.keyFile } },
      exportStore: { endpoints: a.etcd.endpoints, tls: { ca: root.caFile, cert: root.certFile, key: root.keyFile } },
      gateway: { advertiseAddress: '127.0.0.1', port: 15443 },
    }));
  return { dir, config };
}

function inspector(t: import('ava').ExecutionContext, a: TestCluster): EtcdStore {
  const auth = connectFederationStore(connectionTo(a.etcd.endpoints, a.etcd.rootClient));
  t.teardown(() => auth.close());
  return auth;
}

test('grant --user root is refused before anything is written: no role, root unchanged, no credential file', async (t) => {
  const a = await startCluster(t, 'a', { tls: true });
  a.etcd.enableAuth();
  const { dir, config } = rootConfig(t, a);
  const auth = inspector(t, a);
  const pki = a.etcd.pki!;
  const out = join(dir, 'west-at-a');
  for (const args of [[], ['--client-ca', pki.caCertFile, '--client-ca-key', join(pki.dir, 'ca-key.pem'), '--out', out]]) {
    const result = await causeway(['federation', 'grant', '--peer', 'west', '--user', 'root', '--config', config, ...args]);
    t.not(result.code, 0, result.stdout);
    t.regex(result.stderr, /--user root: "root" is etcd's superuser.*nothing was changed.*CW_FEDERATION_GRANT_REFUSED/);
    t.is(result.stdout, '');
  }
  t.false(existsSync(out), 'no credential written');
  t.deepEqual(await auth.userRoles('root'), ['root'], 'root holds only its own role');
  t.is(await auth.rolePermissions(peerRoleName('west')), undefined, 'no peer role created');
  // The API refuses it too.
  await t.throwsAsync(grantPeerAccess(a.store, { peer: 'west', user: 'root' }), { code: FederationErrorCodes.grantRefused });
});

test('grant to an existing user holding another role is refused before anything is written; with only the peer role left it goes through and proves reads-only', async (t) => {
  const a = await startCluster(t, 'a', { tls: true });
  a.etcd.enableAuth();
  await publishPeer(t, a);
  await exportService(a, exportedService('default', 'reviews'));
  a.etcd.etcdctl(['role', 'add', 'ops']);
  a.etcd.etcdctl(['role', 'grant-permission', 'ops', '--prefix=true', 'readwrite', '/causeway/v1/']);
  a.etcd.etcdctl(['user', 'add', 'shared', '--no-password']);
  a.etcd.etcdctl(['user', 'grant-role', 'shared', 'ops']);
  const { dir, config } = rootConfig(t, a);
  const auth = inspector(t, a);
  const pki = a.etcd.pki!;
  const out = join(dir, 'west-at-a');
  const withCa = ['--client-ca', pki.caCertFile, '--client-ca-key', join(pki.dir, 'ca-key.pem'), '--out', out, '--days', '1'];
  const opsBefore = await auth.rolePermissions('ops');

  for (const args of [[], withCa]) {
    const result = await causeway(['federation', 'grant', '--peer', 'west', '--user', 'shared', '--config', config, ...args]);
    t.not(result.code, 0, result.stdout);
    t.regex(result.stderr, /etcd user "shared" already exists with role "ops" besides "causeway-peer-west-exports-read".*etcdctl user revoke-role shared ops.*nothing was changed.*CW_FEDERATION_GRANT_REFUSED/);
  }
  t.false(existsSync(out), 'no credential written');
  t.deepEqual(await auth.userRoles('shared'), ['ops'], 'the user keeps exactly its roles');
  t.deepEqual(await auth.rolePermissions('ops'), opsBefore, 'the other role is untouched');
  t.is(await auth.rolePermissions(peerRoleName('west')), undefined, 'no peer role created');

  // What the error says to do, then the same command succeeds.
  a.etcd.etcdctl(['user', 'revoke-role', 'shared', 'ops']);
  const granted = await causeway(['federation', 'grant', '--peer', 'west', '--user', 'shared', '--config', config, ...withCa]);
  t.is(granted.code, 0, granted.stderr);
  t.regex(granted.stdout, /checked with it: reads \/causeway\/v1\/exports\/ \(\d+ keys\), refused \/causeway\/v1\/endpoints\/, refused a write to \/causeway\/v1\/exports\//);
  t.deepEqual(await auth.userRoles('shared'), [peerRoleName('west')]);
  t.deepEqual(await auth.rolePermissions(peerRoleName('west')), [{ permission: 'read', key: '/causeway/v1/exports/', rangeEnd: '/causeway/v1/exports0' }]);
  t.deepEqual(readdirSync(out).sort(), ['ca.pem', 'cert.pem', 'key.pem', 'link.yaml']);
  t.is(statSync(join(out, 'key.pem')).mode & 0o777, 0o600);
  // Re-running for a user that holds exactly the peer role is allowed (until the key exists).
  const again = await causeway(['federation', 'grant', '--peer', 'west', '--user', 'shared', '--config', config]);
  t.is(again.code, 0, again.stderr);
});

test('the write probe writes nothing: refused for a peer login, allowed (and still not written) for root', async (t) => {
  const a = await startCluster(t, 'a', { tls: true });
  a.etcd.enableAuth();
  const access = await grantPeerAccess(a.store, { peer: 'b' });
  const cert = a.etcd.pki!.issue(access.user);
  const asPeer = connectFederationStore(connectionTo(a.etcd.endpoints, { caFile: a.etcd.pki!.caCertFile, ...cert }));
  t.teardown(() => asPeer.close());
  const before = (await a.store.list(EtcdKeys.exportsPrefix)).revision;
  t.true(await asPeer.writeRefused(EtcdKeys.heartbeat));
  t.false(await inspector(t, a).writeRefused(EtcdKeys.heartbeat));
  t.is(await a.store.get(EtcdKeys.heartbeat), undefined);
  t.is((await a.store.list(EtcdKeys.exportsPrefix)).revision, before, 'no revision was spent: nothing was written');
});

test('regression: a credential that fails its check (a CA etcd does not trust) is not written; the error says what to do', async (t) => {
  const a = await startCluster(t, 'a', { tls: true });
  a.etcd.enableAuth();
  const { dir, config } = rootConfig(t, a);
  const stranger = createTestPki(join(dir, 'stranger-ca'));
  const out = join(dir, 'west-at-a');
  const result = await causeway(['federation', 'grant', '--peer', 'west', '--config', config, '--client-ca', stranger.caCertFile, '--client-ca-key', join(stranger.dir, 'ca-key.pem'), '--out', out, '--days', '1']);
  t.is(result.code, 1, result.stdout);
  t.regex(result.stderr, /cannot read \/causeway\/v1\/exports\/.*Is --client-ca the CA in etcd's --trusted-ca-file\?.*No credential was written/);
  t.false(existsSync(out));
});
