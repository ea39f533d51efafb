import type { PeerCertificate } from 'node:tls';
import { experimental, type ServerCredentials } from '@grpc/grpc-js';
import { isSpiffeId } from '../mesh/index.js';

/** PEM material of one TLS identity plus the roots it trusts. */
export interface TlsIdentity {
  /** PEM private key. */
  readonly key: string | Buffer;
  /** PEM certificates, leaf first, then the issuing intermediate. */
  readonly certChain: string | Buffer;
  /** PEM root certificates (several during root rotation). */
  readonly trustBundle: string | Buffer;
}

const buf = (v: string | Buffer): Buffer => (typeof v === 'string' ? Buffer.from(v) : v);

/**
 * gRPC server credentials that REQUEST a client certificate but do not require one
 * (a first-certificate caller of the CA only has a join token), and whose certificate
 * and trust bundle can be swapped while the server runs (renewal, root rotation).
 * Services that need an identity call {@link callerSpiffeId}, which only returns one for
 * certificates that verified against the trust bundle.
 */
export class SwappableServerCredentials {
  private identity: experimental.IdentityCertificateUpdate;
  private ca: experimental.CaCertificateUpdate;
  private readonly identityListeners = new Set<experimental.IdentityCertificateUpdateListener>();
  private readonly caListeners = new Set<experimental.CaCertificateUpdateListener>();
  readonly credentials: ServerCredentials;

  constructor(tls: TlsIdentity) {
    this.identity = { certificate: buf(tls.certChain), privateKey: buf(tls.key) };
    this.ca = { caCertificate: buf(tls.trustBundle) };
    const provider: experimental.CertificateProvider = {
      addCaCertificateListener: (l) => {
        this.caListeners.add(l);
        // grpc-js registers its watcher only after adding listeners: deliver later.
        queueMicrotask(() => this.caListeners.has(l) && l(this.ca));
      },
      removeCaCertificateListener: (l) => void this.caListeners.delete(l),
      addIdentityCertificateListener: (l) => {
        this.identityListeners.add(l);
        queueMicrotask(() => this.identityListeners.has(l) && l(this.identity));
      },
      removeIdentityCertificateListener: (l) => void this.identityListeners.delete(l),
    };
    this.credentials = experimental.createCertificateProviderServerCredentials(provider, provider, false);
  }

  /** New connections use the new certificate and bundle; open ones keep theirs. */
  update(tls: TlsIdentity): void {
    this.identity = { certificate: buf(tls.certChain), privateKey: buf(tls.key) };
    this.ca = { caCertificate: buf(tls.trustBundle) };
    for (const l of this.caListeners) l(this.ca);
    for (const l of this.identityListeners) l(this.identity);
  }
}

/** The URI SANs of a certificate as Node reports them (`URI:spiffe://…, DNS:…`). */
export function uriSans(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): string[] {
  const text = cert?.subjectaltname;
  if (!text) return [];
  return text
    .split(/,\s*/)
    .filter((part) => part.startsWith('URI:'))
    .map((part) => part.slice(4));
}

/** The single SPIFFE ID of an X.509-SVID, or undefined when there is not exactly one. */
export function spiffeIdOfCertificate(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): string | undefined {
  const uris = uriSans(cert);
  if (uris.length !== 1) return undefined;
  const [uri] = uris;
  return uri && isSpiffeId(uri) ? uri : undefined;
}

/**
 * The caller's SPIFFE ID from its client certificate — only when the certificate
 * verified against the server's trust bundle (grpc-js reports no peer certificate
 * otherwise).
 */
export function callerSpiffeId(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } | null }): string | undefined {
  const context = call.getAuthContext();
  return spiffeIdOfCertificate(context?.sslPeerCertificate);
}
