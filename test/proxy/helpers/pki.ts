import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

/**
 * A mesh PKI for the sidecar's tests, made in-process with @peculiar/x509: one root,
 * one intermediate per cluster (subject `OU=<cluster>`, pathlen 0), and SPIFFE workload
 * certificates (one URI SAN, serverAuth+clientAuth) with any lifetime, down to seconds
 * for rotation tests. It stands in for testkit/mesh-pki.ts and ca/ until those
 * land; the sidecar only ever sees PEM.
 */
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface WorkloadPem {
  readonly key: string;
  /** Leaf then intermediate. */
  readonly chain: string[];
  readonly spiffeId: string;
}

export interface MeshPki {
  readonly trustDomain: string;
  readonly rootPem: string;
  /** `seconds`: life left from now; `ageSeconds`: how long ago it began (its notBefore, beyond the usual minute of backdating). */
  issue(cluster: string, spiffeId: string, options?: { seconds?: number; ageSeconds?: number }): Promise<WorkloadPem>;
  /** Signs a PEM CSR with the cluster's intermediate, as the CA service would; the SAN is taken from `spiffeId`. */
  signCsr(cluster: string, csrPem: string, spiffeId: string, seconds?: number): Promise<string[]>;
}

type Pair = CryptoKeyPair;
const keys = (): Promise<Pair> => webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']) as Promise<Pair>;

async function pkcs8Pem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n?$/, '\n')}-----END PRIVATE KEY-----\n`;
}

let serial = 1000;
const nextSerial = () => (serial++).toString(16).padStart(8, '0');

export async function createMeshPki(trustDomain = 'causeway.internal'): Promise<MeshPki> {
  const rootKeys = await keys();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: nextSerial(),
    name: `O=causeway, CN=causeway root ${trustDomain}`,
    notBefore: new Date(Date.now() - 3_600_000),
    notAfter: new Date(Date.now() + 3 * 86_400_000),
    keys: rootKeys,
    signingAlgorithm: alg,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true), await x509.SubjectKeyIdentifierExtension.create(rootKeys.publicKey)],
  });
  const intermediates = new Map<string, Promise<{ cert: x509.X509Certificate; keys: Pair }>>();
  const intermediate = (cluster: string) => {
    let found = intermediates.get(cluster);
    if (!found) {
      found = (async () => {
        const k = await keys();
        const cert = await x509.X509CertificateGenerator.create({
          serialNumber: nextSerial(),
          subject: `O=causeway, OU=${cluster}, CN=causeway intermediate ${cluster}`,
          issuer: root.subject,
          notBefore: new Date(Date.now() - 3_600_000),
          notAfter: new Date(Date.now() + 2 * 86_400_000),
          publicKey: k.publicKey,
          signingKey: rootKeys.privateKey,
          signingAlgorithm: alg,
          extensions: [
            new x509.BasicConstraintsExtension(true, 0, true),
            new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
            await x509.SubjectKeyIdentifierExtension.create(k.publicKey),
            await x509.AuthorityKeyIdentifierExtension.create(rootKeys.publicKey),
          ],
        });
        return { cert, keys: k };
      })();
      intermediates.set(cluster, found);
    }
    return found;
  };
  const sign = async (cluster: string, publicKey: CryptoKey | x509.PublicKey, spiffeId: string, seconds: number, ageSeconds = 0): Promise<string[]> => {
    const ca = await intermediate(cluster);
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: nextSerial(),
      subject: 'O=causeway',
      issuer: ca.cert.subject,
      notBefore: new Date(Date.now() - 60_000 - ageSeconds * 1000),
      notAfter: new Date(Date.now() + seconds * 1000),
      publicKey,
      signingKey: ca.keys.privateKey,
      signingAlgorithm: alg,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }], true),
        await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
      ],
    });
    return [leaf.toString('pem') + '\n', ca.cert.toString('pem') + '\n'];
  };
  return {
    trustDomain,
    rootPem: root.toString('pem') + '\n',
    async issue(cluster, spiffeId, options = {}) {
      const k = await keys();
      const chain = await sign(cluster, k.publicKey, spiffeId, options.seconds ?? 86_400, options.ageSeconds);
      return { key: await pkcs8Pem(k.privateKey), chain, spiffeId };
    },
    async signCsr(cluster, csrPem, spiffeId, seconds = 86_400) {
      const csr = new x509.Pkcs10CertificateRequest(csrPem);
      if (!(await csr.verify())) throw new Error('CSR signature does not verify');
      return sign(cluster, csr.publicKey, spiffeId, seconds);
    },
  };
}
