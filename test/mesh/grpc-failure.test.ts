import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import test from 'ava';
import { CaError, createCsr, requestCertificate } from '../../ca/index.js';
import { DiscoveryClient } from '../../api-client/index.js';
import { controllerIdentity, grpcFailure, withoutGrpcNoise } from '../../mesh/index.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { freePort } from '../../testkit/ports.js';

/** Words of grpc-js's insides that must not reach a user. */
const NOISE = /Resolution note|\d+ UNAVAILABLE|No connection established|Last error/;

/** A real UNAVAILABLE error from grpc-js: a call to a port nobody listens on. */
async function unavailable(port: number): Promise<ServiceError> {
  const client = new Client(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    return await new Promise<ServiceError>((resolve) =>
      client.makeUnaryRequest('/x.Y/Z', (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), new Metadata(), { deadline: Date.now() + 5000 }, (e) => resolve(e!)),
    );
  } finally {
    client.close();
  }
}

test('regression: grpc-js\'s "Resolution note:" and status prefix are gone; a refused connection reads "connection refused"', async (t) => {
  const port = await freePort();
  const error = await unavailable(port);
  t.regex(error.message, /Resolution note/, 'the raw grpc-js message carries the note this test is about');
  t.deepEqual(grpcFailure(error), { unreachable: true, reason: 'connection refused' });
  t.is(withoutGrpcNoise('14 UNAVAILABLE: Name resolution failed for target dns:nowhere. Resolution note: '), 'Name resolution failed for target dns:nowhere');
  t.is(withoutGrpcNoise('7 PERMISSION_DENIED: etcdserver: permission denied'), 'etcdserver: permission denied');
});

test('regression: the signing service unreachable is one sentence naming its address, without gRPC\'s text', async (t) => {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'cw-grpc-failure-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const pki = await createMeshPki(dir);
  const id = 'spiffe://causeway.internal/ns/default/sa/reviews';
  const csr = createCsr(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey, id);
  const error = await t.throwsAsync(
    requestCertificate({ address: `127.0.0.1:${port}`, trustBundlePem: pki.trustBundlePem, controllerSpiffeId: controllerIdentity('causeway.internal') }, { joinToken: 'x' }, { csr, validitySeconds: 0 }),
    { instanceOf: CaError },
  );
  t.is(error.message, `the signing service at 127.0.0.1:${port} is unreachable (connection refused); check that the controller runs there and the controller address in the config`);
  t.true(error.retryable);
});

test('regression: a discovery stream that cannot connect reports one sentence naming the controller, without gRPC\'s text', async (t) => {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'cw-grpc-failure-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const pki = await createMeshPki(dir);
  const w = await pki.workload('east', 'default/productpage');
  const client = new DiscoveryClient({
    address: `127.0.0.1:${port}`,
    tls: { key: w.privateKeyPem, certChain: w.certChainPem, trustBundle: w.trustBundlePem },
    expectedServerId: controllerIdentity('causeway.internal'),
    hello: { nodeId: 'a', cluster: 'east', region: 'eu', zone: 'eu-1' },
    backoff: { initialMs: 50, maxMs: 100 },
  });
  t.teardown(() => client.close());
  const disconnected = new Promise<Error>((resolve) => client.once('disconnected', resolve));
  client.start();
  const error = await disconnected;
  t.is(error.message, `the controller at 127.0.0.1:${port} is unreachable (connection refused); check that it runs and the controller address in the config`);
  t.notRegex(error.message, NOISE);
  t.is((error as { code?: string }).code, 'CW_CTRL_UNREACHABLE');
});
