import { EventEmitter } from 'node:events';
import { X509Certificate } from 'node:crypto';
import { createSecureContext, type SecureContext } from 'node:tls';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { spiffeIdOf } from './peer-certificate.js';

/** A key, its certificate chain (leaf first) and the roots to verify peers against. */
export interface WorkloadCertificate {
  readonly keyPem: string;
  readonly chainPem: readonly string[];
  readonly trustBundlePem: readonly string[];
}

export interface WorkloadIdentityEvents {
  change: [WorkloadIdentity];
}

/**
 * The sidecar's current identity. Listeners and connectors read `secureContext` per new
 * connection, so a rotation applies to every new handshake at once while established
 * connections keep the context they started with — no connection is dropped.
 */
export class WorkloadIdentity extends EventEmitter<WorkloadIdentityEvents> {
  #current: { cert: WorkloadCertificate; context: SecureContext; spiffeId: string; notBefore: Date; notAfter: Date } | undefined;
  #extraRoots: readonly string[] = [];

  get ready(): boolean {
    return this.#current !== undefined;
  }

  get spiffeId(): string | undefined {
    return this.#current?.spiffeId;
  }

  get notAfter(): Date | undefined {
    return this.#current?.notAfter;
  }

  get notBefore(): Date | undefined {
    return this.#current?.notBefore;
  }

  get certificate(): WorkloadCertificate | undefined {
    return this.#current?.cert;
  }

  /** The TLS context for new connections (both directions). */
  get secureContext(): SecureContext {
    if (!this.#current) throw new ProxyError(ProxyErrorCodes.noCertificate, 'the sidecar has no workload certificate yet; it is still bootstrapping');
    return this.#current.context;
  }

  /** Options for `tls.Server#setSecureContext` / `createServer`. */
  serverContextOptions(): { key: string; cert: string; ca: string[] } {
    const c = this.certificate;
    if (!c) throw new ProxyError(ProxyErrorCodes.noCertificate, 'the sidecar has no workload certificate yet; it is still bootstrapping');
    return { key: c.keyPem, cert: c.chainPem.join(''), ca: this.trustBundle() };
  }

  trustBundle(): string[] {
    const roots = new Set([...(this.#current?.cert.trustBundlePem ?? []), ...this.#extraRoots]);
    return [...roots];
  }

  /** Installs a certificate (after checking it parses, matches the key and carries a SPIFFE ID). */
  set(cert: WorkloadCertificate): void {
    const leafPem = cert.chainPem[0];
    if (!leafPem) throw new ProxyError(ProxyErrorCodes.certificateIssue, 'the certificate chain is empty');
    let leaf: X509Certificate;
    try {
      leaf = new X509Certificate(leafPem);
    } catch (error) {
      throw new ProxyError(ProxyErrorCodes.certificateIssue, `the leaf certificate does not parse: ${(error as Error).message}`, { cause: error });
    }
    const spiffeId = spiffeIdOf({ subjectaltname: leaf.subjectAltName ?? '' });
    if (!spiffeId) throw new ProxyError(ProxyErrorCodes.certificateIssue, `the leaf certificate carries no single SPIFFE URI SAN (${leaf.subjectAltName ?? 'no SAN'})`);
    if (cert.trustBundlePem.length === 0 && this.#extraRoots.length === 0) throw new ProxyError(ProxyErrorCodes.certificateIssue, 'no trust bundle: peers could not be verified');
    const roots = [...new Set([...cert.trustBundlePem, ...this.#extraRoots])];
    let context: SecureContext;
    try {
      context = createSecureContext({ key: cert.keyPem, cert: cert.chainPem.join(''), ca: roots });
    } catch (error) {
      throw new ProxyError(ProxyErrorCodes.certificateIssue, `the key and certificate do not form a usable TLS context: ${(error as Error).message}`, { cause: error });
    }
    this.#current = { cert, context, spiffeId, notBefore: new Date(leaf.validFrom), notAfter: new Date(leaf.validTo) };
    this.emit('change', this);
  }

  /**
   * Adds roots announced by the controller (snapshot `trustBundle`), e.g. a new root
   * during root rotation, so peers holding certificates from it verify before this
   * sidecar's own certificate is renewed.
   */
  setAdditionalRoots(roots: readonly string[]): void {
    const same = roots.length === this.#extraRoots.length && roots.every((r, i) => r === this.#extraRoots[i]);
    if (same) return;
    this.#extraRoots = [...roots];
    if (this.#current) this.set(this.#current.cert);
  }
}
