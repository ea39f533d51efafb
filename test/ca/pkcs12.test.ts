import { readFile, stat } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import test from 'ava';
import { serviceSni } from '../../mesh/index.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { startEchoApp, startTestSidecar } from '../proxy/helpers/mesh.js';
import { causeway, openssl, run, tempDir } from './helpers.js';

// PKCS#12 keystores for JVM and .NET workloads, checked by the readers those workloads
// use: OpenSSL, the JDK's keytool, and a real Java TLS client doing mTLS with a sidecar.

const JAVA_CLIENT = fileURLToPath(new URL('./java/MtlsClient.java', import.meta.url));

test.serial('ca issue --format pkcs12: a 0600 keystore with key, chain and trusted roots that OpenSSL and keytool read', async (t) => {
  const dir = await tempDir(t, 'cw-p12-');
  const pki = await createMeshPki(join(dir, 'pki'));
  const east = await pki.cluster('east');
  const out = join(dir, 'java');
  const issued = await causeway('ca', 'issue', '--ca', east.caDir, '--spiffe-id', 'spiffe://causeway.internal/ns/default/sa/java', '--out', out, '--format', 'pkcs12');
  t.is(issued.code, 0, issued.stderr);
  t.regex(issued.stdout, /PKCS#12 keystore .*workload\.p12 \(mode 0600/);
  const p12 = join(out, 'workload.p12');
  const passwordFile = join(out, 'workload.p12.password');
  t.is((await stat(p12)).mode & 0o777, 0o600);
  t.is((await stat(passwordFile)).mode & 0o777, 0o600);
  t.regex((await readFile(passwordFile, 'utf8')).trim(), /^[A-Za-z0-9_-]{32}$/);

  const info = await openssl(['pkcs12', '-info', '-in', p12, '-passin', `file:${passwordFile}`, '-nodes']);
  t.is(info.code, 0, info.stderr);
  t.regex(info.stderr, /MAC: sha256/);
  t.regex(info.stderr, /Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC/);
  t.is((info.stdout.match(/BEGIN CERTIFICATE/g) ?? []).length, 3, 'leaf, intermediate and root');
  t.regex(info.stdout, /BEGIN PRIVATE KEY/);
  t.regex(info.stdout, /friendlyName: workload/);

  const wrong = await openssl(['pkcs12', '-info', '-in', p12, '-passin', 'pass:not-it', '-noout']);
  t.not(wrong.code, 0, 'a wrong password fails the MAC check');

  const list = await run('keytool', ['-list', '-v', '-keystore', p12, '-storetype', 'PKCS12', '-storepass:file', passwordFile], { timeoutMs: 60_000 });
  t.is(list.code, 0, list.stderr + list.stdout);
  t.regex(list.stdout, /Alias name: workload\s+Creation date: .*\s+Entry type: PrivateKeyEntry\s+Certificate chain length: 3/);
  t.regex(list.stdout, /Alias name: causeway-root-0\s+Creation date: .*\s+Entry type: trustedCertEntry/);
  t.regex(list.stdout, /URIName: spiffe:\/\/causeway\.internal\/ns\/default\/sa\/java/);
});

test.serial('a Java TLS client using the keystore completes mTLS to a Causeway sidecar, which sees its SPIFFE ID', async (t) => {
  const dir = await tempDir(t, 'cw-p12-');
  const pki = await createMeshPki(join(dir, 'pki'));
  const east = await pki.cluster('east');
  const out = join(dir, 'java');
  const passwordFile = join(dir, 'password');
  await import('node:fs/promises').then((fs) => fs.writeFile(passwordFile, 'correct horse battery\n', { mode: 0o600 }));
  const issued = await causeway('ca', 'issue', '--ca', east.caDir, '--spiffe-id', 'spiffe://causeway.internal/ns/billing/sa/ledger', '--out', out, '--format', 'pkcs12', '--password-file', passwordFile);
  t.is(issued.code, 0, issued.stderr);

  const app = await startEchoApp('reviews-east');
  t.teardown(() => app.close());
  // The sidecar's certificate from the same CA the keystore came from (the proxy helpers' PKI shape over ca/'s).
  const sidecarPki = {
    trustDomain: pki.trustDomain,
    rootPem: pki.trustBundlePem,
    issue: async (cluster: string, spiffeId: string) => {
      const w = await pki.workload(cluster, spiffeId);
      return { key: w.privateKeyPem, chain: [...w.certChain], spiffeId: w.spiffeId };
    },
    signCsr: () => Promise.reject(new Error('not used here')),
  };
  const server = await startTestSidecar({ cluster: 'east', service: 'reviews', pki: sidecarPki, ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] });
  t.teardown(() => server.close());
  const sni = serviceSni({ port: 9080, subset: undefined, service: 'reviews', namespace: 'default', cluster: 'east', trustDomain: 'causeway.internal' } as never);
  const java = await run('java', [JAVA_CLIENT, join(out, 'workload.p12'), passwordFile, '127.0.0.1', String(server.sidecar.inboundPort), sni, '/from-java'], { timeoutMs: 120_000 });
  t.is(java.code, 0, java.stderr + java.stdout);
  t.regex(java.stdout, /^protocol TLSv1\.3$/m);
  t.regex(java.stdout, /^HTTP\/1\.1 200 /m);
  const body = JSON.parse(java.stdout.slice(java.stdout.indexOf('{'))) as { peer: string; path: string };
  t.is(body.peer, 'spiffe://causeway.internal/ns/billing/sa/ledger', 'the server saw the identity from the keystore');
  t.is(body.path, '/from-java');
});

test.serial('ca issue: --password-file needs --format pkcs12; a bad --format or an empty password file is a usage error', async (t) => {
  const dir = await tempDir(t, 'cw-p12-');
  const pki = await createMeshPki(join(dir, 'pki'));
  const east = await pki.cluster('east');
  const empty = join(dir, 'empty');
  await import('node:fs/promises').then((fs) => fs.writeFile(empty, '\n'));
  const id = 'spiffe://causeway.internal/ns/default/sa/java';
  const badFormat = await causeway('ca', 'issue', '--ca', east.caDir, '--spiffe-id', id, '--out', join(dir, 'a'), '--format', 'jks');
  t.is(badFormat.code, 2);
  t.regex(badFormat.stderr, /--format must be pem or pkcs12 \(got "jks"\)/);
  const noFormat = await causeway('ca', 'issue', '--ca', east.caDir, '--spiffe-id', id, '--out', join(dir, 'b'), '--password-file', empty);
  t.is(noFormat.code, 2);
  t.regex(noFormat.stderr, /--password-file goes with --format pkcs12/);
  const emptyPassword = await causeway('ca', 'issue', '--ca', east.caDir, '--spiffe-id', id, '--out', join(dir, 'c'), '--format', 'pkcs12', '--password-file', empty);
  t.is(emptyPassword.code, 2);
  t.regex(emptyPassword.stderr, /the first line is empty/);
  await t.throwsAsync(stat(join(dir, 'c', 'key.pem')), undefined, 'nothing written on a usage error');
});
