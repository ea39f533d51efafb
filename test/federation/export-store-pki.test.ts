import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import test from 'ava';
import { stringify } from 'yaml';
import { EtcdKeys, exportStoreSni } from '../../mesh/index.js';
import { connectFederationStore, EXPORT_STORE_PORT, FederationError, exportStoreTlsFlags, type ExportStorePki } from '../../federation/index.js';
import { issueClientCertificate } from '../../ca/index.js';
import { startEtcd } from '../../testkit/index.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { causeway, connectionTo } from './helpers.js';

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const SNI = exportStoreSni('east', 'causeway.internal');

function tempDir(t: import('ava').ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'cw-export-store-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function clusterConfig(dir: string): string {
  const file = join(dir, 'east.yaml');
  writeFileSync(file, stringify({ cluster: { name: 'east', locality: { region: 'r', zone: 'z' } }, etcd: { endpoints: ['http://127.0.0.1:2379'] } }));
  return file;
}

function opensslVerify(ca: string, purpose: string, cert: string): { ok: boolean; output: string } {
  try {
    return { ok: true, output: execFileSync('openssl', ['verify', '-CAfile', ca, '-purpose', purpose, cert], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }) };
  } catch (error) {
    return { ok: false, output: `${(error as { stdout?: string }).stdout ?? ''}${(error as { stderr?: string }).stderr ?? ''}` };
  }
}

test('federation init writes the export-store PKI: a leaf-only CA, a server certificate for the export-store SNI, a CN=root client certificate, keys 0600', async (t) => {
  const dir = tempDir(t);
  const out = join(dir, 'pki');
  const result = await causeway(['federation', 'init', '--config', clusterConfig(dir), '--out', out, '--days', '30', '--host', 'exports.east.example', '--host', '10.1.2.3', '--host', 'fd00::2:1']);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, new RegExp(`export store's server certificate for ${SNI.replace(/\./g, '\\.')}, localhost, 127\\.0\\.0\\.1, exports\\.east\\.example, 10\\.1\\.2\\.3`));
  t.regex(result.stdout, new RegExp(`--listen-client-urls https://0\\.0\\.0\\.0:${EXPORT_STORE_PORT} .*--client-cert-auth --trusted-ca-file \\S+export-store-ca\\.pem --cert-file \\S+export-store\\.pem --key-file \\S+export-store-key\\.pem`));
  t.regex(result.stdout, /auth enable/);

  for (const key of ['export-store-ca-key.pem', 'export-store-key.pem', 'controller-at-export-store-key.pem']) t.is(statSync(join(out, key)).mode & 0o777, 0o600, key);
  const ca = new X509Certificate(readFileSync(join(out, 'export-store-ca.pem')));
  t.true(ca.ca);
  t.regex(execFileSync('openssl', ['x509', '-in', join(out, 'export-store-ca.pem'), '-noout', '-text'], { encoding: 'utf8' }), /CA:TRUE, pathlen:0/);
  t.is(ca.subjectAltName, undefined, 'no SPIFFE name: not a mesh CA');

  const server = new X509Certificate(readFileSync(join(out, 'export-store.pem')));
  t.is(server.subjectAltName, `DNS:${SNI}, DNS:localhost, DNS:exports.east.example, IP Address:127.0.0.1, IP Address:10.1.2.3, IP Address:FD00:0:0:0:0:0:2:1`);
  t.deepEqual(server.keyUsage, [SERVER_AUTH]);
  t.false(server.ca);
  t.true(server.verify(ca.publicKey));
  t.true(opensslVerify(join(out, 'export-store-ca.pem'), 'sslserver', join(out, 'export-store.pem')).ok);

  const controller = new X509Certificate(readFileSync(join(out, 'controller-at-export-store.pem')));
  t.is(controller.subject, 'CN=root');
  t.deepEqual(controller.keyUsage, [CLIENT_AUTH]);
  t.true(opensslVerify(join(out, 'export-store-ca.pem'), 'sslclient', join(out, 'controller-at-export-store.pem')).ok);
  t.false(opensslVerify(join(out, 'export-store-ca.pem'), 'sslserver', join(out, 'controller-at-export-store.pem')).ok, 'the client certificate is no server');

  // Never over an existing key: a second init refuses and leaves every file as it was.
  const keyBefore = readFileSync(join(out, 'export-store-ca-key.pem'), 'utf8');
  const again = await causeway(['federation', 'init', '--config', clusterConfig(dir), '--out', out]);
  t.is(again.code, 1, again.stdout);
  t.regex(again.stderr, /already exist.*nothing was written.*CW_FEDERATION_FILES_EXIST/);
  t.is(readFileSync(join(out, 'export-store-ca-key.pem'), 'utf8'), keyBefore);

  const bad = await causeway(['federation', 'init', '--config', clusterConfig(dir), '--out', join(dir, 'other'), '--host', 'not_a_host']);
  t.not(bad.code, 0);
  t.regex(bad.stderr, /host "not_a_host" is neither an IP address nor a DNS name/);
});

test('an etcd run with the printed flags takes the controller\'s root certificate, names the export-store SNI, and refuses a mesh certificate (even one with CN=root)', async (t) => {
  const dir = tempDir(t);
  const result = await causeway(['federation', 'init', '--config', clusterConfig(dir), '--out', join(dir, 'pki'), '--days', '1', '--json']);
  t.is(result.code, 0, result.stderr);
  const pki = JSON.parse(result.stdout) as ExportStorePki & { etcd: string[] };
  const tls = exportStoreTlsFlags(pki);
  t.true(pki.etcd.join(' ').includes(tls.join(' ')), 'the printed command carries exactly these TLS flags');

  const starting = startEtcd({
    name: 'exports-east',
    tlsFiles: {
      trustedCaFile: pki.caCertFile,
      certFile: pki.serverCertFile,
      keyFile: pki.serverKeyFile,
      rootClient: { caFile: pki.caCertFile, certFile: pki.controllerCertFile, keyFile: pki.controllerKeyFile },
    },
  });
  t.teardown(async () => (await starting.catch(() => undefined))?.destroy());
  const etcd = await starting;
  etcd.enableAuth(); // as the controller's CN=root certificate

  const controller = connectFederationStore(connectionTo(etcd.endpoints, etcd.rootClient));
  t.teardown(() => controller.close());
  await controller.commit([{ put: EtcdKeys.exportedCluster, value: '{"written":"by the controller"}' }]);
  t.is((await controller.get(EtcdKeys.exportedCluster))?.value.toString(), '{"written":"by the controller"}');

  // The server certificate answers to the export-store SNI, verified as a peer would.
  const port = Number(new URL(etcd.clientUrl).port);
  const peerName = await new Promise<string>((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, servername: SNI, ca: readFileSync(pki.caCertFile), cert: readFileSync(pki.controllerCertFile), key: readFileSync(pki.controllerKeyFile), ALPNProtocols: ['h2'] }, () => {
      resolve(String(socket.getPeerCertificate().subject.CN));
      socket.destroy();
    });
    socket.on('error', reject);
  });
  t.is(peerName, SNI);

  // A certificate from the mesh CA is no login here, whatever its CN.
  const mesh = await createMeshPki(join(dir, 'mesh'));
  const meshRoot = await mesh.workload('east', 'default/controller', { commonName: 'root' });
  t.false(opensslVerify(pki.caCertFile, 'sslclient', meshRoot.certFile).ok);
  const intruder = connectFederationStore({ ...connectionTo(etcd.endpoints, { caFile: pki.caCertFile, certFile: meshRoot.certFile, keyFile: meshRoot.keyFile }), dialTimeoutMs: 2000 });
  t.teardown(() => intruder.close());
  await t.throwsAsync(intruder.list(EtcdKeys.exportsPrefix), { instanceOf: FederationError });
  await t.throwsAsync(intruder.commit([{ put: EtcdKeys.heartbeat, value: '{}' }]), { instanceOf: FederationError });
  t.is((await controller.get(EtcdKeys.heartbeat)), undefined, 'nothing was written by it');
});

test('regression: with default days, the CA from init outlives a year-long peer certificate from grant (both used to default to 365 days, and grant refused)', async (t) => {
  const dir = tempDir(t);
  const result = await causeway(['federation', 'init', '--config', clusterConfig(dir), '--out', join(dir, 'pki'), '--json']);
  t.is(result.code, 0, result.stderr);
  const pki = JSON.parse(result.stdout) as ExportStorePki;
  const caUntil = new Date(new X509Certificate(readFileSync(pki.caCertFile)).validTo).getTime();
  const serverUntil = new Date(new X509Certificate(readFileSync(pki.serverCertFile)).validTo).getTime();
  t.true(caUntil - serverUntil > 365 * 86_400_000, 'the CA outlives the server certificate by more than a year');
  const peer = await issueClientCertificate({
    caCertificatePem: readFileSync(pki.caCertFile, 'utf8'),
    caPrivateKeyPem: readFileSync(pki.caKeyFile, 'utf8'),
    commonName: 'causeway-peer-west',
    spiffeId: 'spiffe://causeway.internal/ns/causeway-system/sa/federation',
    days: 365,
  });
  t.true(peer.notAfter.getTime() < caUntil);
  const refused = await causeway(['federation', 'init', '--config', clusterConfig(dir), '--out', join(dir, 'other'), '--days', '30', '--ca-days', '30']);
  t.is(refused.code, 2, refused.stderr);
  t.regex(refused.stderr, /--ca-days must be a whole number above --days \(30\)/);
});
