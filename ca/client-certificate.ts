import { X509Certificate, type KeyObject } from 'node:crypto';
import { CaError, CaErrorCodes } from './errors.js';
import { LeafTemplate, spkiOf } from './certificate-profile.js';
import { DEFAULT_KEY_TYPE, generatePrivateKey, isRsa, loadPrivateKey, privateKeyPem, type KeyType } from './keys.js';
import { pemDecodeOne, pemEncode } from './pem.js';

/** The longest client certificate `issueClientCertificate` makes (CA/B forum's old limit). */
export const MAX_CLIENT_CERTIFICATE_DAYS = 825;

export interface ClientCertificateOptions {
  /** A CA outside the mesh (e.g. the one in etcd's `--trusted-ca-file`): its certificate… */
  readonly caCertificatePem: string;
  /** …and its private key. */
  readonly caPrivateKeyPem: string;
  /** Subject CN — what etcd's `--client-cert-auth` takes as the user name. */
  readonly commonName: string;
  /** URI SAN: whose component holds the certificate (e.g. a peer's federation identity). */
  readonly spiffeId: string;
  readonly days: number;
  readonly keyType?: KeyType;
  readonly now?: Date;
}

export interface ClientCertificate {
  readonly privateKeyPem: string;
  readonly certificatePem: string;
  readonly notAfter: Date;
}

/**
 * A fresh key and a leaf certificate (CN + one URI SAN, EKU serverAuth+clientAuth) signed
 * by a CA that is not the mesh's — for credentials of infrastructure such as a peer's etcd
 * user. The CA certificate and key are checked first (a CA, in validity, key matching), so a
 * wrong file is named before anything is written.
 */
export async function issueClientCertificate(options: ClientCertificateOptions): Promise<ClientCertificate> {
  const now = options.now ?? new Date();
  if (!Number.isInteger(options.days) || options.days < 1 || options.days > MAX_CLIENT_CERTIFICATE_DAYS) {
    throw new CaError(CaErrorCodes.ttlInvalid, `a client certificate's validity must be a whole number of days from 1 to ${MAX_CLIENT_CERTIFICATE_DAYS}; got ${options.days}`);
  }
  if (!/^[A-Za-z0-9._@-]{1,64}$/.test(options.commonName)) {
    throw new CaError(CaErrorCodes.identityInvalid, `common name "${options.commonName}" must be 1-64 letters, digits, ".", "_", "@" or "-"`);
  }
  const { caDer, caKey, notAfter } = checkedIssuer(options.caCertificatePem, options.caPrivateKeyPem, now, options.days, 'client CA');
  const key = await generatePrivateKey(options.keyType ?? DEFAULT_KEY_TYPE);
  const der = new LeafTemplate(caDer, caKey).sign({
    spiffeId: options.spiffeId,
    subjectPublicKeyInfo: spkiOf(key),
    rsa: isRsa(key),
    notBefore: new Date(now.getTime() - 60_000),
    notAfter,
    commonName: options.commonName,
  });
  return { privateKeyPem: privateKeyPem(key), certificatePem: pemEncode('CERTIFICATE', der), notAfter };
}

/**
 * Parses and checks an issuing CA (a CA, key matching, valid now, outliving `days`), naming
 * it `what` in errors, so a wrong file is named before anything is made or written.
 */
export function checkedIssuer(caCertificatePem: string, caPrivateKeyPem: string, now: Date, days: number, what: string): { caDer: Buffer; caKey: KeyObject; notAfter: Date } {
  const caDer = pemDecodeOne(caCertificatePem, 'CERTIFICATE', `${what} certificate`);
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(caDer);
  } catch (error) {
    throw new CaError(CaErrorCodes.caInvalid, `the ${what} certificate does not parse: ${(error as Error).message}`, { cause: error });
  }
  if (!ca.ca) throw new CaError(CaErrorCodes.caInvalid, `the ${what} certificate (${ca.subject.replace(/\n/g, ', ')}) is not a CA (basicConstraints CA:TRUE); pass the CA that signs etcd's client certificates`);
  const caKey = loadPrivateKey(caPrivateKeyPem, `${what} key`);
  if (!ca.checkPrivateKey(caKey)) throw new CaError(CaErrorCodes.caInvalid, `the ${what} key does not belong to the ${what} certificate (${ca.subject.replace(/\n/g, ', ')}); pass the key it was made with`);
  const caNotAfter = new Date(ca.validTo);
  if (now < new Date(ca.validFrom) || now >= caNotAfter) throw new CaError(CaErrorCodes.caInvalid, `the ${what} certificate is valid from ${ca.validFrom} to ${ca.validTo}, not now`);
  const notAfter = new Date(now.getTime() + days * 86_400_000);
  if (notAfter > caNotAfter) {
    const most = Math.floor((caNotAfter.getTime() - now.getTime()) / 86_400_000);
    throw new CaError(CaErrorCodes.ttlAboveMaximum, `the ${what} expires on ${caNotAfter.toISOString()}, before the ${days} days asked; pick at most ${most} day${most === 1 ? '' : 's'} or renew the CA`);
  }
  return { caDer, caKey, notAfter };
}
