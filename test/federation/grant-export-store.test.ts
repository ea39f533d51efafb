import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { parse, stringify } from 'yaml';
import { EtcdKeys, LinkConfig } from '../../mesh/index.js';
import { peerRoleName } from '../../federation/index.js';
import { startExportStore } from './export-store-fixture.js';
import { causeway, startCluster } from './helpers.js';

function tempDir(t: import('ava').ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'cw-grant-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('grant without exportStore refuses, exit 1, and changes nothing: peers never get a login on the main etcd', async (t) => {
  const a = await startCluster(t, 'a', { tls: true });
  a.etcd.enableAuth();
  const dir = tempDir(t);
  const root = a.etcd.rootClient!;
  const config = join(dir, 'a.yaml');
  writeFileSync(config, stringify({ cluster: { name: 'a', locality: { region: 'r', zone: 'z' } }, etcd: { endpoints: a.etcd.endpoints, tls: { ca: root.caFile, cert: root.certFile, key: root.keyFile } } }));
  const out = join(dir, 'west-at-a');
  const result = await causeway(['federation', 'grant', '--peer', 'west', '--config', config, '--client-ca', a.etcd.pki!.caCertFile, '--client-ca-key', join(a.etcd.pki!.dir, 'ca-key.pem'), '--out', out, '--gateway', '127.0.0.1:15443']);
  t.is(result.code, 1, result.stdout);
  t.regex(result.stderr, /has no exportStore: peers read the export store, never the main etcd; run `causeway federation init` and set exportStore.*nothing was changed.*CW_FEDERATION_GRANT_REFUSED/);
  t.is(result.stdout, '');
  t.false(existsSync(out));
  t.throws(() => a.etcd.etcdctl(['role', 'get', peerRoleName('west')]), undefined, 'no role in the main etcd');
});

test('grant with exportStore grants in the export store, finds its CA from federation init, and writes the gateways link.yaml (ca.pem = the export-store CA)', async (t) => {
  const store = await startExportStore(t, 'a');
  const dir = tempDir(t);
  const config = join(dir, 'a.yaml');
  writeFileSync(
    config,
    stringify({ cluster: { name: 'a', locality: { region: 'r', zone: 'z' } }, etcd: { endpoints: ['http://127.0.0.1:1'] }, exportStore: store.config, gateway: { advertiseAddress: 'gw.a.example', port: 15443 } }),
  );
  const out = join(dir, 'west-at-a');
  const result = await causeway(['federation', 'grant', '--peer', 'west', '--config', config, '--out', out, '--days', '1']);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /checked with it: reads \/causeway\/v1\/exports\/ \(\d+ keys\), refused \/causeway\/v1\/endpoints\/, refused a write to \/causeway\/v1\/exports\//);
  t.regex(result.stdout, /link: through gateway gw\.a\.example:15443 to exports\.a\.cw1\.causeway\.internal/);
  t.deepEqual(readdirSync(out).sort(), ['ca.pem', 'cert.pem', 'key.pem', 'link.yaml']);
  t.is(readFileSync(join(out, 'ca.pem'), 'utf8'), readFileSync(store.pki.caCertFile, 'utf8'));
  const [link] = (parse(readFileSync(join(out, 'link.yaml'), 'utf8')) as unknown[]).map((l) => LinkConfig.parse(l));
  t.deepEqual(link, { peer: 'a', gateways: ['gw.a.example:15443'], tls: { ca: join(out, 'ca.pem'), cert: join(out, 'cert.pem'), key: join(out, 'key.pem') } });
  t.true(await store.root.authEnabled(), 'grant turned the export store auth on');
  t.deepEqual(await store.root.rolePermissions(peerRoleName('west')), [{ permission: 'read', key: EtcdKeys.exportsPrefix, rangeEnd: '/causeway/v1/exports0' }]);

  // No gateway to name: refused before anything changes.
  const bare = join(dir, 'bare.yaml');
  writeFileSync(bare, stringify({ cluster: { name: 'a', locality: { region: 'r', zone: 'z' } }, etcd: { endpoints: ['http://127.0.0.1:1'] }, exportStore: store.config }));
  const noGateway = await causeway(['federation', 'grant', '--peer', 'east', '--config', bare, '--out', join(dir, 'east-at-a')]);
  t.is(noGateway.code, 2, noGateway.stdout);
  t.regex(noGateway.stderr, /give --gateway host:port \(repeatable\), or set gateway\.advertiseAddress/);
  t.is(await store.root.rolePermissions(peerRoleName('east')), undefined);
});
