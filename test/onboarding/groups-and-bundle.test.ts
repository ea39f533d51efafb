import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { verifyJoinToken } from '../../ca/index.js';
import { CatalogAdmin, ControllerErrorCodes, WorkloadGroups, writeWorkloadBundle } from '../../controller/index.js';
import { Etcd3Store } from '../../store/index.js';
import { EtcdKeys, ServiceSpec, WorkloadGroup, decodeCatalogValue, parseConfig } from '../../mesh/index.js';
import { parseSidecarConfig } from '../../proxy/index.js';
import { startEtcd } from '../../testkit/etcd.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { TD, cli, spiffe, webGroup } from './helpers.js';

async function world(t: import('ava').ExecutionContext) {
  const dir = mkdtempSync(join(tmpdir(), 'cw-onboard-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => store.close());
  const pki = await createMeshPki(join(dir, 'pki'), { trustDomain: TD });
  const east = await pki.cluster('east');
  const cluster = parseConfig('cluster', { cluster: { name: 'east', locality: { region: 'eu', zone: 'eu-1' }, network: 'east-net' }, trustDomain: TD, etcd: { endpoints: etcd.endpoints } });
  const configFile = join(dir, 'cluster.yaml');
  writeFileSync(configFile, `cluster: {name: east, locality: {region: eu, zone: eu-1}}\ntrustDomain: ${TD}\netcd: {endpoints: [${etcd.endpoints[0]}]}\n`);
  return { dir, etcd, store, pki, east, cluster, configFile, groups: new WorkloadGroups(store, TD) };
}

test('group apply stores the group under /causeway/v1/workloads and creates its missing service with only the group identity', async (t) => {
  const w = await world(t);
  const applied = await w.groups.apply(webGroup(), { exportService: true });
  t.true(applied.created);
  t.is(applied.service, 'created');
  t.is(applied.identity, spiffe('default', 'web-vm'));
  const kv = await w.store.get(EtcdKeys.workloadGroup('default', 'web-vms'));
  t.truthy(kv);
  t.true(decodeCatalogValue(WorkloadGroup, 'k', kv!.value).ok);
  const spec = decodeCatalogValue(ServiceSpec, 'k', (await w.store.get(EtcdKeys.service('default', 'web')))!.value);
  t.true(spec.ok && spec.value.exported && spec.value.serviceAccounts.join() === spiffe('default', 'web-vm'));
  // Re-applying updates in place; the existing service is checked, not rewritten.
  const again = await w.groups.apply(webGroup({ labels: { version: 'v2' } }));
  t.false(again.created);
  t.is(again.service, 'checked');
  t.deepEqual((await w.groups.get('default', 'web-vms')).labels, { version: 'v2' });
  t.deepEqual((await w.groups.list()).map((g) => g.name), ['web-vms']);
  t.deepEqual(await w.groups.list('other'), []);
  t.true(await w.groups.delete('default', 'web-vms'));
  t.false(await w.groups.delete('default', 'web-vms'));
  await t.throwsAsync(w.groups.get('default', 'web-vms'), { message: /does not exist; apply it first/ });
});

test('group apply refuses a service that does not allow the group identity, or lacks its ports', async (t) => {
  const w = await world(t);
  await new CatalogAdmin(w.store).applyService({ name: 'web', namespace: 'default', ports: [{ name: 'http', port: 8080 }], serviceAccounts: [spiffe('default', 'web')] });
  const refused = await t.throwsAsync(w.groups.apply(webGroup()));
  t.is((refused as { code?: string }).code, ControllerErrorCodes.workloadIdentityNotAllowed);
  t.regex(refused!.message, /does not allow spiffe:\/\/causeway.internal\/ns\/default\/sa\/web-vm/);
  const ports = await t.throwsAsync(w.groups.apply(webGroup({ serviceAccount: 'web', ports: [{ name: 'grpc', port: 9090, protocol: 'grpc' }] })));
  t.is((ports as { code?: string }).code, ControllerErrorCodes.workloadPortsMismatch);
  t.is(await w.store.get(EtcdKeys.workloadGroup('default', 'web-vms')), undefined, 'nothing stored after a refusal');
  const ok = await w.groups.apply(webGroup({ serviceAccount: 'web' }));
  t.is(ok.service, 'checked');
});

test('bundle: sidecar config in the sidecar format, trust bundle, a 0600 join token for the group identity only, bounded by --ttl, and a systemd unit', async (t) => {
  const w = await world(t);
  await w.groups.apply(webGroup({ probe: { http: { port: 8080, path: '/healthz' } } }));
  const group = await w.groups.get('default', 'web-vms');
  const out = join(w.dir, 'bundle');
  const now = new Date();
  const bundle = await writeWorkloadBundle({ cluster: w.cluster, group, ca: w.east.ca, controllerAddress: '203.0.113.10:15443', viaGateway: true, address: '198.51.100.7', outDir: out, ttlSeconds: 900, now });
  t.is(statSync(out).mode & 0o777, 0o700);
  t.is(statSync(bundle.files.joinToken).mode & 0o777, 0o600);
  t.is(bundle.endpointId, 'web-vms-198.51.100.7');

  const config = parseSidecarConfig(parseYaml(readFileSync(bundle.files.config, 'utf8')), bundle.files.config);
  t.like(config, {
    cluster: 'east',
    locality: { region: 'eu', zone: 'eu-1' },
    namespace: 'default',
    service: 'web',
    serviceAccount: 'web-vm',
    workloadGroup: 'web-vms',
    labels: { version: 'v1', 'causeway.io/network': 'web-vms' },
    controller: { address: '203.0.113.10:15443', viaGateway: true },
    networkGateway: '203.0.113.10:15443',
    advertiseAddress: '198.51.100.7',
    stateDir: '/var/lib/causeway',
    joinTokenFile: '/etc/causeway/join-token',
    trustBundleFile: '/etc/causeway/trust-bundle.pem',
    probe: { http: { port: 8080, path: '/healthz' } },
  });
  t.deepEqual(config.ports.map((p) => [p.name, p.port]), [['http', 8080]]);
  t.is(readFileSync(bundle.files.trustBundle, 'utf8').trim(), w.pki.trustBundlePem.trim());

  const claims = verifyJoinToken(readFileSync(bundle.files.joinToken, 'utf8').trim(), w.east.ca, { now });
  t.is(claims.sub, spiffe('default', 'web-vm'));
  t.is(claims.exp - claims.iat, 900);
  t.throws(() => verifyJoinToken(readFileSync(bundle.files.joinToken, 'utf8').trim(), w.east.ca, { now: new Date(now.getTime() + 901_000) }), { message: /expired/ });

  const unit = readFileSync(bundle.files.unit, 'utf8');
  for (const line of ['Restart=on-failure', 'User=causeway', 'StateDirectory=causeway', 'StateDirectoryMode=0700', 'UMask=0077', 'ExecStart=/usr/local/bin/causeway sidecar --config /etc/causeway/sidecar.yaml', 'WantedBy=multi-user.target']) {
    t.true(unit.split('\n').includes(line), `unit has ${line}`);
  }
  const install = readFileSync(bundle.files.install, 'utf8');
  t.regex(install, /install -m 0600 -o causeway -g causeway join-token \/etc\/causeway\/join-token/);
});

test('bundle with DNS on 53: the unit grants CAP_NET_BIND_SERVICE and nothing else, and the sidecar refuses names outside the mesh instead of forwarding them to itself', async (t) => {
  const w = await world(t);
  await w.groups.apply(webGroup());
  const group = await w.groups.get('default', 'web-vms');
  const low = await writeWorkloadBundle({ cluster: w.cluster, group, ca: w.east.ca, controllerAddress: '10.0.0.1:15012', viaGateway: false, address: '10.0.0.9', outDir: join(w.dir, 'low'), dnsPort: 53 });
  const unit = readFileSync(low.files.unit, 'utf8').split('\n');
  t.true(unit.includes('AmbientCapabilities=CAP_NET_BIND_SERVICE'));
  t.true(unit.includes('CapabilityBoundingSet=CAP_NET_BIND_SERVICE'));
  const config = parseSidecarConfig(parseYaml(readFileSync(low.files.config, 'utf8')), low.files.config);
  t.is(config.dnsPort, 53);
  t.is(config.sidecar.dns.outside, 'refuse');
  t.is(config.networkGateway, undefined, 'a host in the cluster network goes direct');
  t.is(config.labels['causeway.io/network'], undefined);
  const high = await writeWorkloadBundle({ cluster: w.cluster, group, ca: w.east.ca, controllerAddress: '10.0.0.1:15012', viaGateway: false, address: '10.0.0.9', outDir: join(w.dir, 'high') });
  t.true(readFileSync(high.files.unit, 'utf8').split('\n').includes('CapabilityBoundingSet='));
});

// systemd-analyze comes from Debian's systemd package, which the pretest script installs when missing.
test('the systemd unit passes systemd-analyze verify', async (t) => {
  const w = await world(t);
  await w.groups.apply(webGroup());
  const group = await w.groups.get('default', 'web-vms');
  // ExecStart must name an existing executable for verify: point it at this Node.
  const bundle = await writeWorkloadBundle({ cluster: w.cluster, group, ca: w.east.ca, controllerAddress: '10.0.0.1:15012', viaGateway: false, address: '10.0.0.9', outDir: join(w.dir, 'unit'), causewayBin: process.execPath });
  const verify = spawnSync('systemd-analyze', ['verify', bundle.files.unit], { encoding: 'utf8' });
  t.is(verify.error, undefined, 'systemd-analyze must be installed (Debian package systemd)');
  t.is(verify.status, 0, verify.stderr);
  t.is(verify.stderr.trim(), '');
});

test('without --controller the bundle takes the first gateway (--via-gateway) or controller of the cluster record', async (t) => {
  const w = await world(t);
  await t.throwsAsync(w.groups.controllerAddress(true), { message: /lists no gateway yet .*pass --controller/ });
  await w.store.put(
    EtcdKeys.cluster,
    JSON.stringify({ schema: 1, name: 'east', locality: { region: 'eu', zone: 'eu-1' }, network: 'east-net', trustDomain: TD, gateways: [{ address: '203.0.113.10', port: 15443 }], controllers: [{ address: 'controller-east', port: 15012 }] }),
  );
  t.is(await w.groups.controllerAddress(true), '203.0.113.10:15443');
  t.is(await w.groups.controllerAddress(false), 'controller-east:15012');
});

test('bundle refuses a CA of another cluster and a token TTL above the limit', async (t) => {
  const w = await world(t);
  await w.groups.apply(webGroup());
  const group = await w.groups.get('default', 'web-vms');
  const west = await w.pki.cluster('west');
  const base = { cluster: w.cluster, group, controllerAddress: '10.0.0.1:15012', viaGateway: false, address: '10.0.0.9', outDir: join(w.dir, 'b') };
  const other = await t.throwsAsync(writeWorkloadBundle({ ...base, ca: west.ca }));
  t.is((other as { code?: string }).code, ControllerErrorCodes.workloadBundleInvalid);
  await t.throwsAsync(writeWorkloadBundle({ ...base, ca: w.east.ca, ttlSeconds: 8 * 86_400 }), { message: /7 days/ });
});

test('CLI: workload group apply|list|delete and workload bundle; bad usage exits 2 with one line', async (t) => {
  const w = await world(t);
  const groupFile = join(w.dir, 'group.yaml');
  writeFileSync(groupFile, 'kind: WorkloadGroup\nname: web-vms\nnamespace: default\nservice: web\nserviceAccount: web-vm\nports: [{name: http, port: 8080, protocol: http}]\nprobe: {tcp: {port: 8080}}\n');
  const applied = await cli(['workload', 'group', 'apply', '-f', groupFile, '--config', w.configFile, '--export']);
  t.is(applied.code, 0, applied.output);
  t.regex(applied.output, /workload group web-vms in namespace default created: hosts serve web.default as spiffe:\/\/causeway.internal\/ns\/default\/sa\/web-vm \(service web.default created, exported\)/);

  const listed = await cli(['workload', 'group', 'list', '--config', w.configFile]);
  t.is(listed.code, 0, listed.output);
  t.regex(listed.output, /default\s+web-vms\s+web\s+web-vm\s+http\/8080\s+-/);

  const out = join(w.dir, 'bundle');
  const bundled = await cli(['workload', 'bundle', '--group', 'web-vms', '--config', w.configFile, '--ca', w.east.caDir, '--controller', 'gw.example:15443', '--via-gateway', '--address', '192.0.2.5', '--out', out, '--ttl', '10m', '--json']);
  t.is(bundled.code, 0, bundled.output);
  const result = JSON.parse(bundled.output.slice(bundled.output.indexOf('{'))) as { endpointId: string; identity: string; tokenExpiresAt: string };
  t.is(result.endpointId, 'web-vms-192.0.2.5');
  t.is(result.identity, spiffe('default', 'web-vm'));
  t.is(statSync(join(out, 'join-token')).mode & 0o777, 0o600);

  const badTtl = await cli(['workload', 'bundle', '--group', 'web-vms', '--config', w.configFile, '--ca', w.east.caDir, '--controller', 'gw:15443', '--address', '192.0.2.5', '--out', out, '--ttl', '30d']);
  t.is(badTtl.code, 2);
  t.regex(badTtl.output, /^causeway: error: --ttl must be 1s to 7d/m);
  const missing = await cli(['workload', 'bundle', '--group', 'nope', '--config', w.configFile, '--ca', w.east.caDir, '--controller', 'gw:15443', '--address', '192.0.2.5', '--out', out]);
  t.is(missing.code, 1);
  t.regex(missing.output, /workload group nope in namespace default does not exist.*\[CW_WORKLOAD_GROUP_NOT_FOUND\]/);
  writeFileSync(groupFile, 'name: web-vms\nnamespace: default\nservice: web\nserviceAccount: web-vm\nports: []\n');
  const invalid = await cli(['workload', 'group', 'apply', '-f', groupFile, '--config', w.configFile]);
  t.is(invalid.code, 2);
  t.regex(invalid.output, /group.yaml: ports:/);

  const deleted = await cli(['workload', 'group', 'delete', 'web-vms', '--config', w.configFile]);
  t.is(deleted.code, 0, deleted.output);
  const again = await cli(['workload', 'group', 'delete', 'web-vms', '--config', w.configFile]);
  t.is(again.code, 2);
});

test('bundle --format pkcs12: a generated keystore password (0600) the install script installs for the sidecar user, and sidecar.pkcs12 beside the DNS-on-53 tuning', async (t) => {
  const w = await world(t);
  await w.groups.apply(webGroup());
  const group = await w.groups.get('default', 'web-vms');
  const bundle = await writeWorkloadBundle({ cluster: w.cluster, group, ca: w.east.ca, controllerAddress: '10.0.0.1:15012', viaGateway: false, address: '10.0.0.9', outDir: join(w.dir, 'p12'), dnsPort: 53, pkcs12: true });
  t.is(bundle.pkcs12File, '/var/lib/causeway/workload.p12');
  t.is(statSync(bundle.files.pkcs12Password!).mode & 0o777, 0o600);
  t.regex(readFileSync(bundle.files.pkcs12Password!, 'utf8'), /^[A-Za-z0-9_-]{32}\n$/);
  const config = parseSidecarConfig(parseYaml(readFileSync(bundle.files.config, 'utf8')), bundle.files.config);
  t.deepEqual(config.sidecar.pkcs12, { passwordFile: '/etc/causeway/workload.p12.password' });
  t.is(config.sidecar.dns.outside, 'refuse', 'both tunings in one sidecar: section');
  t.true(readFileSync(bundle.files.install, 'utf8').split('\n').includes('install -m 0600 -o causeway -g causeway workload.p12.password /etc/causeway/workload.p12.password'));
  const plain = await writeWorkloadBundle({ cluster: w.cluster, group, ca: w.east.ca, controllerAddress: '10.0.0.1:15012', viaGateway: false, address: '10.0.0.9', outDir: join(w.dir, 'pem') });
  t.is(plain.files.pkcs12Password, undefined);
  t.is(parseSidecarConfig(parseYaml(readFileSync(plain.files.config, 'utf8')), plain.files.config).sidecar.pkcs12, undefined);
});
