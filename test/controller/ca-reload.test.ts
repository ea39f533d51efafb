import test, { type ExecutionContext } from 'ava';
import { connect } from 'node:tls';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiscoveryClient } from '../../api-client/index.js';
import {
  CaErrorCodes,
  CaFiles,
  WorkloadCertificateClient,
  buildTrustBundle,
  createIntermediateCa,
  createRootCa,
  mintJoinToken,
  privateKeyPem,
  verifyCertificateChain,
  writeIntermediateCa,
  type IntermediateCa,
  type RootCa,
} from '../../ca/index.js';
import { Controller } from '../../controller/index.js';
import { controllerIdentity, parseConfig } from '../../mesh/index.js';
import { startEtcd } from '../../testkit/etcd.js';
import { waitFor } from '../../testkit/ports.js';

const TD = 'causeway.internal';
const reviews = `spiffe://${TD}/ns/default/sa/reviews`;

const reloads = async (controller: Controller, result: 'ok' | 'refused') => (await controller.metrics.caReloads.get()).values.find((v) => v.labels.result === result)?.value ?? 0;

/** Whether the controller's gRPC port serves a certificate that verifies against `root` alone. */
function servedChainVerifies(port: number, root: RootCa): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, ca: root.certificatePem, ALPNProtocols: ['h2'], rejectUnauthorized: false, checkServerIdentity: () => undefined });
    socket.once('secureConnect', () => {
      resolve(socket.authorized);
      socket.destroy();
    });
    socket.once('error', () => resolve(false));
  });
}

const chainsTo = (chainPem: string, root: RootCa): boolean => {
  try {
    verifyCertificateChain(chainPem, root.certificatePem);
    return true;
  } catch {
    return false;
  }
};

/** A controller on a real etcd whose intermediate is `caDir` on disk (written first), watched with short delays. */
async function controllerOnCaDir(t: ExecutionContext, ca: IntermediateCa): Promise<{ controller: Controller; caDir: string; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'cw-ca-reload-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const caDir = join(dir, ca.cluster);
  await writeIntermediateCa(ca, caDir);
  const etcd = await startEtcd({ name: ca.cluster });
  t.teardown(() => etcd.destroy());
  const config = parseConfig('cluster', {
    cluster: { name: ca.cluster, locality: { region: 'eu', zone: 'eu-1' } },
    trustDomain: TD,
    etcd: { endpoints: etcd.endpoints },
    controller: { host: '127.0.0.1', grpcPort: 0, caDir, pushDebounceMs: 20 },
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
  });
  const controller = new Controller({ config, caReload: { settleMs: 100, pollIntervalMs: 500 } });
  t.teardown(() => controller.stop());
  await controller.start();
  return { controller, caDir, dir };
}

/**
 * The whole rotation against one running controller, only by writing its caDir: the bundle
 * (both roots), a half-copied intermediate (refused, the old one keeps signing), the new
 * intermediate, then the new root alone. Real etcd, real files, real TLS; no restart.
 */
test('a running controller follows its caDir through a root rotation and refuses a half-written intermediate', async (t) => {
  const oldRoot = await createRootCa({ trustDomain: TD });
  const oldCa = await createIntermediateCa(oldRoot, { cluster: 'east' });
  const { controller, caDir, dir } = await controllerOnCaDir(t, oldCa);
  const endpoint = { address: `127.0.0.1:${controller.grpcPort}`, trustBundlePem: oldRoot.certificatePem };

  const workload = new WorkloadCertificateClient({ endpoint, spiffeId: reviews, joinToken: mintJoinToken(oldCa, { spiffeId: reviews }), stateDir: join(dir, 'reviews') });
  t.teardown(() => workload.close());
  t.true(chainsTo((await workload.start()).certChainPem, oldRoot));
  const node = await oldCa.issue({ spiffeId: reviews });
  const discovery = new DiscoveryClient({
    address: endpoint.address,
    tls: { key: node.privateKeyPem, certChain: node.certChainPem, trustBundle: node.trustBundlePem },
    expectedServerId: controllerIdentity(TD),
    hello: { nodeId: 'reviews-1', cluster: 'east', region: 'eu', zone: 'eu-1' },
    backoff: { initialMs: 50, maxMs: 300 },
  });
  t.teardown(() => discovery.close());
  discovery.start();
  await waitFor(() => discovery.snapshot?.trustBundle.length === 1, { what: 'the first snapshot, with the old root' });

  // Two workloads that will not renew until the new intermediate is in: one verifies the
  // signer with the roots its snapshots announced too (as a sidecar does), one without.
  const lagging = (additionalRoots?: () => readonly string[]) => {
    const client = new WorkloadCertificateClient({ endpoint, spiffeId: reviews, joinToken: mintJoinToken(oldCa, { spiffeId: reviews }), ...(additionalRoots ? { additionalRoots } : {}) });
    t.teardown(() => client.close());
    return client;
  };
  const withSnapshotRoots = lagging(() => discovery.snapshot?.trustBundle ?? []);
  const bundleOnly = lagging();
  await Promise.all([withSnapshotRoots.start(), bundleOnly.start()]);

  // (1, 2) A new root; the bundle of both is copied over trust-bundle.pem.
  const newRoot = await createRootCa({ trustDomain: TD });
  const both = buildTrustBundle([oldRoot.certificatePem, newRoot.certificatePem]);
  await writeFile(join(caDir, CaFiles.trustBundle), both);
  await waitFor(async () => (await reloads(controller, 'ok')) === 1, { timeoutMs: 20_000, what: 'the bundle reloaded' });
  t.is((await controller.metrics.trustBundleRoots.get()).values[0]?.value, 2);
  t.is((await workload.renewNow()).trustBundlePem, both, 'a renewal brings both roots');
  await waitFor(() => discovery.snapshot?.trustBundle.length === 2, { timeoutMs: 20_000, what: 'a snapshot announcing both roots' });

  // A half-copied intermediate (the new certificate beside the old key): refused, and the old intermediate keeps signing.
  const newCa = await createIntermediateCa(newRoot, { cluster: 'east', trustBundlePem: both });
  await writeFile(join(caDir, CaFiles.caCert), newCa.certificatePem);
  await waitFor(async () => (await reloads(controller, 'refused')) === 1, { timeoutMs: 20_000, what: 'the mismatched pair refused' });
  t.true(chainsTo((await workload.renewNow()).certChainPem, oldRoot), 'still issued from the old intermediate');
  t.false(chainsTo(workload.current()!.certChainPem, newRoot));

  // New key and certificate, but the old chain still there: refused too (it would verify one intermediate and sign with another).
  await writeFile(join(caDir, CaFiles.caKey), privateKeyPem(newCa.privateKey));
  await waitFor(async () => (await reloads(controller, 'refused')) === 2, { timeoutMs: 20_000, what: 'the old chain beside the new pair refused' });
  t.true(chainsTo((await workload.renewNow()).certChainPem, oldRoot), 'still issued from the old intermediate');

  // (3) The whole new intermediate: the signer and the controller's own certificate move to the new root.
  await writeIntermediateCa(newCa, caDir);
  await waitFor(async () => (await reloads(controller, 'ok')) === 2, { timeoutMs: 20_000, what: 'the new intermediate installed' });
  t.true(await servedChainVerifies(controller.grpcPort, newRoot), "the controller's own certificate chains to the new root");
  const renewed = await workload.renewNow();
  t.true(chainsTo(renewed.certChainPem, newRoot), 'a renewal over mTLS with the old-root certificate yields a new-root one');
  t.false(chainsTo(renewed.certChainPem, oldRoot));
  t.true(chainsTo((await withSnapshotRoots.renewNow()).certChainPem, newRoot), 'a workload still on the old bundle renews, verifying the signer with the announced roots');
  const unverified = await t.throwsAsync(bundleOnly.renewNow());
  t.regex(unverified?.message ?? '', /unable to get local issuer certificate/, 'without them it cannot verify the new-root signer');

  // (5) The new root alone: served in bundles and snapshots; an old-root certificate no longer authenticates.
  await writeFile(join(caDir, CaFiles.trustBundle), newRoot.certificatePem);
  await waitFor(async () => (await reloads(controller, 'ok')) === 3, { timeoutMs: 20_000, what: 'the old root removed' });
  t.is((await workload.renewNow()).trustBundlePem, buildTrustBundle([newRoot.certificatePem]));
  await waitFor(() => discovery.snapshot?.trustBundle.length === 1 && discovery.snapshot.trustBundle[0] === buildTrustBundle([newRoot.certificatePem]), { timeoutMs: 20_000, what: 'a snapshot with the new root alone' });
  t.false(await servedChainVerifies(controller.grpcPort, oldRoot));

  const oldStateDir = join(dir, 'old-root-workload');
  const stale = new WorkloadCertificateClient({ endpoint: { ...endpoint, trustBundlePem: both }, spiffeId: reviews, stateDir: oldStateDir });
  t.teardown(() => stale.close());
  // An old-root workload that missed the rotation: its saved certificate, and no join token.
  const oldLeaf = await oldCa.issue({ spiffeId: reviews });
  await mkdir(oldStateDir, { recursive: true });
  await writeFile(join(oldStateDir, CaFiles.workloadKey), oldLeaf.privateKeyPem);
  await writeFile(join(oldStateDir, CaFiles.certChain), oldLeaf.certChainPem);
  await writeFile(join(oldStateDir, CaFiles.trustBundle), both);
  await stale.start();
  const refused = await t.throwsAsync(stale.renewNow());
  t.is((refused as { code?: string }).code, CaErrorCodes.unauthenticated, 'an old-root client certificate is not verified any more');
});

test('a caDir for another cluster is refused and the running intermediate keeps signing', async (t) => {
  const root = await createRootCa({ trustDomain: TD });
  const eastCa = await createIntermediateCa(root, { cluster: 'east' });
  const { controller, caDir } = await controllerOnCaDir(t, eastCa);

  await writeIntermediateCa(await createIntermediateCa(root, { cluster: 'west' }), caDir);
  await waitFor(async () => (await reloads(controller, 'refused')) >= 1, { timeoutMs: 20_000, what: "west's intermediate refused" });
  const workload = new WorkloadCertificateClient({ endpoint: { address: `127.0.0.1:${controller.grpcPort}`, trustBundlePem: root.certificatePem }, spiffeId: reviews, joinToken: mintJoinToken(eastCa, { spiffeId: reviews }) });
  t.teardown(() => workload.close());
  const cert = await workload.start();
  t.regex(verifyCertificateChain(cert.certChainPem, root.certificatePem).path[1]?.subject ?? '', /OU=east/);
  t.is(await reloads(controller, 'ok'), 0);
});
