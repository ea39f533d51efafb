// A reference issuer built on @peculiar/x509, for the equivalence test and the CA benchmark only
// (@peculiar/x509 and reflect-metadata are devDependencies): nothing in a running component imports it.
import 'reflect-metadata';
import { randomBytes, webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { Defaults, type IntermediateCa } from './authority.js';
import { keyTypeOf } from './keys.js';

x509.cryptoProvider.set(webcrypto as never);

type CryptoKey = webcrypto.CryptoKey;

/**
 * The straightforward issuance path, with @peculiar/x509: ~60× slower than the DER
 * template of certificate-profile.ts. Kept only as the reference that proves the fast
 * path equivalent (test/ca/equivalence.test.ts) and as the benchmark's baseline. Not on
 * any serving path.
 */
export class ReferenceLeafIssuer {
  #signingKey: CryptoKey | undefined;

  readonly #ca: IntermediateCa;

  constructor(ca: IntermediateCa) {
    this.#ca = ca;
  }

  async #key(): Promise<CryptoKey> {
    const type = keyTypeOf(this.#ca.privateKey);
    const algorithm = type === 'ec-p256' ? { name: 'ECDSA', namedCurve: 'P-256' } : type === 'ec-p384' ? { name: 'ECDSA', namedCurve: 'P-384' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
    this.#signingKey ??= await webcrypto.subtle.importKey('pkcs8', this.#ca.privateKey.export({ type: 'pkcs8', format: 'der' }), algorithm, false, ['sign']);
    return this.#signingKey;
  }

  /** Verifies the CSR and signs a workload leaf with the same profile as `IntermediateCa.signCsr`. */
  async signCsr(csrPem: string, ttlSeconds: number = Defaults.workloadTtlSeconds, now = new Date()): Promise<string> {
    const csr = new x509.Pkcs10CertificateRequest(csrPem);
    if (!(await csr.verify())) throw new Error('CSR signature does not verify');
    const sanExtension = csr.getExtension('2.5.29.17');
    const san = sanExtension ? new x509.SubjectAlternativeNameExtension(sanExtension.rawData) : undefined;
    const uri = san?.names.items.find((n) => n.type === 'url')?.value;
    if (!uri) throw new Error('CSR has no URI SAN');
    const issuer = new x509.X509Certificate(this.#ca.certificatePem);
    const rsa = csr.publicKey.algorithm.name === 'RSASSA-PKCS1-v1_5' || csr.publicKey.algorithm.name === 'RSA-PSS';
    const serial = randomBytes(16);
    serial[0] = ((serial[0] as number) & 0x7f) | 0x01;
    const typeOfCa = keyTypeOf(this.#ca.privateKey);
    const signingAlgorithm = typeOfCa?.startsWith('rsa') ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', hash: typeOfCa === 'ec-p384' ? 'SHA-384' : 'SHA-256' };
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial.toString('hex'),
      issuer: issuer.subjectName,
      subject: new x509.Name([]),
      notBefore: new Date(now.getTime() - Defaults.backdateSeconds * 1000),
      notAfter: new Date(now.getTime() + ttlSeconds * 1000),
      signingAlgorithm,
      publicKey: await csr.publicKey.export(),
      signingKey: (await this.#key()) as never,
      extensions: [
        new x509.KeyUsagesExtension(rsa ? x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment : x509.KeyUsageFlags.digitalSignature, true),
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
        await x509.AuthorityKeyIdentifierExtension.create(issuer),
        await x509.SubjectKeyIdentifierExtension.create(await csr.publicKey.export()),
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }], true),
      ],
    });
    return cert.toString('pem');
  }
}
