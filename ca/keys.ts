import { createPrivateKey, generateKeyPair, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import { Tag, children, decodeOid, nullValue, oid, readOnly, sequence } from './der.js';
import { CaError, CaErrorCodes } from './errors.js';

/** Key types the CA creates and accepts. ECDSA P-256 is the default everywhere. */
export const KeyTypes = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'] as const;
export type KeyType = (typeof KeyTypes)[number];
export const DEFAULT_KEY_TYPE: KeyType = 'ec-p256';

export function parseKeyType(text: string): KeyType {
  if (!(KeyTypes as readonly string[]).includes(text)) {
    throw new CaError(CaErrorCodes.keyTypeUnknown, `key type "${text}" is not supported; use one of ${KeyTypes.join(', ')}`);
  }
  return text as KeyType;
}

const generateKeyPairAsync = promisify(generateKeyPair);

function keyGenParameters(type: KeyType): { kind: 'ec'; namedCurve: string } | { kind: 'rsa'; modulusLength: number } {
  switch (type) {
    case 'ec-p256':
      return { kind: 'ec', namedCurve: 'P-256' };
    case 'ec-p384':
      return { kind: 'ec', namedCurve: 'P-384' };
    case 'rsa-2048':
      return { kind: 'rsa', modulusLength: 2048 };
    case 'rsa-3072':
      return { kind: 'rsa', modulusLength: 3072 };
    case 'rsa-4096':
      return { kind: 'rsa', modulusLength: 4096 };
  }
}

/** Generates a private key (RSA generation runs off the event loop). */
export async function generatePrivateKey(type: KeyType = DEFAULT_KEY_TYPE): Promise<KeyObject> {
  const p = keyGenParameters(type);
  const pair = p.kind === 'ec' ? await generateKeyPairAsync('ec', { namedCurve: p.namedCurve }) : await generateKeyPairAsync('rsa', { modulusLength: p.modulusLength });
  return pair.privateKey;
}

export function generatePrivateKeySync(type: KeyType = DEFAULT_KEY_TYPE): KeyObject {
  const p = keyGenParameters(type);
  return p.kind === 'ec' ? generateKeyPairSync('ec', { namedCurve: p.namedCurve }).privateKey : generateKeyPairSync('rsa', { modulusLength: p.modulusLength }).privateKey;
}

/** The {@link KeyType} of a key, or undefined for keys the mesh does not use (Ed25519, P-521, odd RSA sizes…). */
export function keyTypeOf(key: KeyObject): KeyType | undefined {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') {
    if (details.namedCurve === 'prime256v1') return 'ec-p256';
    if (details.namedCurve === 'secp384r1') return 'ec-p384';
    return undefined;
  }
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details.modulusLength;
    if (bits === 2048) return 'rsa-2048';
    if (bits === 3072) return 'rsa-3072';
    if (bits === 4096) return 'rsa-4096';
  }
  return undefined;
}

const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
const OID_RSA_ENCRYPTION = '1.2.840.113549.1.1.1';
const CURVES: Readonly<Record<string, { type?: KeyType; name: string }>> = {
  '1.2.840.10045.3.1.7': { type: 'ec-p256', name: 'P-256' },
  '1.3.132.0.34': { type: 'ec-p384', name: 'P-384' },
  '1.3.132.0.35': { name: 'P-521' },
};

/**
 * The key type of a DER SubjectPublicKeyInfo, read from its bytes: `KeyObject`'s
 * `asymmetricKeyDetails` costs as much as an ECDSA signature, and the signer asks per request.
 * `description` names keys the mesh does not accept too (`EC P-521`, `RSA 1024`, an OID).
 */
export function keyTypeOfSpki(spki: Buffer): { type: KeyType | undefined; family: 'ec' | 'rsa' | 'other'; description: string } {
  const [algorithm, subjectPublicKey] = children(readOnly(spki, Tag.sequence).content);
  const [algorithmOid, parameter] = children(algorithm?.content ?? Buffer.alloc(0));
  const id = algorithmOid?.tag === Tag.oid ? decodeOid(algorithmOid.content) : '';
  if (id === OID_EC_PUBLIC_KEY) {
    const curveOid = parameter?.tag === Tag.oid ? decodeOid(parameter.content) : 'explicit parameters';
    const curve = CURVES[curveOid];
    if (curve?.type) return { type: curve.type, family: 'ec', description: `ECDSA ${curve.name}` };
    return { type: undefined, family: 'ec', description: `EC ${curve?.name ?? curveOid}` };
  }
  if (id === OID_RSA_ENCRYPTION && subjectPublicKey?.tag === Tag.bitString) {
    const [modulus] = children(readOnly(subjectPublicKey.content.subarray(1), Tag.sequence).content);
    let bytes = modulus?.content ?? Buffer.alloc(0);
    while (bytes.length > 0 && bytes[0] === 0) bytes = bytes.subarray(1);
    const bits = bytes.length === 0 ? 0 : (bytes.length - 1) * 8 + (32 - Math.clz32(bytes[0] as number));
    const type = bits === 2048 ? 'rsa-2048' : bits === 3072 ? 'rsa-3072' : bits === 4096 ? 'rsa-4096' : undefined;
    return { type, family: 'rsa', description: `RSA ${bits}` };
  }
  return { type: undefined, family: 'other', description: `key algorithm ${id || 'unknown'}` };
}

/** A human description of a key: `ECDSA P-256`, `RSA 3072`, `ed25519`. */
export function describeKey(key: KeyObject): string {
  const details = key.asymmetricKeyDetails ?? {};
  if (key.asymmetricKeyType === 'ec') return `ECDSA ${details.namedCurve === 'prime256v1' ? 'P-256' : details.namedCurve === 'secp384r1' ? 'P-384' : details.namedCurve}`;
  if (key.asymmetricKeyType === 'rsa') return `RSA ${details.modulusLength}`;
  return String(key.asymmetricKeyType);
}

export function isRsa(key: KeyObject): boolean {
  return key.asymmetricKeyType === 'rsa';
}

/** How a key signs certificates and CSRs: the digest for `crypto.sign` and the DER AlgorithmIdentifier. */
export interface SignatureScheme {
  readonly digest: 'sha256' | 'sha384';
  readonly algorithmIdentifier: Buffer;
}

const OID_ECDSA_SHA256 = '1.2.840.10045.4.3.2';
const OID_ECDSA_SHA384 = '1.2.840.10045.4.3.3';
const OID_ECDSA_SHA512 = '1.2.840.10045.4.3.4';
const OID_RSA_SHA256 = '1.2.840.113549.1.1.11';
const OID_RSA_SHA384 = '1.2.840.113549.1.1.12';
const OID_RSA_SHA512 = '1.2.840.113549.1.1.13';

export function signatureSchemeFor(key: KeyObject): SignatureScheme {
  const type = keyTypeOf(key);
  if (type === undefined) throw new CaError(CaErrorCodes.keyNotAllowed, `a ${describeKey(key)} key cannot sign here; use one of ${KeyTypes.join(', ')}`);
  if (type === 'ec-p256') return { digest: 'sha256', algorithmIdentifier: sequence(oid(OID_ECDSA_SHA256)) };
  if (type === 'ec-p384') return { digest: 'sha384', algorithmIdentifier: sequence(oid(OID_ECDSA_SHA384)) };
  return { digest: 'sha256', algorithmIdentifier: sequence(oid(OID_RSA_SHA256), nullValue()) };
}

const ACCEPTED_SIGNATURES: ReadonlyMap<string, { digest: string; family: 'ec' | 'rsa' }> = new Map([
  [OID_ECDSA_SHA256, { digest: 'sha256', family: 'ec' }],
  [OID_ECDSA_SHA384, { digest: 'sha384', family: 'ec' }],
  [OID_ECDSA_SHA512, { digest: 'sha512', family: 'ec' }],
  [OID_RSA_SHA256, { digest: 'sha256', family: 'rsa' }],
  [OID_RSA_SHA384, { digest: 'sha384', family: 'rsa' }],
  [OID_RSA_SHA512, { digest: 'sha512', family: 'rsa' }],
]);

/** The digest of a signature algorithm OID found in a certificate or CSR, or undefined when not accepted. */
export function digestOfSignatureOid(signatureOid: string): { digest: string; family: 'ec' | 'rsa' } | undefined {
  return ACCEPTED_SIGNATURES.get(signatureOid);
}

export function privateKeyPem(key: KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }) as string;
}

export function loadPrivateKey(pem: string, what = 'private key'): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (error) {
    throw new CaError(CaErrorCodes.pemInvalid, `the ${what} is not a readable PEM private key: ${(error as Error).message}`, { cause: error });
  }
}
