import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { dnsNameProblem } from '../mesh/index.js';
import { Extensions, distinguishedName, issuerFields, keyIdentifier, randomSerial, signTbs, spkiOf, tbsCertificate } from './certificate-profile.js';
import { MAX_CLIENT_CERTIFICATE_DAYS, checkedIssuer } from './client-certificate.js';
import { CaError, CaErrorCodes } from './errors.js';
import { DEFAULT_KEY_TYPE, generatePrivateKey, privateKeyPem, signatureSchemeFor, type KeyType } from './keys.js';
import { pemEncode } from './pem.js';

/**
 * Certificates for infrastructure outside the mesh — e.g. one etcd's CA, its server and its
 * clients — made with the same DER profile code as the mesh's, but never chaining to the
 * mesh root: with `--client-cert-auth` every certificate such a CA signs is a login, so it
 * must sign nothing else (ca/README.md).
 */

const BACKDATE_MS = 60_000;

export interface InfrastructureKeyPair {
  readonly privateKeyPem: string;
  readonly certificatePem: string;
  readonly notAfter: Date;
}

/** A CA outlives the leaves it signs (those are capped at {@link MAX_CLIENT_CERTIFICATE_DAYS}). */
export const MAX_INFRASTRUCTURE_CA_DAYS = 7300;

function checkDays(days: number, max = MAX_CLIENT_CERTIFICATE_DAYS): void {
  if (!Number.isInteger(days) || days < 1 || days > max) {
    throw new CaError(CaErrorCodes.ttlInvalid, `a validity must be a whole number of days from 1 to ${max}; got ${days}`);
  }
}

/** A self-signed CA (`pathlen:0`: it signs leaves only) named `commonName`, with no SPIFFE name. */
export async function createInfrastructureCa(options: { commonName: string; days: number; keyType?: KeyType; now?: Date }): Promise<InfrastructureKeyPair> {
  checkDays(options.days, MAX_INFRASTRUCTURE_CA_DAYS);
  const now = options.now ?? new Date();
  const key = await generatePrivateKey(options.keyType ?? DEFAULT_KEY_TYPE);
  const spki = spkiOf(key);
  const name = distinguishedName([['O', 'Causeway'], ['CN', options.commonName]]);
  const notAfter = new Date(now.getTime() + options.days * 86_400_000);
  const tbs = tbsCertificate({
    serial: randomSerial(),
    signatureAlgorithm: signatureSchemeFor(key).algorithmIdentifier,
    issuer: name,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter,
    subject: name,
    subjectPublicKeyInfo: spki,
    extensions: [Extensions.caBasicConstraints(0), Extensions.caKeyUsage(), Extensions.subjectKeyIdentifier(keyIdentifier(spki))],
  });
  return { privateKeyPem: privateKeyPem(key), certificatePem: pemEncode('CERTIFICATE', signTbs(tbs, key)), notAfter };
}

export interface InfrastructureLeafOptions {
  readonly caCertificatePem: string;
  readonly caPrivateKeyPem: string;
  readonly commonName: string;
  /** `server`: EKU serverAuth, with `hosts` as SANs; `client`: EKU clientAuth only. */
  readonly usage: 'server' | 'client';
  /** DNS names and IP addresses the server answers as (server leaves only). */
  readonly hosts?: readonly string[];
  readonly days: number;
  readonly keyType?: KeyType;
  readonly now?: Date;
}

/** Encodes an IP address for an iPAddress SAN; undefined for a string that is not one. */
function ipBytes(text: string): Buffer | undefined {
  const family = isIP(text);
  if (family === 4) return Buffer.from(text.split('.').map(Number));
  if (family !== 6) return undefined;
  if (text.includes('.')) throw new CaError(CaErrorCodes.identityInvalid, `host "${text}": write an IPv4-mapped address as plain IPv4`);
  // isIP allows at most one "::"; it stands for as many zero groups as are missing.
  const [head = '', tail] = text.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  const bytes = Buffer.alloc(16);
  groups.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  return bytes;
}

/** A leaf signed by an infrastructure CA (checked first: a CA, key matching, valid, outliving `days`). */
export async function issueInfrastructureCertificate(options: InfrastructureLeafOptions): Promise<InfrastructureKeyPair> {
  checkDays(options.days);
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(options.commonName)) {
    throw new CaError(CaErrorCodes.identityInvalid, `common name "${options.commonName}" must be 1-64 letters, digits, ".", "_", "@" or "-"`);
  }
  const dnsNames: string[] = [];
  const ipAddresses: Buffer[] = [];
  for (const host of options.hosts ?? []) {
    const ip = ipBytes(host);
    if (ip) ipAddresses.push(ip);
    else {
      const problem = dnsNameProblem(host);
      if (problem) throw new CaError(CaErrorCodes.identityInvalid, `host "${host}" is neither an IP address nor a DNS name: ${problem}`);
      dnsNames.push(host);
    }
  }
  if (options.usage === 'client' && dnsNames.length + ipAddresses.length > 0) throw new CaError(CaErrorCodes.identityInvalid, 'a client certificate names no hosts');
  if (options.usage === 'server' && dnsNames.length + ipAddresses.length === 0) throw new CaError(CaErrorCodes.identityInvalid, 'a server certificate needs at least one host name or address');
  const now = options.now ?? new Date();
  const { caDer, caKey, notAfter } = checkedIssuer(options.caCertificatePem, options.caPrivateKeyPem, now, options.days, 'issuing CA');
  const issuer = issuerFields(caDer);
  const key = await generatePrivateKey(options.keyType ?? DEFAULT_KEY_TYPE);
  const spki = spkiOf(key);
  const rsa = key.asymmetricKeyType === 'rsa';
  const extensions = [
    Extensions.leafBasicConstraints(),
    Extensions.leafKeyUsage(rsa),
    Extensions.extKeyUsage([options.usage === 'server' ? 'serverAuth' : 'clientAuth']),
    Extensions.subjectKeyIdentifier(keyIdentifier(spki)),
    Extensions.authorityKeyIdentifier(issuer.keyIdentifier),
    ...(options.usage === 'server' ? [Extensions.hostSubjectAltName(dnsNames, ipAddresses)] : []),
  ];
  const tbs = tbsCertificate({
    serial: randomSerial(),
    signatureAlgorithm: signatureSchemeFor(caKey).algorithmIdentifier,
    issuer: issuer.subject,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter,
    subject: distinguishedName([['CN', options.commonName]]),
    subjectPublicKeyInfo: spki,
    extensions,
  });
  const certificatePem = pemEncode('CERTIFICATE', signTbs(tbs, caKey));
  new X509Certificate(certificatePem); // parses back, or throws here rather than at a TLS peer
  return { privateKeyPem: privateKeyPem(key), certificatePem, notAfter };
}
