import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CaErrorCodes, createCsr, createIntermediateCa, createRootCa, generatePrivateKey, inspectCertificates, loadIntermediateCa, verifyCertificateChain } from '../../ca/index.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { freePort } from '../../testkit/ports.js';
import { startProcess } from '../../testkit/processes.js';
import { mutualTlsHandshake, openssl, tempDir } from './helpers.js';

const TD = 'causeway.internal';
const reviews = `spiffe://${TD}/ns/default/sa/reviews`;
const ratings = `spiffe://${TD}/ns/default/sa/ratings`;

test('root and intermediate carry the CA profile; key files are mode 0600', async (t) => {
  const pki = await createMeshPki(await tempDir(t));
  const east = await pki.cluster('east');
  const text = (await openssl(['x509', '-in', east.certFile, '-noout', '-text'])).stdout;
  t.regex(text, /CA:TRUE, pathlen:0/);
  t.regex(text, /Name Constraints: critical\s+Permitted:\s+URI:causeway\.internal\n/);
  t.regex(text, /Certificate Sign, CRL Sign/);
  t.regex(text, /Issuer: O = Causeway, OU = causeway.internal, CN = Causeway root CA/);
  const rootText = (await openssl(['x509', '-in', join(pki.dir, 'root', 'root-cert.pem'), '-noout', '-text'])).stdout;
  t.regex(rootText, /CA:TRUE/);
  const days = (new Date(pki.root.certificate.validTo).getTime() - Date.now()) / 86_400_000;
  t.true(days > 3640 && days < 3652, `root lives 10 years (got ${days} days)`);
  for (const file of [join(pki.dir, 'root', 'root-key.pem'), east.keyFile]) t.is((await stat(file)).mode & 0o777, 0o600, file);
  const chain = (await openssl(['crl2pkcs7', '-nocrl', '-certfile', east.certChainFile])).stdout;
  t.truthy(chain, 'cert-chain.pem parses');
});

test('a workload certificate is a SPIFFE X.509-SVID', async (t) => {
  const pki = await createMeshPki(await tempDir(t));
  const svid = await pki.workload('east', 'default/reviews');
  t.is(svid.spiffeId, reviews);
  const text = (await openssl(['x509', '-in', svid.certFile, '-noout', '-text'])).stdout;
  t.regex(text, /Subject Alternative Name: critical\s+URI:spiffe:\/\/causeway\.internal\/ns\/default\/sa\/reviews\n/);
  t.regex(text, /CA:FALSE/);
  t.regex(text, /Key Usage: critical\s+Digital Signature\n/);
  t.regex(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
  t.regex(text, /ASN1 OID: prime256v1/);
  const cert = new X509Certificate(svid.certificatePem);
  t.is(cert.subjectAltName, `URI:${reviews}`);
  const ttlSeconds = (svid.notAfter.getTime() - Date.now()) / 1000;
  t.true(ttlSeconds > 86_300 && ttlSeconds <= 86_400, `default TTL 24 h (got ${ttlSeconds} s)`);
  t.is((await stat(svid.keyFile)).mode & 0o777, 0o600);
  t.is(svid.certChain.length, 2, 'chain is leaf → intermediate; roots travel as the bundle');
});

test('an RSA workload key also gets keyEncipherment', async (t) => {
  const pki = await createMeshPki(await tempDir(t));
  const svid = await pki.workload('east', 'default/legacy', { keyType: 'rsa-2048' });
  const text = (await openssl(['x509', '-in', svid.certFile, '-noout', '-text'])).stdout;
  t.regex(text, /Key Usage: critical\s+Digital Signature, Key Encipherment\n/);
});

test('openssl verify accepts every chain, from east and from west', async (t) => {
  const pki = await createMeshPki(await tempDir(t));
  for (const cluster of ['east', 'west']) {
    const svid = await pki.workload(cluster, 'default/reviews');
    const result = await openssl(['verify', '-CAfile', pki.trustBundleFile, '-untrusted', (await pki.cluster(cluster)).certFile, '-purpose', 'sslclient', svid.certFile]);
    t.is(result.code, 0, result.stderr + result.stdout);
    t.regex(result.stdout, /: OK/);
    t.is(verifyCertificateChain(svid.certChainPem, pki.trustBundlePem).spiffeId, reviews);
  }
});

test('node:tls: a leaf from east and one from west verify each other and read the peer SPIFFE ID', async (t) => {
  const pki = await createMeshPki(await tempDir(t));
  const east = await pki.workload('east', 'default/reviews');
  const west = await pki.workload('west', 'default/ratings');
  const seen = await mutualTlsHandshake(west.tls, east.tls);
  t.is(seen.error, undefined);
  t.is(seen.serverSaw, `URI:${reviews}`);
  t.is(seen.clientSaw, `URI:${ratings}`);
});

test('openssl s_server/s_client: east and west complete mTLS with verification return code 0', async (t) => {
  const pki = await createMeshPki(await tempDir(t));
  const east = await pki.workload('east', 'default/reviews');
  const west = await pki.workload('west', 'default/ratings');
  const port = await freePort();
  // -rev: the server echoes lines reversed and never reads its own stdin (which is closed here).
  const server = startProcess('openssl', ['s_server', '-rev', '-accept', `127.0.0.1:${port}`, '-cert', west.certFile, '-cert_chain', west.certChainFile, '-key', west.keyFile, '-CAfile', pki.trustBundleFile, '-Verify', '4', '-verify_return_error', '-naccept', '1']);
  t.teardown(() => server.kill());
  await server.waitForOutput('ACCEPT');
  const client = await openssl(
    ['s_client', '-connect', `127.0.0.1:${port}`, '-cert', east.certFile, '-cert_chain', east.certChainFile, '-key', east.keyFile, '-CAfile', pki.trustBundleFile, '-verify_return_error', '-showcerts'],
    { input: 'ping\n' },
  );
  t.regex(client.stdout, /Verify return code: 0 \(ok\)/, client.stderr);
  const serverLeaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(client.stdout)?.[0] ?? '';
  t.is(new X509Certificate(serverLeaf).subjectAltName, `URI:${ratings}`, 'the client reads the server SPIFFE ID');
  await server.waitForOutput('CONNECTION ESTABLISHED');
  t.regex(server.output(), /depth=1 O = Causeway, OU = east[^\n]*\nverify return:1\ndepth=0 \nverify return:1/);
  t.regex(server.output(), /Verification: OK/);
});

test('the name constraint: a leaf naming a SPIFFE ID outside the trust domain is rejected', async (t) => {
  const dir = await tempDir(t);
  const pki = await createMeshPki(dir);
  const east = await pki.cluster('east');
  // The CA refuses to sign it...
  await t.throwsAsync(east.ca.issue({ spiffeId: 'spiffe://evil.example/ns/default/sa/reviews' }), { code: CaErrorCodes.identityInvalid });
  // ...so a stolen intermediate key signing one by hand (openssl) must still be caught by verifiers.
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', join(dir, 'evil-key.pem')]);
  await writeFile(join(dir, 'evil.ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=critical,URI:spiffe://evil.example/ns/default/sa/reviews\n');
  await openssl(['req', '-new', '-key', join(dir, 'evil-key.pem'), '-subj', '/', '-out', join(dir, 'evil.csr')]);
  const signed = await openssl(['x509', '-req', '-in', join(dir, 'evil.csr'), '-CA', east.certFile, '-CAkey', east.keyFile, '-set_serial', '7', '-days', '1', '-extfile', join(dir, 'evil.ext'), '-out', join(dir, 'evil-cert.pem')]);
  t.is(signed.code, 0, signed.stderr);
  const verify = await openssl(['verify', '-CAfile', pki.trustBundleFile, '-untrusted', east.certFile, join(dir, 'evil-cert.pem')]);
  t.not(verify.code, 0);
  t.regex(verify.stdout + verify.stderr, /permitted subtree violation/);
  const evil = { key: await readFile(join(dir, 'evil-key.pem'), 'utf8'), cert: (await readFile(join(dir, 'evil-cert.pem'), 'utf8')) + east.ca.certificatePem, ca: pki.trustBundlePem };
  const honest = await pki.workload('west', 'default/ratings');
  const seen = await mutualTlsHandshake(honest.tls, evil);
  t.truthy(seen.error, 'the handshake fails');
  t.is(seen.serverSaw, undefined);
});

test('signCsr: one URI SAN in the trust domain, the caller’s own identity, an allowed key, a bounded TTL', async (t) => {
  const root = await createRootCa({ trustDomain: TD });
  const ca = await createIntermediateCa(root, { cluster: 'east' });
  const key = await generatePrivateKey();
  const ok = ca.signCsr(createCsr(key, reviews), { expectedSpiffeId: reviews, ttlSeconds: 3600 });
  t.is(ok.spiffeId, reviews);
  t.is(Math.round((ok.notAfter.getTime() - ok.notBefore.getTime()) / 1000), 3600 + 60);
  t.throws(() => ca.signCsr(createCsr(key, ratings), { expectedSpiffeId: reviews }), { code: CaErrorCodes.identityMismatch });
  t.throws(() => ca.signCsr(createCsr(key, 'spiffe://other.example/ns/default/sa/reviews')), { code: CaErrorCodes.identityInvalid });
  t.throws(() => ca.signCsr(createCsr(key, reviews), { ttlSeconds: 10 * 86_400, maxTtlSeconds: 86_400, aboveMaximum: 'refuse' }), { code: CaErrorCodes.ttlAboveMaximum });
  const capped = ca.signCsr(createCsr(key, reviews), { ttlSeconds: 10 * 86_400, maxTtlSeconds: 86_400 });
  t.is(Math.round((capped.notAfter.getTime() - capped.notBefore.getTime()) / 1000), 86_400 + 60);
  const rsaKey = await generatePrivateKey('rsa-2048');
  t.throws(() => ca.signCsr(createCsr(rsaKey, reviews), { allowedKeyTypes: ['ec-p256'] }), { code: CaErrorCodes.keyNotAllowed });
  t.throws(() => ca.signCsr('garbage'), { code: CaErrorCodes.csrMalformed });
});

test('an RSA-3072 root and intermediate (ca init --key-type rsa-3072) issue chains openssl and node:tls accept', async (t) => {
  const pki = await createMeshPki(await tempDir(t), { keyType: 'rsa-3072' });
  const east = await pki.cluster('east');
  const text = (await openssl(['x509', '-in', east.certFile, '-noout', '-text'])).stdout;
  t.regex(text, /Signature Algorithm: sha256WithRSAEncryption/);
  t.regex(text, /Public-Key: \(3072 bit\)/);
  const a = await pki.workload('east', 'default/reviews', { commonName: 'reviews-etcd-user' });
  const b = await pki.workload('west', 'default/ratings', { keyType: 'rsa-2048' });
  t.is((await openssl(['verify', '-CAfile', pki.trustBundleFile, '-untrusted', east.certFile, a.certFile])).code, 0);
  t.regex((await openssl(['x509', '-in', a.certFile, '-noout', '-subject', '-ext', 'subjectAltName'])).stdout, /subject=CN = reviews-etcd-user\nX509v3 Subject Alternative Name: \n\s+URI:spiffe/);
  const seen = await mutualTlsHandshake(a.tls, b.tls);
  t.is(seen.error, undefined);
  t.is(seen.serverSaw, `URI:${ratings}`);
});

test('loading a caDir whose trust bundle lacks its root fails at once, naming the files; inspect verifies CA chains too', async (t) => {
  const pki = await createMeshPki(await tempDir(t));
  const east = await pki.cluster('east');
  t.deepEqual(inspectCertificates(await readFile(east.certChainFile, 'utf8'), pki.trustBundlePem).verification?.ok, true);
  const other = await createRootCa({ trustDomain: TD });
  await writeFile(east.trustBundleFile, other.certificatePem);
  const error = await t.throwsAsync(loadIntermediateCa(east.caDir), { code: CaErrorCodes.caInvalid });
  t.regex(error?.message ?? '', /cert-chain\.pem does not chain to a root in .*trust-bundle\.pem.*keep the old root/);
});
