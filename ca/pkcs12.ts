import { createHash, createHmac, createPrivateKey, randomBytes, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { CaError, CaErrorCodes } from './errors.js';
import { splitCertificates } from './pem.js';

/**
 * PKCS#12 keystores for JVM and .NET workloads: the workload key, its chain and the trust
 * bundle in one `.p12` that `KeyStore.getInstance("PKCS12")` and `X509Certificate2`
 * read as they are.
 *
 * node:crypto cannot write PKCS#12, and node-forge's `toPkcs12Asn1` only takes RSA keys
 * and certificates it can parse (not our ECDSA ones). So the file is assembled here with
 * node-forge's DER encoder and PKCS#12 key derivation (RFC 7292 appendix B), around a
 * key that node:crypto encrypts itself (PKCS#8, PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC):
 * - certificates in a plain `data` SafeContents: the leaf (with `localKeyId` and
 *   `friendlyName`, pairing it with the key), then the intermediates; every root of the
 *   trust bundle with the JDK's "trusted for any purpose" attribute, so Java lists it as
 *   a trustedCertEntry and the same file serves as truststore;
 * - the key in a `pkcs8ShroudedKeyBag` with the same `localKeyId`;
 * - an HMAC-SHA256 MAC over the AuthenticatedSafe (JDK ≥ 12, .NET Core, OpenSSL 1.1+).
 */

const OID = {
  data: '1.2.840.113549.1.7.1',
  certBag: '1.2.840.113549.1.12.10.1.3',
  pkcs8ShroudedKeyBag: '1.2.840.113549.1.12.10.1.2',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  friendlyName: '1.2.840.113549.1.9.20',
  localKeyId: '1.2.840.113549.1.9.21',
  sha256: '2.16.840.1.101.3.4.2.1',
  /** Oracle's "trusted key usage" bag attribute; the value anyExtendedKeyUsage makes a trust anchor. */
  jdkTrustedKeyUsage: '2.16.840.1.113894.746875.1.1',
  anyExtendedKeyUsage: '2.5.29.37.0',
} as const;

const MAC_ITERATIONS = 2048;
const MAC_SALT_BYTES = 16;

export interface Pkcs12Input {
  /** PKCS#8 or SEC1 PEM of the workload key. */
  readonly privateKeyPem: string;
  /** Leaf first, then the intermediates. */
  readonly certChain: readonly string[];
  /** PEM bundle of the roots to trust. */
  readonly trustBundlePem: string;
  /** Protects the key and the MAC. Printable ASCII keeps every reader agreeing on its bytes. */
  readonly password: string;
  /** The key entry's alias in Java's keystore (default `workload`). */
  readonly alias?: string;
}

const { asn1 } = forge;

function seq(items: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
}
function set(items: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SET, true, items);
}
function oid(value: string): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OID, false, asn1.oidToDer(value).getBytes());
}
function octets(bytes: Buffer): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.UNIVERSAL, asn1.Type.OCTETSTRING, false, bytes.toString('binary'));
}
function explicit0(inner: forge.asn1.Asn1): forge.asn1.Asn1 {
  return asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [inner]);
}
function der(value: forge.asn1.Asn1): Buffer {
  return Buffer.from(asn1.toDer(value).getBytes(), 'binary');
}
function attribute(type: string, value: forge.asn1.Asn1): forge.asn1.Asn1 {
  return seq([oid(type), set([value])]);
}
function dataContentInfo(content: Buffer): forge.asn1.Asn1 {
  return seq([oid(OID.data), explicit0(octets(content))]);
}
function certBag(certificateDer: Buffer, attributes: forge.asn1.Asn1[]): forge.asn1.Asn1 {
  const bag = [oid(OID.certBag), explicit0(seq([oid(OID.x509Certificate), explicit0(octets(certificateDer))]))];
  if (attributes.length > 0) bag.push(set(attributes));
  return seq(bag);
}

function certificateDer(pem: string, what: string): Buffer {
  try {
    return new X509Certificate(pem).raw;
  } catch (error) {
    throw new CaError(CaErrorCodes.pemInvalid, `${what} is not a PEM certificate: ${(error as Error).message}`, { cause: error });
  }
}

/** Encodes a workload credential as a password-protected PKCS#12 (`.p12`) file. */
export function encodePkcs12(input: Pkcs12Input): Buffer {
  if (input.password.length === 0) throw new CaError(CaErrorCodes.pemInvalid, 'a PKCS#12 password must not be empty');
  if (input.certChain.length === 0) throw new CaError(CaErrorCodes.pemInvalid, 'a PKCS#12 keystore needs the workload certificate');
  const alias = input.alias ?? 'workload';
  const leaf = certificateDer(input.certChain[0]!, 'the workload certificate');
  const localKeyId = attribute(OID.localKeyId, octets(createHash('sha1').update(leaf).digest()));
  const friendly = (name: string) => attribute(OID.friendlyName, asn1.create(asn1.Class.UNIVERSAL, asn1.Type.BMPSTRING, false, name));

  const certBags = [certBag(leaf, [localKeyId, friendly(alias)])];
  input.certChain.slice(1).forEach((pem, i) => certBags.push(certBag(certificateDer(pem, `chain certificate ${i + 1}`), [])));
  splitCertificates(input.trustBundlePem).forEach((pem, i) =>
    certBags.push(certBag(certificateDer(pem, `trust bundle certificate ${i}`), [friendly(`causeway-root-${i}`), attribute(OID.jdkTrustedKeyUsage, oid(OID.anyExtendedKeyUsage))])),
  );

  let encryptedKey: Buffer;
  try {
    encryptedKey = createPrivateKey(input.privateKeyPem).export({ type: 'pkcs8', format: 'der', cipher: 'aes-256-cbc', passphrase: input.password });
  } catch (error) {
    throw new CaError(CaErrorCodes.pemInvalid, `the workload key is not a readable PEM private key: ${(error as Error).message}`, { cause: error });
  }
  const keyBag = seq([oid(OID.pkcs8ShroudedKeyBag), explicit0(asn1.fromDer(encryptedKey.toString('binary'))), set([localKeyId, friendly(alias)])]);

  const authenticatedSafe = der(seq([dataContentInfo(der(seq(certBags))), dataContentInfo(der(seq([keyBag])))]));

  const salt = randomBytes(MAC_SALT_BYTES);
  const macKey = forge.pkcs12.generateKey(input.password, forge.util.createBuffer(salt.toString('binary')), 3, MAC_ITERATIONS, 32, forge.md.sha256.create());
  const mac = createHmac('sha256', Buffer.from(macKey.getBytes(), 'binary')).update(authenticatedSafe).digest();
  const macData = seq([
    seq([seq([oid(OID.sha256), asn1.create(asn1.Class.UNIVERSAL, asn1.Type.NULL, false, '')]), octets(mac)]),
    octets(salt),
    asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(MAC_ITERATIONS).getBytes()),
  ]);
  return der(seq([asn1.create(asn1.Class.UNIVERSAL, asn1.Type.INTEGER, false, asn1.integerToDer(3).getBytes()), dataContentInfo(authenticatedSafe), macData]));
}

/** A password for a generated keystore: 24 random bytes, base64url (printable ASCII). */
export function generatePkcs12Password(): string {
  return randomBytes(24).toString('base64url');
}
