import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { CaFiles, buildTrustBundle, createIntermediateCa, createRootCa, mintJoinToken, verifyCertificateChain, writeIntermediateCa, type IntermediateCa, type RootCa } from '../../ca/index.js';
import { CatalogAdmin, Controller } from '../../controller/index.js';
import { Etcd3Store } from '../../store/index.js';
import { parseConfig } from '../../mesh/index.js';
import { parseSidecarConfig, runSidecar, type certificatePart, type Sidecar } from '../../proxy/index.js';
import { startEtcd } from '../../testkit/etcd.js';
import { waitFor } from '../../testkit/ports.js';
import { spiffe, startEchoApp } from './helpers/mesh.js';

const TD = 'causeway.internal';
const SNI = '9080.all.reviews.default.east.cw1.causeway.internal';

/** An HTTP request over mTLS to the sidecar's inbound port with `client`'s certificate: the status line, or why it was refused. */
async function callInbound(sidecar: Sidecar, client: { key: string; cert: string }, root: RootCa): Promise<string> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: sidecar.inboundPort, servername: SNI, ...client, ca: root.certificatePem, checkServerIdentity: () => undefined });
    socket.once('secureConnect', () => socket.write(`GET /healthz HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n`));
    socket.once('data', (data: Buffer) => {
      resolve(data.toString().split('\r\n')[0] ?? '');
      socket.destroy();
    });
    socket.once('error', (error) => resolve(`refused: ${error.message}`));
    socket.once('end', () => resolve('refused: closed'));
  });
}

const chainsTo = (chainPem: string, root: RootCa) => {
  try {
    verifyCertificateChain(chainPem, root.certificatePem);
    return true;
  } catch {
    return false;
  }
};

/**
 * A sidecar with a 24 h certificate (no renewal of its own during the test) through a root
 * rotation done only by writing its controller's caDir: it trusts the new root from the
 * snapshot before it renews, renews from the new-root controller although its own bundle
 * never held the new root, and at the end refuses an old-root caller.
 */
test('a sidecar follows a root rotation of its controller: snapshot roots first, a renewal onto the new root, the old root refused at the end', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-proxy-rotation-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const caDir = join(dir, 'east');
  const oldRoot = await createRootCa({ trustDomain: TD });
  const oldCa = await createIntermediateCa(oldRoot, { cluster: 'east' });
  await writeIntermediateCa(oldCa, caDir);
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const controller = new Controller({
    config: parseConfig('cluster', {
      cluster: { name: 'east', locality: { region: 'eu', zone: 'eu-1' } },
      etcd: { endpoints: etcd.endpoints },
      controller: { host: '127.0.0.1', grpcPort: 0, caDir, endpointLeaseTtlSeconds: 3, pushDebounceMs: 20 },
    }),
    observability: false,
    caReload: { settleMs: 100, pollIntervalMs: 500 },
  });
  t.teardown(() => controller.stop());
  await controller.start();
  const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => store.close());
  await new CatalogAdmin(store).applyService({ name: 'reviews', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'reviews')] });
  const app = await startEchoApp('reviews');
  t.teardown(() => app.close());
  writeFileSync(join(dir, 'token'), mintJoinToken(oldCa, { spiffeId: spiffe('default', 'reviews') }), { mode: 0o600 });
  writeFileSync(join(dir, 'bootstrap-bundle.pem'), oldRoot.certificatePem);
  const sidecar = await runSidecar(
    parseSidecarConfig({
      cluster: 'east',
      locality: { region: 'eu', zone: 'eu-1' },
      namespace: 'default',
      service: 'reviews',
      serviceAccount: 'reviews',
      ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }],
      controller: { address: `127.0.0.1:${controller.grpcPort}` },
      advertiseAddress: '127.0.0.1',
      inboundPort: 0,
      dnsPort: 0,
      stateDir: join(dir, 'state'),
      joinTokenFile: join(dir, 'token'),
      trustBundleFile: join(dir, 'bootstrap-bundle.pem'),
      probe: { tcp: { port: app.port } },
      observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
      sidecar: { inboundHost: '127.0.0.1', outboundRange: '127.200.3.0/24', dns: { outside: 'refuse' } },
    }),
    { endpointId: 'reviews-rotation' },
  );
  t.teardown(() => sidecar.close());
  const okReloads = async () => (await controller.metrics.caReloads.get()).values.find((v) => v.labels.result === 'ok')?.value;
  const certificates = (sidecar.part('certificates') as ReturnType<typeof certificatePart>).client()!;
  const caller = async (ca: IntermediateCa) => {
    const cert = await ca.issue({ spiffeId: spiffe('default', 'productpage') });
    return { key: cert.privateKeyPem, cert: cert.certChainPem };
  };
  const oldCaller = await caller(oldCa);
  t.is(await callInbound(sidecar, oldCaller, oldRoot), 'HTTP/1.1 200 OK');

  // Both roots in the caDir: the sidecar trusts the new root from its snapshot, before any renewal.
  const newRoot = await createRootCa({ trustDomain: TD });
  const both = buildTrustBundle([oldRoot.certificatePem, newRoot.certificatePem]);
  writeFileSync(join(caDir, CaFiles.trustBundle), both);
  await waitFor(() => sidecar.identity.trustBundle().length === 2, { timeoutMs: 20_000, what: 'the new root announced in a snapshot' });
  t.is(certificates.current()!.trustBundlePem, buildTrustBundle([oldRoot.certificatePem]), 'no renewal yet');
  const newCa = await createIntermediateCa(newRoot, { cluster: 'east', trustBundlePem: both });
  t.is(await callInbound(sidecar, await caller(newCa), oldRoot), 'HTTP/1.1 200 OK', 'a new-root caller is accepted before the sidecar renewed');

  // The new intermediate: the controller serves a new-root certificate; the sidecar, whose own bundle is still the old root alone, renews from it.
  await writeIntermediateCa(newCa, caDir);
  await waitFor(async () => (await okReloads()) === 2, { timeoutMs: 20_000, what: 'the new intermediate installed' });
  const renewed = await certificates.renewNow();
  t.true(chainsTo(renewed.certChainPem, newRoot));
  t.false(chainsTo(renewed.certChainPem, oldRoot));

  // The new root alone: after the snapshot and a renewal the sidecar trusts only it, and refuses an old-root caller.
  writeFileSync(join(caDir, CaFiles.trustBundle), newRoot.certificatePem);
  await waitFor(async () => (await okReloads()) === 3, { timeoutMs: 20_000, what: 'the old root removed' });
  // Until its next renewal the sidecar keeps the roots its certificate came with.
  await certificates.renewNow();
  await waitFor(() => sidecar.identity.trustBundle().length === 1 && sidecar.identity.trustBundle()[0] === buildTrustBundle([newRoot.certificatePem]), { timeoutMs: 20_000, what: 'the new root alone trusted' });
  t.regex(await callInbound(sidecar, oldCaller, newRoot), /^refused/);
  t.is(await callInbound(sidecar, await caller(newCa), newRoot), 'HTTP/1.1 200 OK');
});
