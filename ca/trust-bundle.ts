import { X509Certificate } from 'node:crypto';
import { parseSpiffeId } from '../mesh/index.js';
import { CaError, CaErrorCodes } from './errors.js';
import { splitCertificates } from './pem.js';

/**
 * Trust bundles: the set of root certificates a mesh trusts. During a root rotation it
 * holds the old and the new root, so workloads under either verify each other.
 */

/** Joins root certificates (PEM, each possibly itself a bundle) into one bundle, dropping duplicates. */
export function buildTrustBundle(pems: readonly string[]): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const pem of pems) {
    for (const one of splitCertificates(pem, 'trust bundle input')) {
      const cert = new X509Certificate(one);
      if (!cert.ca) throw new CaError(CaErrorCodes.certificateInvalid, `${(cert.subject ?? '').replace(/\n/g, ', ')} is not a CA certificate; a trust bundle holds only roots`);
      if (seen.has(cert.fingerprint256)) continue;
      seen.add(cert.fingerprint256);
      out.push(one);
    }
  }
  if (out.length === 0) throw new CaError(CaErrorCodes.pemInvalid, 'a trust bundle needs at least one root certificate');
  return out.join('');
}

/** The certificates of a bundle, in order. */
export function trustBundleCertificates(pem: string): X509Certificate[] {
  return splitCertificates(pem, 'trust bundle').map((one) => new X509Certificate(one));
}

/** The SPIFFE ID in a `subjectaltname` string as Node reports it (`URI:spiffe://…, DNS:…`), if exactly one URI SAN. */
export function spiffeIdFromSubjectAltName(subjectAltName: string | undefined): string | undefined {
  if (!subjectAltName) return undefined;
  const uris = subjectAltName
    .split(/,\s*/)
    .filter((entry) => entry.startsWith('URI:'))
    .map((entry) => entry.slice(4));
  if (uris.length !== 1) return undefined;
  const uri = uris[0] as string;
  try {
    parseSpiffeId(uri);
    return uri;
  } catch {
    return undefined;
  }
}

/** The SPIFFE ID of a workload certificate (its one URI SAN); throws when it has none or several. */
export function spiffeIdOf(certificate: X509Certificate | string): string {
  const cert = typeof certificate === 'string' ? new X509Certificate(certificate) : certificate;
  const id = spiffeIdFromSubjectAltName(cert.subjectAltName);
  if (!id) throw new CaError(CaErrorCodes.certificateInvalid, `certificate ${cert.serialNumber} does not carry exactly one SPIFFE ID URI SAN (it has: ${cert.subjectAltName ?? 'none'})`);
  return id;
}

export interface ChainVerification {
  readonly spiffeId: string;
  readonly leaf: X509Certificate;
  /** Leaf, intermediates…, then the trusted root that anchors them. */
  readonly path: readonly X509Certificate[];
}

function describe(cert: X509Certificate): string {
  return (cert.subject ?? '').replace(/\n/g, ', ') || `serial ${cert.serialNumber}`;
}

/** Builds and checks the path from `chain[0]` to a root of the bundle: signatures, issuer links, CA flags, validity at `at`. */
function verifiedPath(chainPem: string, trustBundlePem: string, at: Date): { chain: X509Certificate[]; path: X509Certificate[]; fail: (reason: string) => never } {
  const chain = splitCertificates(chainPem, 'certificate chain').map((pem) => new X509Certificate(pem));
  const roots = trustBundleCertificates(trustBundlePem);
  const first = chain[0] as X509Certificate;
  const fail = (reason: string): never => {
    throw new CaError(CaErrorCodes.certificateInvalid, `certificate chain of ${describeLeaf(first)} does not verify: ${reason}`);
  };
  const path: X509Certificate[] = [];
  let current = first;
  for (let depth = 0; ; depth++) {
    if (depth > 4) fail('the chain is longer than 4 certificates');
    if (at < new Date(current.validFrom)) fail(`${describe(current)} is not valid before ${new Date(current.validFrom).toISOString()}`);
    if (at > new Date(current.validTo)) fail(`${describe(current)} expired at ${new Date(current.validTo).toISOString()}`);
    if (depth > 0 && !current.ca) fail(`${describe(current)} is not a CA but issued another certificate`);
    path.push(current);
    const root = roots.find((r) => current.checkIssued(r) && current.verify(r.publicKey));
    if (root) {
      if (root.fingerprint256 !== current.fingerprint256) {
        if (at > new Date(root.validTo) || at < new Date(root.validFrom)) fail(`root ${describe(root)} is outside its validity`);
        path.push(root);
      }
      break;
    }
    const issuer = chain.find((c) => c !== current && current.checkIssued(c));
    if (!issuer) fail(`no certificate in the chain or the trust bundle issued ${describe(current)}`);
    if (!current.verify((issuer as X509Certificate).publicKey)) fail(`the signature on ${describe(current)} does not verify`);
    current = issuer as X509Certificate;
  }
  return { chain, path, fail };
}

/**
 * Verifies a workload chain (leaf first, as served) against a trust bundle: signatures,
 * issuer links, CA flags and validity of every certificate at `at`, and the leaf's SPIFFE
 * ID in the trust domain of its issuer. OpenSSL enforces the same plus name constraints
 * during TLS; this is for places outside a handshake (inspection, per-call re-checks).
 */
export function verifyCertificateChain(chainPem: string, trustBundlePem: string, options: { at?: Date } = {}): ChainVerification {
  const { path, fail } = verifiedPath(chainPem, trustBundlePem, options.at ?? new Date());
  const leaf = path[0] as X509Certificate;
  if (leaf.ca) fail('the first certificate is a CA, not a workload certificate');
  const spiffeId = spiffeIdOf(leaf);
  const issuerDomain = path[1] ? trustDomainOfCa(path[1]) : undefined;
  if (issuerDomain !== undefined && parseSpiffeId(spiffeId).trustDomain !== issuerDomain) fail(`${spiffeId} is outside trust domain ${issuerDomain}`);
  return { spiffeId, leaf, path };
}

/** Verifies that a CA certificate (first in `chainPem`, e.g. an intermediate's cert-chain.pem) chains to a root of the bundle; returns the path. */
export function verifyCaChain(chainPem: string, trustBundlePem: string, options: { at?: Date } = {}): readonly X509Certificate[] {
  const { path, fail } = verifiedPath(chainPem, trustBundlePem, options.at ?? new Date());
  if (!path[0]?.ca) fail('the first certificate is not a CA');
  return path;
}

function describeLeaf(leaf: X509Certificate): string {
  return spiffeIdFromSubjectAltName(leaf.subjectAltName) ?? describe(leaf);
}

/** The trust domain a mesh CA certificate names in its `spiffe://TD` URI SAN, if any. */
export function trustDomainOfCa(cert: X509Certificate): string | undefined {
  const match = /URI:spiffe:\/\/([^/,\s]+)\/?(,|$)/.exec(cert.subjectAltName ?? '');
  return match?.[1];
}
