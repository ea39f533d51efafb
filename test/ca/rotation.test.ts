import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  WorkloadCertificateClient,
  buildTrustBundle,
  createIntermediateCa,
  createRootCa,
  mintJoinToken,
  loadIntermediateCa,
  verifyCertificateChain,
  writeIntermediateCa,
  type IntermediateCa,
  type RootCa,
} from '../../ca/index.js';
import { controllerIdentity } from '../../mesh/index.js';
import { mutualTlsHandshake, openssl, tempDir } from './helpers.js';
import { startSigningService } from './signing-service.js';

const TD = 'causeway.internal';
const reviews = `spiffe://${TD}/ns/default/sa/reviews`;
const ratings = `spiffe://${TD}/ns/default/sa/ratings`;

/**
 * The procedure of ca/README.md, end to end: (1) bundle old+new root, (2) distribute the
 * bundle (workloads pick it up on renewal), (3) new intermediates under the new root,
 * (4) workloads renew onto the new root, (5) remove the old root. Traffic between
 * workloads under the old root and under the new one is checked during the overlap.
 */
test('root rotation without downtime: old-root and new-root workloads interoperate during the overlap', async (t) => {
  const dir = await tempDir(t);
  const oldRoot = await createRootCa({ trustDomain: TD });
  let eastCa: IntermediateCa = await createIntermediateCa(oldRoot, { cluster: 'east' });
  const service = await startSigningService(t, eastCa, { ca: () => eastCa });

  const east = new WorkloadCertificateClient({ endpoint: service.endpoint, spiffeId: reviews, joinToken: mintJoinToken(eastCa, { spiffeId: reviews }) });
  t.teardown(() => east.close());
  const beforeRotation = await east.start();
  t.is(verifyCertificateChain(beforeRotation.certChainPem, oldRoot.certificatePem).path.at(-1)?.fingerprint256, oldRoot.certificate.fingerprint256);

  // (1) A new root; the bundle holds both.
  const newRoot = await createRootCa({ trustDomain: TD });
  const overlap = buildTrustBundle([oldRoot.certificatePem, newRoot.certificatePem]);

  // (2) The controller serves the combined bundle (same old intermediate); a renewal brings it to the workload.
  eastCa = await rebundle(eastCa, oldRoot, overlap);
  const controllerOld = await eastCa.issue({ spiffeId: controllerIdentity(TD) });
  service.tls.update({ privateKeyPem: controllerOld.privateKeyPem, certChainPem: controllerOld.certChainPem, trustBundlePem: overlap });
  const withBundle = await east.renewNow();
  t.is(withBundle.trustBundlePem, overlap, 'the workload now trusts both roots');

  // (3) West gets its intermediate under the new root and its workload a new-root certificate.
  const westCa = await createIntermediateCa(newRoot, { cluster: 'west', trustBundlePem: overlap });
  const west = await westCa.issue({ spiffeId: ratings });

  // Overlap traffic: old-root east ↔ new-root west, both ways, node:tls and openssl verify.
  const oldSide = { key: withBundle.privateKeyPem, cert: withBundle.certChainPem, ca: withBundle.trustBundlePem };
  const newSide = { key: west.privateKeyPem, cert: west.certChainPem, ca: west.trustBundlePem };
  const eastServes = await mutualTlsHandshake(oldSide, newSide);
  t.is(eastServes.error, undefined);
  t.is(eastServes.serverSaw, `URI:${ratings}`);
  t.is(eastServes.clientSaw, `URI:${reviews}`);
  const westServes = await mutualTlsHandshake(newSide, oldSide);
  t.is(westServes.error, undefined);
  t.is(westServes.serverSaw, `URI:${reviews}`);
  await writeFile(join(dir, 'bundle.pem'), overlap);
  for (const [name, chain] of [['old', withBundle.certChain], ['new', west.certChain]] as const) {
    await writeFile(join(dir, `${name}-leaf.pem`), chain[0] as string);
    await writeFile(join(dir, `${name}-int.pem`), chain[1] as string);
    const verify = await openssl(['verify', '-CAfile', join(dir, 'bundle.pem'), '-untrusted', join(dir, `${name}-int.pem`), join(dir, `${name}-leaf.pem`)]);
    t.is(verify.code, 0, `${name}-root leaf: ${verify.stderr}`);
  }

  // (3, east) East's controller switches to an intermediate under the new root. The
  // workload renews over mTLS with its OLD-root certificate: the server trusts both roots.
  eastCa = await createIntermediateCa(newRoot, { cluster: 'east', trustBundlePem: overlap });
  const controllerNew = await eastCa.issue({ spiffeId: controllerIdentity(TD) });
  service.tls.update({ privateKeyPem: controllerNew.privateKeyPem, certChainPem: controllerNew.certChainPem, trustBundlePem: overlap });
  const afterRotation = await east.renewNow();
  t.is(verifyCertificateChain(afterRotation.certChainPem, newRoot.certificatePem).spiffeId, reviews, 'east now chains to the new root');

  // (5) The old root leaves the bundle: new-root workloads keep talking, old-root leaves are refused.
  const newOnly = buildTrustBundle([newRoot.certificatePem]);
  const after = await mutualTlsHandshake({ ...newSide, ca: newOnly }, { key: afterRotation.privateKeyPem, cert: afterRotation.certChainPem, ca: newOnly });
  t.is(after.error, undefined);
  const straggler = await mutualTlsHandshake({ ...newSide, ca: newOnly }, { ...oldSide, ca: overlap });
  t.truthy(straggler.error, 'a leaf still under the old root is refused once the old root is gone');
});

/** The same intermediate, serving a different bundle: what rewriting trust-bundle.pem in a controller's caDir does. */
async function rebundle(ca: IntermediateCa, root: RootCa, bundle: string): Promise<IntermediateCa> {
  const dir = await mkdtemp(join(tmpdir(), 'cw-rebundle-'));
  try {
    const files = await writeIntermediateCa(ca, dir);
    await writeFile(files.trustBundleFile, bundle);
    const reloaded = await loadIntermediateCa(dir);
    if (!reloaded.certChainPem.includes(root.certificatePem.trim())) throw new Error('chain lost its root');
    return reloaded;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
