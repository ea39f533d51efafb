import { randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { controllerSni, parseSpiffeId } from '../mesh/index.js';
import { issuerFields } from './certificate-profile.js';
import { CaError, CaErrorCodes } from './errors.js';
import type { IntermediateCa } from './authority.js';

/**
 * Join tokens authenticate a workload's first certificate request. A token is a compact
 * JWS (header.payload.signature, base64url) signed by the cluster's intermediate key, so
 * the controller holding that intermediate verifies it without any shared secret. It
 * names exactly one SPIFFE ID (`sub`), one audience — the cluster's signing service,
 * `controller.<cluster>.cw1.<trust-domain>` — and expires (`exp`). It may be used more
 * than once before it expires (a VM may restart before its first certificate is saved),
 * but only ever for the identity it names.
 */
export interface JoinTokenClaims {
  /** The CA that minted it: `spiffe://<td>` plus the cluster, for humans reading logs. */
  readonly iss: string;
  /** `controller.<cluster>.cw1.<trust-domain>`: the only signing service that accepts it. */
  readonly aud: string;
  /** The one SPIFFE ID it lets the holder obtain a certificate for. */
  readonly sub: string;
  readonly iat: number;
  readonly exp: number;
  readonly jti: string;
}

export const DEFAULT_JOIN_TOKEN_TTL_SECONDS = 3600;
/** Tokens meant to live longer than this are refused by the verifier, whoever minted them. */
export const MAX_JOIN_TOKEN_TTL_SECONDS = 7 * 86_400;
const CLOCK_SKEW_SECONDS = 60;

export function joinTokenAudience(cluster: string, trustDomain: string): string {
  return controllerSni(cluster, trustDomain);
}

function algorithmOf(key: KeyObject): { alg: string; digest: string; ec: boolean } {
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    return curve === 'secp384r1' ? { alg: 'ES384', digest: 'sha384', ec: true } : { alg: 'ES256', digest: 'sha256', ec: true };
  }
  return { alg: 'RS256', digest: 'sha256', ec: false };
}

const b64 = (value: Buffer | string) => Buffer.from(value).toString('base64url');

interface TokenVerifier {
  readonly algorithm: ReturnType<typeof algorithmOf>;
  readonly publicKey: KeyObject;
}

// X509Certificate#publicKey builds a new KeyObject, and asymmetricKeyDetails costs as much
// as a signature, on every access: work them out once per intermediate.
const verifiers = new WeakMap<IntermediateCa, TokenVerifier>();
function verifierFor(ca: IntermediateCa): TokenVerifier {
  let verifier = verifiers.get(ca);
  if (!verifier) {
    verifier = { algorithm: algorithmOf(ca.privateKey), publicKey: ca.certificate.publicKey };
    verifiers.set(ca, verifier);
  }
  return verifier;
}

function keyId(ca: IntermediateCa): string {
  return issuerFields(ca.certificate.raw).keyIdentifier.toString('hex');
}

/** Mints a token naming `spiffeId`, for `ca`'s cluster, valid `ttlSeconds` (default 1 h). */
export function mintJoinToken(ca: IntermediateCa, options: { spiffeId: string; ttlSeconds?: number; now?: Date }): string {
  const id = parseSpiffeId(options.spiffeId);
  if (id.trustDomain !== ca.trustDomain) throw new CaError(CaErrorCodes.identityInvalid, `${options.spiffeId} is outside trust domain ${ca.trustDomain}`);
  const ttlSeconds = options.ttlSeconds ?? DEFAULT_JOIN_TOKEN_TTL_SECONDS;
  if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0 || ttlSeconds > MAX_JOIN_TOKEN_TTL_SECONDS) {
    throw new CaError(CaErrorCodes.tokenTtlInvalid, `a join token lives 1 s to ${MAX_JOIN_TOKEN_TTL_SECONDS} s (7 days); got ${ttlSeconds}. Keep it short: it only has to last until the first certificate`);
  }
  const iat = Math.floor((options.now ?? new Date()).getTime() / 1000);
  const { alg, digest, ec } = algorithmOf(ca.privateKey);
  const header = { alg, typ: 'JWT', kid: keyId(ca) };
  const claims: JoinTokenClaims = { iss: `spiffe://${ca.trustDomain}/cluster/${ca.cluster}`, aud: joinTokenAudience(ca.cluster, ca.trustDomain), sub: options.spiffeId, iat, exp: iat + ttlSeconds, jti: randomBytes(12).toString('base64url') };
  const signingInput = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
  const signature = sign(digest, Buffer.from(signingInput), ec ? { key: ca.privateKey, dsaEncoding: 'ieee-p1363' } : ca.privateKey);
  return `${signingInput}.${b64(signature)}`;
}

function malformed(reason: string): CaError {
  return new CaError(CaErrorCodes.tokenMalformed, `the join token is malformed (${reason}); mint a new one with \`causeway ca token\``);
}

const MAX_TOKEN_LENGTH = 4096;

/**
 * Verifies a join token for `ca`'s signing service and returns its claims. Throws a
 * {@link CaError} naming the exact defect: malformed, bad signature (another CA's key),
 * wrong audience (another cluster), expired, or a lifetime above the maximum.
 */
export function verifyJoinToken(token: string, ca: IntermediateCa, options: { now?: Date; maxTtlSeconds?: number } = {}): JoinTokenClaims {
  if (typeof token !== 'string' || token.length === 0) throw malformed('it is empty');
  if (token.length > MAX_TOKEN_LENGTH) throw malformed(`it is longer than ${MAX_TOKEN_LENGTH} characters`);
  const parts = token.split('.');
  if (parts.length !== 3) throw malformed('expected header.payload.signature');
  const [headerText, payloadText, signatureText] = parts as [string, string, string];
  // Node's base64 decoder skips stray characters and spare bits: insist on the one canonical spelling.
  for (const part of parts) {
    if (!/^[A-Za-z0-9_-]+$/.test(part) || Buffer.from(part, 'base64url').toString('base64url') !== part) throw malformed('a part is not canonical base64url');
  }
  let header: { alg?: unknown; kid?: unknown };
  let claims: Partial<Record<keyof JoinTokenClaims, unknown>>;
  try {
    header = JSON.parse(Buffer.from(headerText, 'base64url').toString('utf8')) as typeof header;
    claims = JSON.parse(Buffer.from(payloadText, 'base64url').toString('utf8')) as typeof claims;
  } catch {
    throw malformed('header or payload is not base64url JSON');
  }
  if (typeof header !== 'object' || header === null || typeof claims !== 'object' || claims === null) throw malformed('header or payload is not a JSON object');
  const { algorithm: expected, publicKey } = verifierFor(ca);
  if (header.alg !== expected.alg) {
    throw new CaError(CaErrorCodes.tokenSignatureInvalid, `the join token is signed with ${String(header.alg)}, but this cluster's CA signs with ${expected.alg}; it was not minted by this cluster's intermediate`);
  }
  let valid = false;
  try {
    valid = verify(expected.digest, Buffer.from(`${headerText}.${payloadText}`), expected.ec ? { key: publicKey, dsaEncoding: 'ieee-p1363' } : publicKey, Buffer.from(signatureText, 'base64url'));
  } catch {
    valid = false;
  }
  if (!valid) {
    throw new CaError(CaErrorCodes.tokenSignatureInvalid, `the join token's signature does not verify with the intermediate of cluster ${ca.cluster}; mint it with \`causeway ca token --ca <that cluster's CA dir>\``);
  }
  const { iss, aud, sub, iat, exp, jti } = claims;
  if (typeof sub !== 'string' || typeof aud !== 'string' || typeof iat !== 'number' || typeof exp !== 'number' || typeof iss !== 'string' || typeof jti !== 'string') {
    throw malformed('claims iss, aud, sub, iat, exp and jti are required');
  }
  try {
    parseSpiffeId(sub);
  } catch {
    throw malformed(`sub "${sub}" is not a SPIFFE ID`);
  }
  const audience = joinTokenAudience(ca.cluster, ca.trustDomain);
  if (aud !== audience) {
    throw new CaError(CaErrorCodes.tokenAudienceMismatch, `the join token is meant for ${aud}, not for this signing service (${audience}); use a token minted for cluster ${ca.cluster}`);
  }
  const maxTtl = options.maxTtlSeconds ?? MAX_JOIN_TOKEN_TTL_SECONDS;
  if (exp - iat > maxTtl) throw new CaError(CaErrorCodes.tokenTtlInvalid, `the join token lives ${exp - iat} s, above this signer's limit of ${maxTtl} s; mint a shorter one`);
  const now = Math.floor((options.now ?? new Date()).getTime() / 1000);
  if (now >= exp) throw new CaError(CaErrorCodes.tokenExpired, `the join token expired at ${new Date(exp * 1000).toISOString()}; mint a new one with \`causeway ca token\``);
  if (iat > now + CLOCK_SKEW_SECONDS) throw new CaError(CaErrorCodes.tokenExpired, `the join token is not valid until ${new Date(iat * 1000).toISOString()}; check the clocks of the minting host and the controller`);
  return { iss, aud, sub, iat, exp, jti };
}
