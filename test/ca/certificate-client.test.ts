import test from 'ava';
import { once } from 'node:events';
import { createPrivateKey } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { Registry } from 'prom-client';
import { CaError, CaErrorCodes, WorkloadCertificateClient, mintJoinToken, type CurrentCertificate } from '../../ca/index.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { createRootLogger } from '../../mesh/index.js';
import { openssl, tempDir } from './helpers.js';
import { counterValue, startSigningService } from './signing-service.js';

const reviews = 'spiffe://causeway.internal/ns/default/sa/reviews';
const ratings = 'spiffe://causeway.internal/ns/default/sa/ratings';

async function setup(t: Parameters<typeof startSigningService>[0]) {
  const dir = await tempDir(t);
  const pki = await createMeshPki(dir);
  const east = await pki.cluster('east');
  const service = await startSigningService(t, east.ca);
  return { dir, pki, east, service };
}

test('bootstraps with a join token, persists key 0600, exposes expiry gauges; a restart reuses the saved certificate', async (t) => {
  const { dir, east, service } = await setup(t);
  const stateDir = join(dir, 'state');
  const registry = new Registry();
  const client = new WorkloadCertificateClient({ endpoint: service.endpoint, spiffeId: reviews, joinToken: mintJoinToken(east.ca, { spiffeId: reviews }), stateDir, registry });
  t.teardown(() => client.close());
  const seen: CurrentCertificate[] = [];
  client.on('certificate', (c) => seen.push(c));
  const first = await client.start();
  t.is(first.spiffeId, reviews);
  // Renewal is due at half-life ± 10 % jitter of the 24 h certificate.
  const issuedAt = first.notBefore.getTime() + 60_000;
  const fraction = ((client.nextRenewalAt()?.getTime() ?? 0) - issuedAt) / (first.notAfter.getTime() - issuedAt);
  t.true(fraction >= 0.399 && fraction <= 0.601, `renewal at ${fraction} of the lifetime`);
  t.is(seen.length, 1);
  t.is((await stat(join(stateDir, 'key.pem'))).mode & 0o777, 0o600);
  const text = await registry.metrics();
  t.regex(text, new RegExp(`causeway_workload_certificate_expiry_timestamp_seconds\\{spiffe_id="${reviews}"\\} ${Math.floor(first.notAfter.getTime() / 1000)}`));
  const remaining = Number(/causeway_workload_certificate_remaining_seconds\{[^}]*\} ([\d.]+)/.exec(text)?.[1]);
  t.true(remaining > 86_000 && remaining <= 86_400);
  client.close();

  // A restart without a token: the saved certificate is still valid, so no request is made.
  const restarted = new WorkloadCertificateClient({ endpoint: service.endpoint, spiffeId: reviews, stateDir });
  t.teardown(() => restarted.close());
  const loaded = await restarted.start();
  t.is(loaded.certChainPem, first.certChainPem);
  t.is(await counterValue(service.handle, 'issued', 'join_token'), 1);
  // Renewal now goes over mTLS with the saved certificate.
  const renewed = await restarted.renewNow();
  t.not(renewed.privateKeyPem, first.privateKeyPem, 'every renewal uses a fresh key');
  t.is(await counterValue(service.handle, 'issued', 'certificate'), 1);
});

test('renews on its own schedule and hot-swaps a live TLS server without dropping an open connection', async (t) => {
  const { east, service } = await setup(t);
  // Renew early in a 60 s life: the renewal is due within seconds, yet the current certificate is far from expiry even on a loaded machine.
  const client = new WorkloadCertificateClient({ endpoint: service.endpoint, spiffeId: reviews, joinToken: mintJoinToken(east.ca, { spiffeId: reviews }), ttlSeconds: 60, renewAtFraction: 0.05, jitterFraction: 0.01 });
  t.teardown(() => client.close());
  const first = await client.start();
  const server = tls.createServer({ ...first.tlsOptions, requestCert: true }, (socket) => socket.pipe(socket));
  client.on('certificate', (c) => server.setSecureContext({ ...c.tlsOptions, requestCert: true } as tls.SecureContextOptions));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const peer = await pkiClient(t, east);
  const port = (server.address() as AddressInfo).port;
  const connect = () => new Promise<tls.TLSSocket>((resolve, reject) => {
    const socket = tls.connect({ ...peer, host: '127.0.0.1', port, checkServerIdentity: () => undefined }, () => resolve(socket));
    socket.once('error', reject);
  });
  const early = await connect();
  t.teardown(() => early.destroy());
  const serialBefore = early.getPeerX509Certificate()?.serialNumber;
  const [second] = (await once(client, 'certificate')) as [CurrentCertificate];
  t.true(second.notAfter > first.notAfter);
  t.is(await counterValue(service.handle, 'issued', 'certificate'), 1, 'the renewal authenticated with the current certificate');
  const late = await connect();
  t.teardown(() => late.destroy());
  t.not(late.getPeerX509Certificate()?.serialNumber, serialBefore, 'new handshakes get the new certificate');
  early.write('still here');
  const [echo] = (await once(early, 'data')) as [Buffer];
  t.is(echo.toString(), 'still here', 'the connection opened before the swap still works');
});

async function pkiClient(_t: unknown, east: Awaited<ReturnType<Awaited<ReturnType<typeof createMeshPki>>['cluster']>>) {
  const svid = await east.ca.issue({ spiffeId: ratings });
  return { key: svid.privateKeyPem, cert: svid.certChainPem, ca: svid.trustBundlePem };
}

test('a bad token fails start() with the server’s reason; no token, no certificate', async (t) => {
  const { pki, service } = await setup(t);
  const west = await pki.cluster('west');
  const client = new WorkloadCertificateClient({ endpoint: service.endpoint, spiffeId: reviews, joinToken: mintJoinToken(west.ca, { spiffeId: reviews }) });
  t.teardown(() => client.close());
  const error = await t.throwsAsync(client.start());
  t.true(error instanceof CaError);
  t.is((error as CaError).code, CaErrorCodes.tokenSignatureInvalid);

  const noToken = new WorkloadCertificateClient({ endpoint: service.endpoint, spiffeId: reviews });
  t.teardown(() => noToken.close());
  await t.throwsAsync(noToken.start(), { code: CaErrorCodes.unauthenticated, message: /mint one with `causeway ca token`/ });
});

test('a failed renewal is reported as an event (not thrown) and retried with backoff', async (t) => {
  const { east, service } = await setup(t);
  const client = new WorkloadCertificateClient({ endpoint: service.endpoint, spiffeId: reviews, joinToken: mintJoinToken(east.ca, { spiffeId: reviews }), ttlSeconds: 60, renewAtFraction: 0.05, jitterFraction: 0.01, retryDelayMs: { min: 100, max: 200 }, logger: createRootLogger({ level: 'silent' }) });
  t.teardown(() => client.close());
  await client.start();
  service.server.forceShutdown();
  const failures: CaError[] = [];
  client.on('renewal-failed', (e) => failures.push(e));
  // The client's renewal timers are unref'd (they never keep a process alive); with the
  // server gone nothing else may be pending in this worker, so hold the loop open here.
  const keepAlive = setInterval(() => undefined, 1000);
  t.teardown(() => clearInterval(keepAlive));
  while (failures.length < 2) await once(client, 'renewal-failed');
  t.is(failures[0]?.code, CaErrorCodes.fetchFailed);
  t.true(failures[0]?.retryable);
});

test('with pkcs12, stateDir also holds workload.p12 (0600) for a JVM app, rewritten with the new key on every renewal', async (t) => {
  const { dir, east, service } = await setup(t);
  const stateDir = join(dir, 'state');
  const passwordFile = join(dir, 'p12-password');
  await writeFile(passwordFile, 's3cret-pass\n', { mode: 0o600 });
  const client = new WorkloadCertificateClient({ endpoint: service.endpoint, spiffeId: reviews, joinToken: mintJoinToken(east.ca, { spiffeId: reviews }), stateDir, pkcs12: { passwordFile } });
  t.teardown(() => client.close());
  const first = await client.start();
  const p12 = join(stateDir, 'workload.p12');
  t.is((await stat(p12)).mode & 0o777, 0o600);
  const keyIn = async () => {
    const out = await openssl(['pkcs12', '-in', p12, '-passin', `file:${passwordFile}`, '-nodes', '-nocerts']);
    t.is(out.code, 0, out.stderr);
    return createPrivateKey(out.stdout).export({ type: 'pkcs8', format: 'pem' }).toString();
  };
  const normalise = (pem: string) => createPrivateKey(pem).export({ type: 'pkcs8', format: 'pem' }).toString();
  t.is(await keyIn(), normalise(first.privateKeyPem), 'the keystore holds the key the sidecar serves with');
  const renewed = await client.renewNow();
  t.is(await keyIn(), normalise(renewed.privateKeyPem), 'and the renewed one after a renewal');
});
