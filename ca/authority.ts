import { X509Certificate, randomBytes, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { clusterNameProblem, parseSpiffeId, trustDomainProblem } from '../mesh/index.js';
import { Extensions, LeafTemplate, distinguishedName, issuerFields, keyIdentifier, randomSerial, signTbs, spkiOf, tbsCertificate } from './certificate-profile.js';
import { parseAndVerifyCsr } from './csr.js';
import { CaError, CaErrorCodes } from './errors.js';
import { encodePkcs12, generatePkcs12Password } from './pkcs12.js';
import { DEFAULT_KEY_TYPE, generatePrivateKey, isRsa, loadPrivateKey, privateKeyPem, signatureSchemeFor, type KeyType } from './keys.js';
import { pemEncode, splitCertificates } from './pem.js';
import { buildTrustBundle, trustDomainOfCa, verifyCaChain } from './trust-bundle.js';

export const DAY_SECONDS = 86_400;
export const Defaults = {
  rootTtlSeconds: 10 * 365 * DAY_SECONDS,
  intermediateTtlSeconds: 365 * DAY_SECONDS,
  workloadTtlSeconds: DAY_SECONDS,
  /** The longest workload certificate the CA signs unless configured otherwise. */
  maxWorkloadTtlSeconds: 7 * DAY_SECONDS,
  /** notBefore is backdated by this much so that peers with slightly slow clocks accept a fresh certificate. */
  backdateSeconds: 60,
} as const;

/** Names of the files a CA directory holds. The intermediate's match ControllerConfig.caDir. */
export const CaFiles = {
  rootKey: 'root-key.pem',
  rootCert: 'root-cert.pem',
  caKey: 'ca-key.pem',
  caCert: 'ca-cert.pem',
  certChain: 'cert-chain.pem',
  trustBundle: 'trust-bundle.pem',
  workloadKey: 'key.pem',
  workloadCert: 'cert.pem',
  /** PKCS#12 keystore (key, chain, trust bundle) for JVM and .NET workloads. */
  workloadPkcs12: 'workload.p12',
  /** The keystore's password, when Causeway generated it. */
  workloadPkcs12Password: 'workload.p12.password',
} as const;

/** An offline root: signs intermediates only. */
export interface RootCa {
  readonly kind: 'root';
  readonly trustDomain: string;
  readonly privateKey: KeyObject;
  readonly certificatePem: string;
  readonly certificate: X509Certificate;
}

/** A cluster's intermediate: signs workload certificates. */
export interface IntermediateCa {
  readonly kind: 'intermediate';
  readonly trustDomain: string;
  readonly cluster: string;
  readonly privateKey: KeyObject;
  readonly certificatePem: string;
  readonly certificate: X509Certificate;
  /** The intermediate, then the root (or roots) above it. */
  readonly certChainPem: string;
  /** Every root the mesh trusts (several during a root rotation). */
  readonly trustBundlePem: string;
  /** Issues a workload key and certificate for tooling, static hosts and tests. */
  issue(options: IssueOptions): Promise<WorkloadCertificate>;
  /** Signs a CSR after checking it (the signing service's hot path). */
  signCsr(csrPem: string, options?: SignCsrOptions): SignedCertificate;
}

export interface IssueOptions {
  readonly spiffeId: string;
  /** Default 24 h. Above `maxTtlSeconds` it is refused (`CW_CA_TTL_ABOVE_MAXIMUM`); capped by the intermediate's own expiry. */
  readonly ttlSeconds?: number;
  /** Default {@link Defaults.maxWorkloadTtlSeconds}, the signing service's maximum too. */
  readonly maxTtlSeconds?: number;
  readonly keyType?: KeyType;
  /** Subject CN, for tools that key on it (etcd user names); the signing service never sets one. */
  readonly commonName?: string;
  /** For tests: the issuance instant (default now). */
  readonly now?: Date;
}

export interface SignCsrOptions {
  /** The identity the caller authenticated as; the CSR's SPIFFE ID must equal it. */
  readonly expectedSpiffeId?: string;
  /** 0 or undefined = default. */
  readonly ttlSeconds?: number;
  readonly defaultTtlSeconds?: number;
  readonly maxTtlSeconds?: number;
  /** What to do with a request above maxTtlSeconds: shorten it (default, as api/ca.proto says) or refuse it. */
  readonly aboveMaximum?: 'cap' | 'refuse';
  readonly allowedKeyTypes?: readonly KeyType[];
  readonly now?: Date;
}

export interface SignedCertificate {
  readonly spiffeId: string;
  /** The leaf alone. */
  readonly certificatePem: string;
  /** Leaf first, then the issuing intermediate. */
  readonly certChain: readonly string[];
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface WorkloadCertificate extends SignedCertificate {
  readonly privateKeyPem: string;
  /** Leaf + intermediate, concatenated: what a TLS server or client presents as `cert`. */
  readonly certChainPem: string;
  readonly trustBundlePem: string;
}

function checkTrustDomain(trustDomain: string): void {
  const problem = trustDomainProblem(trustDomain);
  if (problem) throw new CaError(CaErrorCodes.identityInvalid, `--trust-domain: ${problem}`);
}

function checkTtl(name: string, ttlSeconds: number): void {
  if (!Number.isInteger(ttlSeconds) || ttlSeconds <= 0) throw new CaError(CaErrorCodes.ttlInvalid, `${name} must be a positive whole number of seconds (got ${ttlSeconds})`);
}

/** `604800` → `7d`, `5400` → `90m`: how a duration flag would spell it. */
export function formatTtl(seconds: number): string {
  if (seconds % DAY_SECONDS === 0) return `${seconds / DAY_SECONDS}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

function shortId(): string {
  return randomBytes(3).toString('hex');
}

const later = (from: Date, seconds: number) => new Date(from.getTime() + seconds * 1000);

/** Creates a self-signed root for a trust domain (ECDSA P-256, 10 years unless told otherwise). */
export async function createRootCa(options: { trustDomain: string; keyType?: KeyType; ttlSeconds?: number; now?: Date }): Promise<RootCa> {
  checkTrustDomain(options.trustDomain);
  const ttlSeconds = options.ttlSeconds ?? Defaults.rootTtlSeconds;
  checkTtl('root ttlSeconds', ttlSeconds);
  const privateKey = await generatePrivateKey(options.keyType ?? DEFAULT_KEY_TYPE);
  const now = options.now ?? new Date();
  const spki = spkiOf(privateKey);
  const keyId = keyIdentifier(spki);
  // A unique name per root: during a rotation old and new roots coexist in one bundle.
  const name = distinguishedName([['O', 'Causeway'], ['OU', options.trustDomain], ['CN', `Causeway root CA ${now.toISOString().slice(0, 10)} ${shortId()}`]]);
  const tbs = tbsCertificate({
    serial: randomSerial(),
    signatureAlgorithm: signatureAlgorithm(privateKey),
    issuer: name,
    notBefore: later(now, -Defaults.backdateSeconds),
    notAfter: later(now, ttlSeconds),
    subject: name,
    subjectPublicKeyInfo: spki,
    extensions: [Extensions.caBasicConstraints(1), Extensions.caKeyUsage(), Extensions.subjectKeyIdentifier(keyId), Extensions.uriSubjectAltName(`spiffe://${options.trustDomain}`, false)],
  });
  const certificatePem = pemEncode('CERTIFICATE', signTbs(tbs, privateKey));
  return { kind: 'root', trustDomain: options.trustDomain, privateKey, certificatePem, certificate: new X509Certificate(certificatePem) };
}

const signatureAlgorithm = (key: KeyObject): Buffer => signatureSchemeFor(key).algorithmIdentifier;

/**
 * Creates a cluster's intermediate, signed by the root: `pathlen:0` and a URI name
 * constraint admitting only `spiffe://<trust-domain>/…` (1 year unless told otherwise).
 * `trustBundlePem` defaults to the root alone; pass old+new roots during a rotation.
 */
export async function createIntermediateCa(
  root: RootCa,
  options: { cluster: string; keyType?: KeyType; ttlSeconds?: number; trustBundlePem?: string; now?: Date },
): Promise<IntermediateCa> {
  const clusterProblem = clusterNameProblem(options.cluster);
  if (clusterProblem) throw new CaError(CaErrorCodes.caInvalid, `--cluster: ${clusterProblem}`);
  const now = options.now ?? new Date();
  const ttlSeconds = options.ttlSeconds ?? Defaults.intermediateTtlSeconds;
  checkTtl('intermediate ttlSeconds', ttlSeconds);
  const rootNotAfter = new Date(root.certificate.validTo);
  const notAfter = new Date(Math.min(later(now, ttlSeconds).getTime(), rootNotAfter.getTime()));
  const privateKey = await generatePrivateKey(options.keyType ?? DEFAULT_KEY_TYPE);
  const spki = spkiOf(privateKey);
  const rootFields = issuerFields(root.certificate.raw);
  const tbs = tbsCertificate({
    serial: randomSerial(),
    signatureAlgorithm: signatureAlgorithm(root.privateKey),
    issuer: rootFields.subject,
    notBefore: later(now, -Defaults.backdateSeconds),
    notAfter,
    subject: distinguishedName([['O', 'Causeway'], ['OU', options.cluster], ['CN', `Causeway intermediate CA ${options.cluster} ${shortId()}`]]),
    subjectPublicKeyInfo: spki,
    extensions: [
      Extensions.caBasicConstraints(0),
      Extensions.caKeyUsage(),
      Extensions.subjectKeyIdentifier(keyIdentifier(spki)),
      Extensions.authorityKeyIdentifier(rootFields.keyIdentifier),
      Extensions.uriNameConstraint(root.trustDomain),
      Extensions.uriSubjectAltName(`spiffe://${root.trustDomain}`, false),
    ],
  });
  const certificatePem = pemEncode('CERTIFICATE', signTbs(tbs, root.privateKey));
  return intermediateFrom({
    cluster: options.cluster,
    privateKey,
    certificatePem,
    certChainPem: certificatePem + root.certificatePem,
    trustBundlePem: buildTrustBundle([options.trustBundlePem ?? root.certificatePem]),
  });
}

function intermediateFrom(parts: { cluster: string; privateKey: KeyObject; certificatePem: string; certChainPem: string; trustBundlePem: string }): IntermediateCa {
  const certificate = new X509Certificate(parts.certificatePem);
  const trustDomain = trustDomainOfCa(certificate);
  if (!trustDomain) throw new CaError(CaErrorCodes.caInvalid, `${(certificate.subject ?? '').replace(/\n/g, ', ')} has no spiffe://<trust-domain> URI SAN; create intermediates with \`causeway ca intermediate\``);
  if (!certificate.ca) throw new CaError(CaErrorCodes.caInvalid, `${(certificate.subject ?? '').replace(/\n/g, ', ')} is not a CA certificate`);
  if (!certificate.checkPrivateKey(parts.privateKey)) throw new CaError(CaErrorCodes.caInvalid, 'the intermediate key does not match the intermediate certificate; keep ca-key.pem and ca-cert.pem from the same `causeway ca intermediate` run');
  const template = new LeafTemplate(certificate.raw, parts.privateKey);
  const notAfterLimit = new Date(certificate.validTo);
  const chainTail = parts.certificatePem;

  const signLeaf = (spiffeId: string, spki: Buffer, rsa: boolean, ttlSeconds: number, now: Date, commonName?: string): SignedCertificate => {
    const notBefore = later(now, -Defaults.backdateSeconds);
    // A leaf never outlives its issuer: verifiers would reject it from that moment on anyway.
    const notAfter = new Date(Math.min(later(now, ttlSeconds).getTime(), notAfterLimit.getTime()));
    const certificatePem = pemEncode('CERTIFICATE', template.sign({ spiffeId, subjectPublicKeyInfo: spki, rsa, notBefore, notAfter, ...(commonName === undefined ? {} : { commonName }) }));
    return { spiffeId, certificatePem, certChain: [certificatePem, chainTail], notBefore, notAfter };
  };

  const checkIdentity = (spiffeId: string): void => {
    let parsed;
    try {
      parsed = parseSpiffeId(spiffeId);
    } catch (error) {
      throw new CaError(CaErrorCodes.identityInvalid, `${(error as Error).message}; a workload certificate names spiffe://${trustDomain}/ns/<namespace>/sa/<service-account>`, { cause: error });
    }
    if (parsed.trustDomain !== trustDomain) throw new CaError(CaErrorCodes.identityInvalid, `${spiffeId} is outside trust domain ${trustDomain}, the only one this CA signs for`);
  };

  return {
    kind: 'intermediate',
    trustDomain,
    cluster: parts.cluster,
    privateKey: parts.privateKey,
    certificatePem: parts.certificatePem,
    certificate,
    certChainPem: parts.certChainPem,
    trustBundlePem: parts.trustBundlePem,
    async issue(options) {
      checkIdentity(options.spiffeId);
      const ttlSeconds = options.ttlSeconds ?? Defaults.workloadTtlSeconds;
      checkTtl('ttlSeconds', ttlSeconds);
      // The same maximum as the signing service's: a tool must not hand out what the CA would not.
      const maxTtl = options.maxTtlSeconds ?? Defaults.maxWorkloadTtlSeconds;
      if (ttlSeconds > maxTtl) {
        throw new CaError(CaErrorCodes.ttlAboveMaximum, `${formatTtl(ttlSeconds)} is above the ${formatTtl(maxTtl)} maximum of a workload certificate; ask for ${formatTtl(maxTtl)} or less (ca/README.md "Profiles")`);
      }
      const key = await generatePrivateKey(options.keyType ?? DEFAULT_KEY_TYPE);
      const signed = signLeaf(options.spiffeId, spkiOf(key), isRsa(key), ttlSeconds, options.now ?? new Date(), options.commonName);
      return { ...signed, privateKeyPem: privateKeyPem(key), certChainPem: signed.certChain.join(''), trustBundlePem: parts.trustBundlePem };
    },
    signCsr(csrPem, options = {}) {
      const csr = parseAndVerifyCsr(csrPem);
      if (csr.uris.length !== 1 || csr.otherSubjectAltNames > 0) {
        throw new CaError(CaErrorCodes.identityInvalid, `the CSR must carry exactly one URI SAN (the SPIFFE ID) and no other SAN; it has ${csr.uris.length} URI and ${csr.otherSubjectAltNames} other`);
      }
      const spiffeId = csr.uris[0] as string;
      checkIdentity(spiffeId);
      if (options.expectedSpiffeId !== undefined && spiffeId !== options.expectedSpiffeId) {
        throw new CaError(CaErrorCodes.identityMismatch, `the CSR asks for ${spiffeId} but the caller authenticated as ${options.expectedSpiffeId}; request a certificate for your own identity`);
      }
      const keyType = csr.keyType;
      const allowed = options.allowedKeyTypes ?? DEFAULT_ALLOWED_KEY_TYPES;
      if (keyType === undefined || !allowed.includes(keyType)) {
        throw new CaError(CaErrorCodes.keyNotAllowed, `the CSR's key (${csr.keyDescription}) is not allowed; use one of ${allowed.join(', ')}`);
      }
      const ttlSeconds = resolveTtl(options);
      return signLeaf(spiffeId, csr.subjectPublicKeyInfo, keyType.startsWith('rsa'), ttlSeconds, options.now ?? new Date());
    },
  };
}

export const DEFAULT_ALLOWED_KEY_TYPES: readonly KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'];

function resolveTtl(options: SignCsrOptions): number {
  const requested = options.ttlSeconds ?? 0;
  const defaultTtl = options.defaultTtlSeconds ?? Defaults.workloadTtlSeconds;
  const maxTtl = options.maxTtlSeconds ?? Defaults.maxWorkloadTtlSeconds;
  if (!Number.isInteger(requested) || requested < 0) throw new CaError(CaErrorCodes.ttlInvalid, `validity_seconds must be 0 (the default, ${defaultTtl}) or a positive whole number (got ${requested})`);
  const ttl = requested === 0 ? Math.min(defaultTtl, maxTtl) : requested;
  if (ttl > maxTtl) {
    if (options.aboveMaximum === 'refuse') throw new CaError(CaErrorCodes.ttlAboveMaximum, `validity_seconds ${ttl} is above this CA's maximum of ${maxTtl}; ask for ${maxTtl} or less`);
    return maxTtl;
  }
  return ttl;
}

export async function writeSecret(path: string, text: string | Buffer): Promise<void> {
  // mode applies only on creation; chmod covers an existing file.
  await writeFile(path, text, { mode: 0o600 });
  await chmod(path, 0o600);
}

async function readText(dir: string, name: string, what: string): Promise<string> {
  try {
    return await readFile(join(dir, name), 'utf8');
  } catch (error) {
    throw new CaError(CaErrorCodes.caFilesUnreadable, `cannot read the ${what} ${join(dir, name)}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; check the directory (created by \`causeway ca init\` / \`causeway ca intermediate\`)`, { cause: error });
  }
}

export interface RootCaFiles {
  readonly keyFile: string;
  readonly certFile: string;
  readonly trustBundleFile: string;
}

/** Writes root-key.pem (0600), root-cert.pem and trust-bundle.pem (the root alone). */
export async function writeRootCa(root: RootCa, dir: string): Promise<RootCaFiles> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = { keyFile: join(dir, CaFiles.rootKey), certFile: join(dir, CaFiles.rootCert), trustBundleFile: join(dir, CaFiles.trustBundle) };
  await writeSecret(files.keyFile, privateKeyPem(root.privateKey));
  await writeFile(files.certFile, root.certificatePem);
  await writeFile(files.trustBundleFile, root.certificatePem);
  return files;
}

export async function loadRootCa(dir: string): Promise<RootCa> {
  const certificatePem = await readText(dir, CaFiles.rootCert, 'root certificate');
  const privateKey = loadPrivateKey(await readText(dir, CaFiles.rootKey, 'root key'), 'root key');
  const certificate = new X509Certificate(certificatePem);
  const trustDomain = trustDomainOfCa(certificate);
  if (!trustDomain || !certificate.ca) throw new CaError(CaErrorCodes.caInvalid, `${join(dir, CaFiles.rootCert)} is not a Causeway root (no spiffe://<trust-domain> URI SAN or not a CA)`);
  if (!certificate.checkPrivateKey(privateKey)) throw new CaError(CaErrorCodes.caInvalid, `${join(dir, CaFiles.rootKey)} does not match ${join(dir, CaFiles.rootCert)}`);
  return { kind: 'root', trustDomain, privateKey, certificatePem, certificate };
}

/** The files of a CA or workload directory: a key (mode 0600), its certificate, the chain and the trust bundle. */
export interface CredentialFiles {
  readonly keyFile: string;
  readonly certFile: string;
  readonly certChainFile: string;
  readonly trustBundleFile: string;
}
export type IntermediateCaFiles = CredentialFiles;
export type WorkloadCertificateFiles = CredentialFiles;

async function writeCredentials(dir: string, names: { key: string; cert: string }, pems: { key: string; cert: string; chain: string; bundle: string }): Promise<CredentialFiles> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const files = { keyFile: join(dir, names.key), certFile: join(dir, names.cert), certChainFile: join(dir, CaFiles.certChain), trustBundleFile: join(dir, CaFiles.trustBundle) };
  await writeSecret(files.keyFile, pems.key);
  await writeFile(files.certFile, pems.cert);
  await writeFile(files.certChainFile, pems.chain);
  await writeFile(files.trustBundleFile, pems.bundle);
  return files;
}

/** Writes ca-key.pem (0600), ca-cert.pem, cert-chain.pem (intermediate + root) and trust-bundle.pem. */
export function writeIntermediateCa(ca: IntermediateCa, dir: string): Promise<IntermediateCaFiles> {
  return writeCredentials(dir, { key: CaFiles.caKey, cert: CaFiles.caCert }, { key: privateKeyPem(ca.privateKey), cert: ca.certificatePem, chain: ca.certChainPem, bundle: ca.trustBundlePem });
}

/** Loads an intermediate written by {@link writeIntermediateCa} (a controller's `caDir`). */
export async function loadIntermediateCa(dir: string): Promise<IntermediateCa> {
  const certificatePem = await readText(dir, CaFiles.caCert, 'intermediate certificate');
  const privateKey = loadPrivateKey(await readText(dir, CaFiles.caKey, 'intermediate key'), 'intermediate key');
  const certChainPem = await readText(dir, CaFiles.certChain, 'certificate chain');
  const trustBundlePem = buildTrustBundle([await readText(dir, CaFiles.trustBundle, 'trust bundle')]);
  // Files of two different runs (a copy caught half-way) would verify one intermediate and sign with another.
  const chainHead = splitCertificates(certChainPem, join(dir, CaFiles.certChain))[0];
  if (!chainHead || new X509Certificate(chainHead).fingerprint256 !== new X509Certificate(certificatePem).fingerprint256) {
    throw new CaError(CaErrorCodes.caInvalid, `${join(dir, CaFiles.certChain)} does not start with ${join(dir, CaFiles.caCert)}; keep the files of one \`causeway ca intermediate\` run together`);
  }
  try {
    verifyCaChain(certChainPem, trustBundlePem);
  } catch (error) {
    // Every certificate this CA issued would be refused by peers: say so now, not at the first handshake.
    throw new CaError(CaErrorCodes.caInvalid, `${join(dir, CaFiles.certChain)} does not chain to a root in ${join(dir, CaFiles.trustBundle)}: ${(error as Error).message}. During a root rotation the bundle must keep the old root until this intermediate is replaced`, { cause: error });
  }
  const ou = /^OU=(.*)$/m.exec(new X509Certificate(certificatePem).subject ?? '')?.[1];
  if (!ou) throw new CaError(CaErrorCodes.caInvalid, `${join(dir, CaFiles.caCert)} names no cluster (subject OU); create it with \`causeway ca intermediate\``);
  return intermediateFrom({ cluster: ou, privateKey, certificatePem, certChainPem, trustBundlePem });
}

/**
 * Writes workload.p12 (0600): key, chain and trust bundle for a JVM or .NET workload.
 * Without a password, one is generated and written to workload.p12.password (0600).
 */
export async function writeWorkloadPkcs12(cert: WorkloadCertificate, dir: string, password?: string): Promise<{ pkcs12File: string; passwordFile: string | undefined }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const secret = password ?? generatePkcs12Password();
  const pkcs12File = join(dir, CaFiles.workloadPkcs12);
  await writeSecret(pkcs12File, encodePkcs12({ privateKeyPem: cert.privateKeyPem, certChain: cert.certChain, trustBundlePem: cert.trustBundlePem, password: secret }));
  let passwordFile: string | undefined;
  if (password === undefined) {
    passwordFile = join(dir, CaFiles.workloadPkcs12Password);
    await writeSecret(passwordFile, `${secret}\n`);
  }
  return { pkcs12File, passwordFile };
}

/** Writes key.pem (0600), cert.pem (leaf), cert-chain.pem (leaf + intermediate) and trust-bundle.pem. */
export function writeWorkloadCertificate(cert: WorkloadCertificate, dir: string): Promise<WorkloadCertificateFiles> {
  return writeCredentials(dir, { key: CaFiles.workloadKey, cert: CaFiles.workloadCert }, { key: cert.privateKeyPem, cert: cert.certificatePem, chain: cert.certChainPem, bundle: cert.trustBundlePem });
}
