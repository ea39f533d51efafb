import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createCsr, generatePrivateKey, type KeyType } from '../../ca/index.js';
import { ReferenceLeafIssuer } from '../../ca/x509-reference.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { openssl, tempDir } from './helpers.js';

const reviews = 'spiffe://causeway.internal/ns/default/sa/reviews';
/** openssl's full reading of a certificate, minus the two things that must differ: the random serial and the signature bytes. */
async function meaning(file: string): Promise<string> {
  const text = (await openssl(['x509', '-in', file, '-noout', '-text'])).stdout;
  return text.replace(/(Serial Number:)\s*\n\s*[0-9a-f:]+/, '$1 <random>').replace(/(Signature Value:)[\s\S]*$/, '$1 <signature>');
}

for (const keyType of ['ec-p256', 'rsa-2048'] as KeyType[]) {
  test(`the DER-template leaf means the same as the @peculiar/x509 leaf (${keyType} workload key), and openssl verifies both`, async (t) => {
    const dir = await tempDir(t);
    const pki = await createMeshPki(dir);
    const east = await pki.cluster('east');
    const csr = createCsr(await generatePrivateKey(keyType), reviews);
    const now = new Date();
    const fast = east.ca.signCsr(csr, { expectedSpiffeId: reviews, ttlSeconds: 3600, now });
    const reference = await new ReferenceLeafIssuer(east.ca).signCsr(csr, 3600, now);
    await writeFile(join(dir, 'fast.pem'), fast.certificatePem);
    await writeFile(join(dir, 'reference.pem'), reference);
    for (const file of ['fast.pem', 'reference.pem']) {
      const verify = await openssl(['verify', '-CAfile', pki.trustBundleFile, '-untrusted', east.certFile, '-purpose', 'sslserver', join(dir, file)]);
      t.is(verify.code, 0, `${file}: ${verify.stdout}${verify.stderr}`);
    }
    const fastText = await meaning(join(dir, 'fast.pem'));
    t.is(fastText, await meaning(join(dir, 'reference.pem')), 'identical field by field, extension by extension, in the same order');
    t.regex(fastText, /Subject Alternative Name: critical\s+URI:spiffe:\/\/causeway\.internal\/ns\/default\/sa\/reviews/);
    // And the whole certificate parses in openssl's strict ASN.1 dump.
    t.is((await openssl(['asn1parse', '-in', join(dir, 'fast.pem'), '-strictpem'])).code, 0);
  });
}
