// issueClientCertificate: a certificate from a CA outside the mesh (etcd's client CA, made
// here with the openssl CLI), and every wrong input refused with what to do.
import test from 'ava';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CaErrorCodes, issueClientCertificate } from '../../ca/index.js';
import { createTestPki } from '../../testkit/test-pki.js';
import { tempDir } from './helpers.js';

const ID = 'spiffe://causeway.internal/ns/causeway-system/sa/federation';

async function externalCa(t: Parameters<typeof tempDir>[0]) {
  const pki = createTestPki(join(await tempDir(t), 'pki'));
  return { pki, caCertificatePem: readFileSync(pki.caCertFile, 'utf8'), caPrivateKeyPem: readFileSync(join(pki.dir, 'ca-key.pem'), 'utf8') };
}

test('issues a P-256 key and a leaf with the CN, the URI SAN and client auth, signed by the external CA', async (t) => {
  const { caCertificatePem, caPrivateKeyPem } = await externalCa(t);
  const issued = await issueClientCertificate({ caCertificatePem, caPrivateKeyPem, commonName: 'causeway-peer-west', spiffeId: ID, days: 1 });
  const cert = new X509Certificate(issued.certificatePem);
  t.is(cert.subject, 'CN=causeway-peer-west');
  t.is(cert.subjectAltName, `URI:${ID}`);
  t.true(cert.verify(new X509Certificate(caCertificatePem).publicKey));
  t.true(cert.checkPrivateKey(createPrivateKey(issued.privateKeyPem)));
  t.false(cert.ca);
  t.true(Math.abs(Date.parse(cert.validTo) - issued.notAfter.getTime()) < 1000);
});

test('refuses a certificate that is not a CA, a key of another CA, days past the CA or out of range, and a bad CN', async (t) => {
  const { pki, caCertificatePem, caPrivateKeyPem } = await externalCa(t);
  const base = { caCertificatePem, caPrivateKeyPem, commonName: 'causeway-peer-west', spiffeId: ID, days: 1 };
  const leaf = pki.issue('not-a-ca');
  await t.throwsAsync(issueClientCertificate({ ...base, caCertificatePem: readFileSync(leaf.certFile, 'utf8'), caPrivateKeyPem: readFileSync(leaf.keyFile, 'utf8') }), {
    code: CaErrorCodes.caInvalid,
    message: /is not a CA \(basicConstraints CA:TRUE\); pass the CA that signs etcd's client certificates/,
  });
  await t.throwsAsync(issueClientCertificate({ ...base, caPrivateKeyPem: readFileSync(leaf.keyFile, 'utf8') }), { code: CaErrorCodes.caInvalid, message: /key does not belong/ });
  await t.throwsAsync(issueClientCertificate({ ...base, days: 3 }), { code: CaErrorCodes.ttlAboveMaximum, message: /before the 3 days asked; pick at most 1 day or renew the CA/ });
  for (const days of [0, 1.5, 826]) await t.throwsAsync(issueClientCertificate({ ...base, days }), { code: CaErrorCodes.ttlInvalid });
  await t.throwsAsync(issueClientCertificate({ ...base, commonName: 'a/b' }), { code: CaErrorCodes.identityInvalid, message: /common name "a\/b"/ });
  await t.throwsAsync(issueClientCertificate({ ...base, caCertificatePem: 'nonsense' }), { code: CaErrorCodes.pemInvalid });
  await t.throwsAsync(issueClientCertificate({ ...base, caPrivateKeyPem: 'nonsense' }), { code: CaErrorCodes.pemInvalid });
});
