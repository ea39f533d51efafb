import type { PeerCertificate } from 'node:tls';
import { spiffeIdFromSubjectAltName } from '../ca/index.js';

/** PEM material of one TLS identity plus the roots it trusts. */
export interface TlsIdentity {
  /** PEM private key. */
  readonly key: string | Buffer;
  /** PEM certificates, leaf first, then the issuing intermediate. */
  readonly certChain: string | Buffer;
  /** PEM root certificates (several during root rotation). */
  readonly trustBundle: string | Buffer;
}

/** The single SPIFFE ID of an X.509-SVID, or undefined when there is not exactly one. */
export function spiffeIdOfCertificate(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): string | undefined {
  return spiffeIdFromSubjectAltName(cert?.subjectaltname);
}

/**
 * The caller's SPIFFE ID from its client certificate — only when the certificate
 * verified against the server's trust bundle (grpc-js reports no peer certificate
 * otherwise). The server requests but does not require client certificates (the CA's
 * first-certificate callers only hold a join token), so every service that needs an
 * identity must call this and refuse with UNAUTHENTICATED when it returns undefined.
 */
export function callerSpiffeId(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null }): string | undefined {
  return spiffeIdOfCertificate(call.getAuthContext()?.sslPeerCertificate);
}
