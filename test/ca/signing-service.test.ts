import test from 'ava';
import { writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Server, status, type ServiceError } from '@grpc/grpc-js';
import { DEFAULT_CONTROLLER_SERVER_NAME, createRootLogger } from '../../mesh/index.js';
import { CertificateServiceClient } from '../../api-client/index.js';
import { CaError, CaErrorCodes, addCertificateService, ERROR_CODE_METADATA_KEY, signingServiceChannelCredentials, createCsr, generatePrivateKey, mintJoinToken, requestCertificate, verifyCertificateChain, type SigningCredentials } from '../../ca/index.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { openssl, tempDir } from './helpers.js';
import { counterValue, startSigningService } from './signing-service.js';

const TD = 'causeway.internal';
const reviews = `spiffe://${TD}/ns/default/sa/reviews`;
const ratings = `spiffe://${TD}/ns/default/sa/ratings`;

async function setup(t: Parameters<typeof startSigningService>[0], options: Parameters<typeof startSigningService>[2] = {}) {
  const dir = await tempDir(t);
  const pki = await createMeshPki(dir);
  const east = await pki.cluster('east');
  const service = await startSigningService(t, east.ca, options);
  return { dir, pki, east, service };
}

/** Calls the service and returns the refusal (a CaError) and its gRPC status. */
async function refusal(endpoint: Parameters<typeof requestCertificate>[0], auth: SigningCredentials, csr: string, validitySeconds = 0): Promise<{ code: string; grpc: number; message: string }> {
  const error = await requestCertificate(endpoint, auth, { csr, validitySeconds }).then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof CaError)) throw new Error(`expected a refusal, got ${String(error)}`);
  const cause = error.cause as { code: number };
  return { code: error.code, grpc: cause.code, message: error.message };
}

test('first certificate with a join token; openssl verifies the returned chain against the returned bundle', async (t) => {
  const { dir, east, service } = await setup(t);
  const key = await generatePrivateKey();
  const response = await requestCertificate(service.endpoint, { joinToken: mintJoinToken(east.ca, { spiffeId: reviews }) }, { csr: createCsr(key, reviews), validitySeconds: 0 });
  t.is(response.certChain.length, 2);
  t.is(response.trustBundle.length, 1);
  await writeFile(join(dir, 'leaf.pem'), response.certChain[0] as string);
  await writeFile(join(dir, 'intermediate.pem'), response.certChain[1] as string);
  await writeFile(join(dir, 'bundle.pem'), response.trustBundle.join(''));
  const verify = await openssl(['verify', '-CAfile', join(dir, 'bundle.pem'), '-untrusted', join(dir, 'intermediate.pem'), join(dir, 'leaf.pem')]);
  t.is(verify.code, 0, verify.stderr);
  t.is(verifyCertificateChain(response.certChain.join(''), response.trustBundle.join('')).spiffeId, reviews);
  t.is(await counterValue(service.handle, 'issued', 'join_token'), 1);
});

test('renewal over mTLS with the current certificate, also one issued by another cluster (grpc-js getAuthContext)', async (t) => {
  const { pki, service } = await setup(t);
  for (const cluster of ['east', 'west']) {
    const current = await pki.workload(cluster, 'default/reviews');
    const response = await requestCertificate(service.endpoint, { privateKeyPem: current.privateKeyPem, certChainPem: current.certChainPem }, { csr: createCsr(await generatePrivateKey(), reviews), validitySeconds: 3600 });
    t.is(verifyCertificateChain(response.certChain.join(''), pki.trustBundlePem).spiffeId, reviews);
  }
  t.is(await counterValue(service.handle, 'issued', 'certificate'), 2);
});

test('refused: no credentials at all (UNAUTHENTICATED), and an empty bearer token', async (t) => {
  const { service } = await setup(t);
  const csr = createCsr(await generatePrivateKey(), reviews);
  const client = new CertificateServiceClient(service.endpoint.address, signingServiceChannelCredentials(service.endpoint), { 'grpc.ssl_target_name_override': DEFAULT_CONTROLLER_SERVER_NAME });
  t.teardown(() => client.close());
  const error = await new Promise<ServiceError>((resolve) => (client as unknown as { createCertificate: (r: unknown, cb: (e: ServiceError) => void) => void }).createCertificate({ csr, validitySeconds: 0 }, resolve));
  t.is(error.code, status.UNAUTHENTICATED);
  t.is(error.metadata.get(ERROR_CODE_METADATA_KEY)[0], CaErrorCodes.unauthenticated);
  t.regex(error.details, /send a join token .* or connect with your current workload certificate/);
  const empty = await refusal(service.endpoint, { joinToken: ' ' }, csr);
  t.true(([CaErrorCodes.tokenMalformed, CaErrorCodes.unauthenticated] as string[]).includes(empty.code));
  t.is(await counterValue(service.handle, 'refusals', 'unauthenticated') + (await counterValue(service.handle, 'refusals', 'token_malformed')), 2);
});

test('refused: a CSR for another identity than the token names, and a token replayed for a different identity', async (t) => {
  const { east, service } = await setup(t);
  const token = mintJoinToken(east.ca, { spiffeId: reviews });
  await requestCertificate(service.endpoint, { joinToken: token }, { csr: createCsr(await generatePrivateKey(), reviews), validitySeconds: 0 });
  const r = await refusal(service.endpoint, { joinToken: token }, createCsr(await generatePrivateKey(), ratings));
  t.is(r.code, CaErrorCodes.identityMismatch);
  t.is(r.grpc, status.PERMISSION_DENIED);
  t.regex(r.message, /asks for spiffe:\/\/causeway\.internal\/ns\/default\/sa\/ratings but the caller authenticated as .*reviews/);
  t.is(await counterValue(service.handle, 'refusals', 'identity_mismatch'), 1);
});

test('refused: a CSR for another identity than the client certificate names', async (t) => {
  const { pki, service } = await setup(t);
  const current = await pki.workload('east', 'default/reviews');
  const r = await refusal(service.endpoint, { privateKeyPem: current.privateKeyPem, certChainPem: current.certChainPem }, createCsr(await generatePrivateKey(), ratings));
  t.is(r.code, CaErrorCodes.identityMismatch);
  t.is(r.grpc, status.PERMISSION_DENIED);
});

test('refused: an expired token, a wrong-audience token, a token from another cluster’s CA, a garbled token', async (t) => {
  const { pki, east, service } = await setup(t);
  const csr = createCsr(await generatePrivateKey(), reviews);
  const expired = await refusal(service.endpoint, { joinToken: mintJoinToken(east.ca, { spiffeId: reviews, ttlSeconds: 3600, now: new Date(Date.now() - 2 * 3600_000) }) }, csr);
  t.is(expired.code, CaErrorCodes.tokenExpired);
  t.is(expired.grpc, status.UNAUTHENTICATED);
  // Signed with east's key but addressed to west's signing service.
  const wrongAudience = await refusal(service.endpoint, { joinToken: mintJoinToken({ ...east.ca, cluster: 'west' }, { spiffeId: reviews }) }, csr);
  t.is(wrongAudience.code, CaErrorCodes.tokenAudienceMismatch);
  t.is(wrongAudience.grpc, status.UNAUTHENTICATED);
  const west = await pki.cluster('west');
  const foreign = await refusal(service.endpoint, { joinToken: mintJoinToken(west.ca, { spiffeId: reviews }) }, csr);
  t.is(foreign.code, CaErrorCodes.tokenSignatureInvalid);
  const good = mintJoinToken(east.ca, { spiffeId: reviews });
  const [h, p, s] = good.split('.') as [string, string, string];
  const forgedClaims = Buffer.from(Buffer.from(p, 'base64url').toString().replace('reviews', 'ratings')).toString('base64url');
  const forged = await refusal(service.endpoint, { joinToken: `${h}.${forgedClaims}.${s}` }, createCsr(await generatePrivateKey(), ratings));
  t.is(forged.code, CaErrorCodes.tokenSignatureInvalid, 'changing the identity in a token breaks its signature');
  const garbled = await refusal(service.endpoint, { joinToken: 'not-a-token' }, csr);
  t.is(garbled.code, CaErrorCodes.tokenMalformed);
  for (const reason of ['token_expired', 'token_audience_mismatch', 'token_malformed']) t.is(await counterValue(service.handle, 'refusals', reason), 1, reason);
  t.is(await counterValue(service.handle, 'refusals', 'token_signature_invalid'), 2);
});

test('refused: a CSR whose self-signature does not verify', async (t) => {
  const { east, service } = await setup(t);
  const pem = createCsr(await generatePrivateKey(), reviews);
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 1] = (der[der.length - 1] as number) ^ 0x01;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  const r = await refusal(service.endpoint, { joinToken: mintJoinToken(east.ca, { spiffeId: reviews }) }, tampered);
  t.is(r.code, CaErrorCodes.csrSignatureInvalid);
  t.is(r.grpc, status.INVALID_ARGUMENT);
  t.is(await counterValue(service.handle, 'refusals', 'csr_signature_invalid'), 1);
});

test('refused: garbage and oversized PEM', async (t) => {
  const { east, service } = await setup(t);
  const auth = { joinToken: mintJoinToken(east.ca, { spiffeId: reviews }) };
  for (const garbage of ['', 'hello', '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n', '-----BEGIN CERTIFICATE REQUEST-----\nMIIBAgMEBQ==\n-----END CERTIFICATE REQUEST-----\n']) {
    const r = await refusal(service.endpoint, auth, garbage);
    t.is(r.code, CaErrorCodes.csrMalformed, JSON.stringify(garbage));
    t.is(r.grpc, status.INVALID_ARGUMENT);
  }
  const huge = `-----BEGIN CERTIFICATE REQUEST-----\n${'A'.repeat(64 * 1024)}\n-----END CERTIFICATE REQUEST-----\n`;
  const r = await refusal(service.endpoint, auth, huge);
  t.is(r.code, CaErrorCodes.csrTooLarge);
  t.is(await counterValue(service.handle, 'refusals', 'csr_malformed'), 4);
  t.is(await counterValue(service.handle, 'refusals', 'csr_too_large'), 1);
});

test('refused: a disallowed key (RSA when only P-256 is allowed; a P-521 CSR made by openssl)', async (t) => {
  const { dir, east, service } = await setup(t, { allowedKeyTypes: ['ec-p256'] });
  const auth = { joinToken: mintJoinToken(east.ca, { spiffeId: reviews }) };
  const rsa = await refusal(service.endpoint, auth, createCsr(await generatePrivateKey('rsa-2048'), reviews));
  t.is(rsa.code, CaErrorCodes.keyNotAllowed);
  t.regex(rsa.message, /RSA 2048.*use one of ec-p256/);
  await openssl(['ecparam', '-name', 'secp521r1', '-genkey', '-noout', '-out', join(dir, 'p521.pem')]);
  await openssl(['req', '-new', '-key', join(dir, 'p521.pem'), '-subj', '/', '-addext', `subjectAltName=URI:${reviews}`, '-out', join(dir, 'p521.csr')]);
  const p521 = await refusal(service.endpoint, auth, await readFile(join(dir, 'p521.csr'), 'utf8'));
  t.is(p521.code, CaErrorCodes.keyNotAllowed);
  t.is(p521.grpc, status.INVALID_ARGUMENT);
  t.is(await counterValue(service.handle, 'refusals', 'key_not_allowed'), 2);
});

test('a CSR made by openssl (not by us) is signed when it is in order', async (t) => {
  const { dir, east, service } = await setup(t);
  await openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', join(dir, 'k.pem')]);
  await openssl(['req', '-new', '-key', join(dir, 'k.pem'), '-subj', '/', '-addext', `subjectAltName=URI:${reviews}`, '-out', join(dir, 'r.csr')]);
  const response = await requestCertificate(service.endpoint, { joinToken: mintJoinToken(east.ca, { spiffeId: reviews }) }, { csr: await readFile(join(dir, 'r.csr'), 'utf8'), validitySeconds: 0 });
  t.is(verifyCertificateChain(response.certChain.join(''), response.trustBundle.join('')).spiffeId, reviews);
});

test('TTL above the maximum: refused with OUT_OF_RANGE when configured so, capped otherwise', async (t) => {
  const refusing = await setup(t, { maxTtlSeconds: 3600, aboveMaximum: 'refuse' });
  const auth = { joinToken: mintJoinToken(refusing.east.ca, { spiffeId: reviews }) };
  const r = await refusal(refusing.service.endpoint, auth, createCsr(await generatePrivateKey(), reviews), 7200);
  t.is(r.code, CaErrorCodes.ttlAboveMaximum);
  t.is(r.grpc, status.OUT_OF_RANGE);
  t.is(await counterValue(refusing.service.handle, 'refusals', 'ttl_above_maximum'), 1);
  const capping = await setup(t, { maxTtlSeconds: 3600 });
  const response = await requestCertificate(capping.service.endpoint, { joinToken: mintJoinToken(capping.east.ca, { spiffeId: reviews }) }, { csr: createCsr(await generatePrivateKey(), reviews), validitySeconds: 7200 });
  const leaf = verifyCertificateChain(response.certChain.join(''), capping.pki.trustBundlePem).leaf;
  const lifetime = (new Date(leaf.validTo).getTime() - Date.now()) / 1000;
  t.true(lifetime <= 3600 && lifetime > 3500, `capped to 1 h (got ${lifetime} s)`);
  const negative = await refusal(capping.service.endpoint, { joinToken: mintJoinToken(capping.east.ca, { spiffeId: reviews }) }, createCsr(await generatePrivateKey(), reviews), -5);
  t.is(negative.code, CaErrorCodes.ttlInvalid);
});

test('refused: an expired client certificate, one from a foreign CA, and one whose connection outlived it', async (t) => {
  const { east, service } = await setup(t);
  const csr = createCsr(await generatePrivateKey(), reviews);
  const expired = await east.ca.issue({ spiffeId: reviews, ttlSeconds: 3600, now: new Date(Date.now() - 86_400_000) });
  const r = await refusal(service.endpoint, { privateKeyPem: expired.privateKeyPem, certChainPem: expired.certChainPem }, csr);
  t.is(r.code, CaErrorCodes.unauthenticated, 'the TLS layer did not verify it, so the service sees no certificate');
  t.is(r.grpc, status.UNAUTHENTICATED);
  const foreignPki = await createMeshPki(await tempDir(t));
  const foreign = await foreignPki.workload('east', 'default/reviews');
  const f = await refusal(service.endpoint, { privateKeyPem: foreign.privateKeyPem, certChainPem: foreign.certChainPem }, csr);
  t.is(f.code, CaErrorCodes.unauthenticated);
  // The per-call check: a clock past the certificate's expiry (a long-lived connection).
  const later = await startSigningService(t, east.ca, { now: () => new Date(Date.now() + 2 * 86_400_000) });
  const current = await east.ca.issue({ spiffeId: reviews });
  const stale = await refusal(later.endpoint, { privateKeyPem: current.privateKeyPem, certChainPem: current.certChainPem }, csr);
  t.is(stale.code, CaErrorCodes.peerCertificateInvalid);
  t.is(await counterValue(later.handle, 'refusals', 'peer_certificate_invalid'), 1);
  t.is(await counterValue(service.handle, 'refusals', 'unauthenticated'), 2);
});

test('the refusal counter is exported in Prometheus text with every reason', async (t) => {
  const { service } = await setup(t);
  const text = await service.registry.metrics();
  for (const reason of ['identity_mismatch', 'token_expired', 'csr_signature_invalid', 'key_not_allowed', 'ttl_above_maximum']) {
    t.regex(text, new RegExp(`causeway_ca_refusals_total\\{reason="${reason}"\\} 0`));
  }
});

test("the intermediate's notAfter is exported, so that an alert can see it coming", async (t) => {
  const { east, service } = await setup(t);
  const text = await service.registry.metrics();
  const notAfterSeconds = Date.parse(east.ca.certificate.validTo) / 1000;
  t.true(text.includes(`causeway_ca_intermediate_expiry_timestamp_seconds{cluster="${east.ca.cluster}"} ${notAfterSeconds}`));
});

test('every decision is one structured log line: issued with the identity, refused with the reason and the caller', async (t) => {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => (lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>), done()) });
  const log = createRootLogger({ level: 'info', destination: sink });
  const { east, service } = await setup(t, { logger: log });
  const token = mintJoinToken(east.ca, { spiffeId: reviews });
  await requestCertificate(service.endpoint, { joinToken: token }, { csr: createCsr(await generatePrivateKey(), reviews), validitySeconds: 0 });
  await refusal(service.endpoint, { joinToken: token }, createCsr(await generatePrivateKey(), ratings));
  const issued = lines.find((l) => l.msg === 'issued a workload certificate');
  t.like(issued, { spiffeId: reviews, authentication: 'join_token', level: 30 });
  const refused = lines.find((l) => typeof l.msg === 'string' && l.msg.startsWith('refused a certificate request'));
  t.like(refused, { reason: 'identity_mismatch', caller: reviews });
});

test('service options are checked once, with one exact message per bad value', (t) => {
  const server = new Server();
  const ca = {} as never;
  t.throws(() => addCertificateService(server, { ca, maxTtlSeconds: -1 }), { message: 'maxTtlSeconds must be a positive whole number of seconds (got -1)' });
  t.throws(() => addCertificateService(server, { ca, defaultTtlSeconds: 7200, maxTtlSeconds: 3600 }), { message: 'defaultTtlSeconds (7200) must not exceed maxTtlSeconds (3600)' });
  t.throws(() => addCertificateService(server, { ca, allowedKeyTypes: [] }), { code: CaErrorCodes.keyNotAllowed });
});
