import { createHash, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import {
  Tag,
  bitString,
  header,
  boolean,
  children,
  decodeOid,
  explicit,
  ia5String,
  implicitConstructed,
  implicitPrimitive,
  octetString,
  oid,
  printableString,
  readOnly,
  sequence,
  set,
  smallInteger,
  time,
  unsignedInteger,
  utf8String,
} from './der.js';
import { signatureSchemeFor, type SignatureScheme } from './keys.js';

/**
 * The certificate profiles of the mesh, written as DER directly: the root, the
 * per-cluster intermediate (pathlen 0, URI name constraint to the trust domain) and the
 * SPIFFE X.509-SVID workload leaf. The leaf path precomputes everything that does not
 * change between certificates of one issuer (see {@link LeafTemplate}).
 */

const OID = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  organizationalUnit: '2.5.4.11',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  nameConstraints: '2.5.29.30',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

export type NameAttribute = readonly ['CN' | 'O' | 'OU', string];

const NAME_OIDS = { CN: OID.commonName, O: OID.organization, OU: OID.organizationalUnit } as const;

export function distinguishedName(attributes: readonly NameAttribute[]): Buffer {
  return sequence(...attributes.map(([type, value]) => set(sequence(oid(NAME_OIDS[type]), /^[A-Za-z0-9 '()+,./:=?-]*$/.test(value) ? printableString(value) : utf8String(value)))));
}

function extension(id: string, critical: boolean, value: Buffer): Buffer {
  return critical ? sequence(oid(id), boolean(true), octetString(value)) : sequence(oid(id), octetString(value));
}

/** A named BIT STRING (RFC 5280 KeyUsage) with trailing zero bits removed, as DER demands. */
function namedBits(bits: readonly number[]): Buffer {
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[Math.floor(bit / 8)] = (bytes[Math.floor(bit / 8)] as number) | (0x80 >> bit % 8);
  return bitString(bytes, 7 - (highest % 8));
}

const KeyUsageBit = { digitalSignature: 0, keyEncipherment: 2, keyCertSign: 5, cRLSign: 6 } as const;

const uriSan = (uri: string): Buffer => implicitPrimitive(6, Buffer.from(uri, 'ascii'));

export const Extensions = {
  caBasicConstraints: (pathLength?: number) =>
    extension(OID.basicConstraints, true, sequence(boolean(true), ...(pathLength === undefined ? [] : [smallInteger(pathLength)]))),
  leafBasicConstraints: () => extension(OID.basicConstraints, true, sequence()),
  caKeyUsage: () => extension(OID.keyUsage, true, namedBits([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign])),
  leafKeyUsage: (rsa: boolean) => extension(OID.keyUsage, true, namedBits(rsa ? [KeyUsageBit.digitalSignature, KeyUsageBit.keyEncipherment] : [KeyUsageBit.digitalSignature])),
  serverAndClientAuth: () => extension(OID.extKeyUsage, false, sequence(oid(OID.serverAuth), oid(OID.clientAuth))),
  /** Critical when the subject is empty (RFC 5280 §4.2.1.6), as it is for workload leaves. */
  uriSubjectAltName: (uri: string, critical: boolean) => extension(OID.subjectAltName, critical, sequence(uriSan(uri))),
  /** EKU with exactly the purposes given: infrastructure leaves are a server or a client, not both. */
  extKeyUsage: (purposes: readonly ('serverAuth' | 'clientAuth')[]) => extension(OID.extKeyUsage, false, sequence(...purposes.map((p) => oid(OID[p])))),
  /** Host names for a server leaf: dNSName [2] and iPAddress [7] (4 or 16 bytes) GeneralNames. */
  hostSubjectAltName: (dnsNames: readonly string[], ipAddresses: readonly Buffer[]) =>
    extension(OID.subjectAltName, false, sequence(...dnsNames.map((name) => implicitPrimitive(2, Buffer.from(name, 'ascii'))), ...ipAddresses.map((ip) => implicitPrimitive(7, ip)))),
  subjectKeyIdentifier: (keyId: Buffer) => extension(OID.subjectKeyIdentifier, false, octetString(keyId)),
  authorityKeyIdentifier: (keyId: Buffer) => extension(OID.authorityKeyIdentifier, false, sequence(implicitPrimitive(0, keyId))),
  /**
   * Permits only URIs whose host is the trust domain. RFC 5280 matches URI constraints
   * on the host, which for `spiffe://TD/...` is TD — so this admits exactly the trust domain.
   */
  uriNameConstraint: (trustDomain: string) =>
    extension(OID.nameConstraints, true, sequence(implicitConstructed(0, sequence(uriSan(trustDomain))))),
};

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value. */
export function keyIdentifier(spkiDer: Buffer): Buffer {
  const [, subjectPublicKey] = children(readOnly(spkiDer, Tag.sequence).content);
  if (!subjectPublicKey || subjectPublicKey.tag !== Tag.bitString) throw new Error('SubjectPublicKeyInfo has no BIT STRING');
  return createHash('sha1').update(subjectPublicKey.content.subarray(1)).digest();
}

export function spkiOf(key: KeyObject): Buffer {
  return (key.type === 'private' ? createPublicKey(key) : key).export({ type: 'spki', format: 'der' });
}

/** A positive, non-zero 128-bit serial (RFC 5280 allows up to 20 octets; CAB forum wants ≥ 64 random bits). */
export function randomSerial(): Buffer {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] as number) & 0x7f) | 0x01;
  return bytes;
}

const VERSION_3 = explicit(0, smallInteger(2));

export interface TbsFields {
  readonly serial: Buffer;
  readonly signatureAlgorithm: Buffer;
  readonly issuer: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly subject: Buffer;
  readonly subjectPublicKeyInfo: Buffer;
  readonly extensions: readonly Buffer[];
}

export function tbsCertificate(f: TbsFields): Buffer {
  return sequence(
    VERSION_3,
    unsignedInteger(f.serial),
    f.signatureAlgorithm,
    f.issuer,
    sequence(time(f.notBefore), time(f.notAfter)),
    f.subject,
    f.subjectPublicKeyInfo,
    explicit(3, sequence(...f.extensions)),
  );
}

export function signTbs(tbs: Buffer, signer: KeyObject, scheme: SignatureScheme = signatureSchemeFor(signer)): Buffer {
  return sequence(tbs, scheme.algorithmIdentifier, bitString(sign(scheme.digest, tbs, signer)));
}

/** The raw pieces of an issuer certificate a signer needs: its subject (copied byte for byte) and key id. */
export function issuerFields(certificateDer: Buffer): { subject: Buffer; keyIdentifier: Buffer } {
  const [tbs] = children(readOnly(certificateDer, Tag.sequence).content);
  if (!tbs) throw new Error('certificate has no TBSCertificate');
  const fields = children(tbs.content);
  const offset = fields[0]?.tag === 0xa0 ? 1 : 0;
  const subject = fields[offset + 4];
  const spki = fields[offset + 5];
  if (!subject || !spki) throw new Error('TBSCertificate is truncated');
  let keyId: Buffer | undefined;
  const extensions = fields.find((f) => f.tag === 0xa3);
  if (extensions) {
    for (const ext of children(children(extensions.content)[0]?.content ?? Buffer.alloc(0))) {
      const parts = children(ext.content);
      if (parts[0] && decodeOid(parts[0].content) === OID.subjectKeyIdentifier) {
        const value = parts[parts.length - 1];
        if (value) keyId = readOnly(value.content, Tag.octetString).content;
      }
    }
  }
  return { subject: Buffer.from(subject.whole), keyIdentifier: keyId ?? keyIdentifier(Buffer.from(spki.whole)) };
}

export interface LeafRequest {
  readonly spiffeId: string;
  readonly subjectPublicKeyInfo: Buffer;
  readonly rsa: boolean;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Only for tooling (e.g. an etcd user name); the signing service never sets it. */
  readonly commonName?: string;
}

/**
 * Everything of a workload leaf that is fixed per issuer, encoded once. Issuing is then
 * two buffer concatenations around one `crypto.sign`: the element headers are computed
 * from the part lengths instead of nesting small buffers (which cost more than the
 * signature). test/ca/equivalence.test.ts proves the output equal to @peculiar/x509's.
 */
export class LeafTemplate {
  readonly #scheme: SignatureScheme;
  /** `[0] version 3`, then the serial's INTEGER header (16 random bytes follow). */
  static readonly #versionAndSerialHeader = Buffer.concat([VERSION_3, header(Tag.integer, 16)]);
  static readonly #emptySubject = sequence();
  /** The SKI extension up to the 20-byte SHA-1 key id. */
  static readonly #subjectKeyIdPrefix = Extensions.subjectKeyIdentifier(Buffer.alloc(20)).subarray(0, -20);
  readonly #algorithmAndIssuer: Buffer;
  readonly #fixedExtensions: { ec: Buffer; rsa: Buffer };
  readonly #issuerKey: KeyObject;

  constructor(issuerCertificateDer: Buffer, issuerKey: KeyObject) {
    this.#issuerKey = issuerKey;
    this.#scheme = signatureSchemeFor(issuerKey);
    const issuer = issuerFields(issuerCertificateDer);
    this.#algorithmAndIssuer = Buffer.concat([this.#scheme.algorithmIdentifier, issuer.subject]);
    const common = [Extensions.leafBasicConstraints(), Extensions.serverAndClientAuth(), Extensions.authorityKeyIdentifier(issuer.keyIdentifier)];
    this.#fixedExtensions = { ec: Buffer.concat([Extensions.leafKeyUsage(false), ...common]), rsa: Buffer.concat([Extensions.leafKeyUsage(true), ...common]) };
  }

  /** Returns the DER of a signed leaf certificate. */
  sign(request: LeafRequest): Buffer {
    const serial = randomSerial();
    const subject = request.commonName === undefined ? LeafTemplate.#emptySubject : distinguishedName([['CN', request.commonName]]);
    const fixed = request.rsa ? this.#fixedExtensions.rsa : this.#fixedExtensions.ec;
    const keyId = keyIdentifier(request.subjectPublicKeyInfo);
    const san = Extensions.uriSubjectAltName(request.spiffeId, request.commonName === undefined);
    const extensionsLength = fixed.length + LeafTemplate.#subjectKeyIdPrefix.length + keyId.length + san.length;
    const extensionsSequence = header(Tag.sequence, extensionsLength);
    const parts = [
      LeafTemplate.#versionAndSerialHeader,
      serial,
      this.#algorithmAndIssuer,
      sequence(time(request.notBefore), time(request.notAfter)),
      subject,
      request.subjectPublicKeyInfo,
      header(0xa3, extensionsSequence.length + extensionsLength),
      extensionsSequence,
      fixed,
      LeafTemplate.#subjectKeyIdPrefix,
      keyId,
      san,
    ];
    let tbsLength = 0;
    for (const part of parts) tbsLength += part.length;
    const tbsHeader = header(Tag.sequence, tbsLength);
    const tbs = Buffer.concat([tbsHeader, ...parts], tbsHeader.length + tbsLength);
    const signature = sign(this.#scheme.digest, tbs, this.#issuerKey);
    const algorithm = this.#scheme.algorithmIdentifier;
    const signatureHeader = header(Tag.bitString, signature.length + 1);
    const bodyLength = tbs.length + algorithm.length + signatureHeader.length + 1 + signature.length;
    return Buffer.concat([header(Tag.sequence, bodyLength), tbs, algorithm, signatureHeader, ZERO_UNUSED_BITS, signature]);
  }
}

const ZERO_UNUSED_BITS = Buffer.from([0]);
