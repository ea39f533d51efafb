import { X509Certificate } from 'node:crypto';
import { describeKey } from './keys.js';
import { splitCertificates } from './pem.js';
import { spiffeIdFromSubjectAltName, verifyCaChain, verifyCertificateChain } from './trust-bundle.js';

/** What `causeway ca inspect` reports about one certificate. */
export interface CertificateSummary {
  readonly subject: string;
  readonly issuer: string;
  readonly spiffeId?: string;
  readonly subjectAltNames: readonly string[];
  readonly key: string;
  readonly serialNumber: string;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly expired: boolean;
  readonly ca: boolean;
  readonly fingerprint256: string;
}

export interface InspectionReport {
  readonly certificates: readonly CertificateSummary[];
  /** Present when a bundle was given: whether the chain (first certificate first) verifies. */
  readonly verification?: { readonly ok: true; readonly spiffeId?: string; readonly path: readonly string[] } | { readonly ok: false; readonly error: string };
}

const oneLine = (dn: string | undefined) => (dn ?? '').split('\n').filter(Boolean).join(', ');

export function summarizeCertificate(cert: X509Certificate, now = new Date()): CertificateSummary {
  const spiffeId = spiffeIdFromSubjectAltName(cert.subjectAltName);
  return {
    subject: oneLine(cert.subject),
    issuer: oneLine(cert.issuer),
    ...(spiffeId ? { spiffeId } : {}),
    subjectAltNames: cert.subjectAltName ? cert.subjectAltName.split(/,\s*/) : [],
    key: describeKey(cert.publicKey),
    serialNumber: cert.serialNumber,
    notBefore: new Date(cert.validFrom).toISOString(),
    notAfter: new Date(cert.validTo).toISOString(),
    expired: now > new Date(cert.validTo),
    ca: cert.ca,
    fingerprint256: cert.fingerprint256,
  };
}

/** Summarizes every certificate in `pem` and, with a bundle, verifies it as a chain. */
export function inspectCertificates(pem: string, trustBundlePem?: string, now = new Date()): InspectionReport {
  const certificates = splitCertificates(pem, 'file').map((one) => summarizeCertificate(new X509Certificate(one), now));
  if (trustBundlePem === undefined) return { certificates };
  const name = (c: X509Certificate) => oneLine(c.subject) || spiffeIdFromSubjectAltName(c.subjectAltName) || '(empty subject)';
  try {
    if (certificates[0]?.ca) return { certificates, verification: { ok: true, path: verifyCaChain(pem, trustBundlePem, { at: now }).map(name) } };
    const verified = verifyCertificateChain(pem, trustBundlePem, { at: now });
    return { certificates, verification: { ok: true, spiffeId: verified.spiffeId, path: verified.path.map(name) } };
  } catch (error) {
    return { certificates, verification: { ok: false, error: (error as Error).message } };
  }
}

function remaining(notAfter: string, now: Date): string {
  const seconds = Math.round((new Date(notAfter).getTime() - now.getTime()) / 1000);
  const abs = Math.abs(seconds);
  const text = abs >= 86_400 ? `${Math.floor(abs / 86_400)}d${Math.floor((abs % 86_400) / 3600)}h` : abs >= 3600 ? `${Math.floor(abs / 3600)}h${Math.floor((abs % 3600) / 60)}m` : `${Math.floor(abs / 60)}m${abs % 60}s`;
  return seconds >= 0 ? `expires in ${text}` : `EXPIRED ${text} ago`;
}

/** The report as a person reads it. */
export function formatInspection(report: InspectionReport, now = new Date()): string {
  const lines: string[] = [];
  report.certificates.forEach((c, i) => {
    lines.push(`certificate ${i + 1} of ${report.certificates.length}${c.ca ? ' (CA)' : ''}`);
    lines.push(`  subject:    ${c.subject || '(empty)'}`);
    if (c.spiffeId) lines.push(`  SPIFFE ID:  ${c.spiffeId}`);
    lines.push(`  SANs:       ${c.subjectAltNames.join(', ') || '(none)'}`);
    lines.push(`  key:        ${c.key}`);
    lines.push(`  valid:      ${c.notBefore} → ${c.notAfter} (${remaining(c.notAfter, now)})`);
    lines.push(`  issuer:     ${c.issuer}`);
    lines.push(`  serial:     ${c.serialNumber}`);
    lines.push(`  sha256:     ${c.fingerprint256}`);
  });
  if (report.verification) {
    lines.push(report.verification.ok ? `verifies:   yes, ${report.verification.path.join(' → ')}` : `verifies:   NO — ${report.verification.error}`);
  }
  return `${lines.join('\n')}\n`;
}
