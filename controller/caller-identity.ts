import type { PeerCertificate } from 'node:tls';
import { spiffeIdOfCertificate } from '../api-client/index.js';

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
