import { X509Certificate, createPrivateKey } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Metadata, credentials as grpcCredentials, status, type ChannelCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { Gauge, type Registry } from 'prom-client';
import { Backoff, controllerIdentity, fallbackControllerServerName, grpcFailure, logger, parseSpiffeId, type Logger } from '../mesh/index.js';
import { CaFiles, Defaults } from './authority.js';
import { createCsr } from './csr.js';
import { CaError, CaErrorCodes, type CaErrorCode } from './errors.js';
import { encodePkcs12 } from './pkcs12.js';
import { DEFAULT_KEY_TYPE, generatePrivateKey, privateKeyPem, type KeyType } from './keys.js';
import { splitCertificates } from './pem.js';
import { CertificateServiceClient, type CreateCertificateRequest, type CreateCertificateResponse } from '../api-client/protos.js';
import { ERROR_CODE_METADATA_KEY } from './certificate-service.js';
import { buildTrustBundle, spiffeIdFromSubjectAltName, verifyCertificateChain } from './trust-bundle.js';

/** How to reach and trust a cluster's signing service. */
export interface SigningServiceEndpoint {
  /** `host:port` of the controller (or of a gateway that routes `serverName` to it). */
  readonly address: string;
  /** Roots to verify the controller's certificate against. */
  readonly trustBundlePem: string;
  /** The SPIFFE ID the controller must present; default `spiffe://<td>/ns/causeway-system/sa/controller`. */
  readonly controllerSpiffeId: string;
  /** TLS SNI to send, e.g. `controller.<cluster>.cw1.<td>` when going through a gateway. */
  readonly serverName?: string;
  readonly deadlineMs?: number;
}

/** The authentication for one request: a join token, or the current key and chain (mTLS). */
export type SigningCredentials = { readonly joinToken: string } | { readonly privateKeyPem: string; readonly certChainPem: string };

/**
 * Channel credentials that verify the controller by its SPIFFE ID (not by host name: the
 * address may be an IP or a gateway), optionally presenting a client certificate.
 */
export function signingServiceChannelCredentials(endpoint: SigningServiceEndpoint, client?: { privateKeyPem: string; certChainPem: string }): ChannelCredentials {
  return grpcCredentials.createSsl(Buffer.from(endpoint.trustBundlePem), client ? Buffer.from(client.privateKeyPem) : null, client ? Buffer.from(client.certChainPem) : null, {
    checkServerIdentity: (_host, cert) => {
      const id = spiffeIdFromSubjectAltName(cert.subjectaltname);
      return id === endpoint.controllerSpiffeId ? undefined : new Error(`the signing service presented ${id ?? 'no SPIFFE ID'}, expected ${endpoint.controllerSpiffeId}`);
    },
  });
}

/** A gRPC failure of the signing service, cast into a CaError whose message is one sentence (no grpc-js "Resolution note:"). */
function caErrorFromStatus(error: ServiceError, address: string): CaError {
  const code = error.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  const known = Object.values(CaErrorCodes) as string[];
  if (typeof code === 'string' && known.includes(code)) return new CaError(code as CaErrorCode, error.details, { cause: error });
  const retryable = [status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.RESOURCE_EXHAUSTED, status.INTERNAL, status.UNKNOWN].includes(error.code);
  const { unreachable, reason } = grpcFailure(error);
  const message = unreachable
    ? `the signing service at ${address} is unreachable (${reason}); check that the controller runs there and the controller address in the config`
    : `the signing service at ${address} failed the call (${status[error.code] ?? error.code}: ${reason})`;
  return new CaError(CaErrorCodes.fetchFailed, message, { cause: error, retryable });
}

/** One CreateCertificate call. Refusals come back as {@link CaError}s with the server's code. */
export async function requestCertificate(endpoint: SigningServiceEndpoint, auth: SigningCredentials, request: CreateCertificateRequest): Promise<CreateCertificateResponse> {
  const mtls = 'privateKeyPem' in auth ? auth : undefined;
  // The controller is verified by SPIFFE ID, so SNI only matters to gateways; an IP in SNI is not allowed (RFC 6066).
  const serverName = endpoint.serverName ?? fallbackControllerServerName(endpoint.address);
  const client = new CertificateServiceClient(endpoint.address, signingServiceChannelCredentials(endpoint, mtls), serverName ? { 'grpc.ssl_target_name_override': serverName } : {}) as unknown as Client & {
    createCertificate(request: CreateCertificateRequest, metadata: Metadata, options: { deadline: Date }, callback: (error: ServiceError | null, response?: CreateCertificateResponse) => void): void;
  };
  const metadata = new Metadata();
  if ('joinToken' in auth) metadata.set('authorization', `Bearer ${auth.joinToken}`);
  try {
    return await new Promise<CreateCertificateResponse>((resolve, reject) => {
      client.createCertificate(request, metadata, { deadline: new Date(Date.now() + (endpoint.deadlineMs ?? 10_000)) }, (error, response) => {
        if (error) reject(caErrorFromStatus(error, endpoint.address));
        else resolve(response as CreateCertificateResponse);
      });
    });
  } finally {
    client.close();
  }
}

/** The certificate a workload currently serves, in the shapes TLS servers and clients take. */
export interface CurrentCertificate {
  readonly spiffeId: string;
  readonly privateKeyPem: string;
  /** Leaf then intermediate, as separate PEM strings. */
  readonly certChain: readonly string[];
  /** Leaf then intermediate, concatenated. */
  readonly certChainPem: string;
  readonly trustBundlePem: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** For `tls.createServer`, `server.setSecureContext` and `tls.connect`. */
  readonly tlsOptions: { key: string; cert: string; ca: string };
}

export interface WorkloadCertificateClientOptions {
  readonly endpoint: Omit<SigningServiceEndpoint, 'controllerSpiffeId'> & { controllerSpiffeId?: string };
  readonly spiffeId: string;
  /** For the first certificate (or when the saved one has expired). A function is called per use (e.g. re-reading a file). */
  readonly joinToken?: string | (() => Promise<string | undefined> | string | undefined);
  /** Where key.pem (0600), cert-chain.pem and trust-bundle.pem are kept across restarts. */
  readonly stateDir?: string;
  /**
   * Also keep `workload.p12` (0600) in `stateDir` — key, chain and trust bundle for a JVM
   * or .NET app that does its own TLS — rewritten on every renewal, protected by the
   * first line of `passwordFile`.
   */
  readonly pkcs12?: { readonly passwordFile: string };
  readonly keyType?: KeyType;
  /** Requested validity; 0 = the signer's default (24 h). */
  readonly ttlSeconds?: number;
  /**
   * More roots to verify the signing service with, besides the bundle of the last
   * certificate: the roots a sidecar's controller announced in its snapshots. During a
   * root rotation the controller may serve a new-root certificate before this workload
   * has renewed into the new bundle; without these, that renewal would fail.
   */
  readonly additionalRoots?: () => readonly string[];
  /** Renew at this fraction of the lifetime (default 0.5)… */
  readonly renewAtFraction?: number;
  /** …± this fraction, at random, so a fleet started together does not renew together (default 0.1). */
  readonly jitterFraction?: number;
  /** Backoff between failed attempts: the ceiling doubles from min to max (default 1 s … 60 s), full jitter (mesh/backoff.ts). */
  readonly retryDelayMs?: { readonly min: number; readonly max: number };
  /** Registers `causeway_workload_certificate_expiry_timestamp_seconds` and `…_remaining_seconds`. */
  readonly registry?: Registry;
  readonly logger?: Logger;
}

export interface WorkloadCertificateClientEvents {
  /** A new certificate is in effect: swap it into live TLS servers (`server.setSecureContext(c.tlsOptions)`). */
  certificate: [CurrentCertificate];
  /** An attempt failed; the client retries on its own. Never thrown: no listener is needed. */
  'renewal-failed': [CaError];
}

/**
 * Keeps a workload's certificate fresh: generates a key, sends a CSR (join token first,
 * mTLS with the current certificate afterwards), persists the result with mode 0600,
 * renews at half-life with jitter, and tells listeners to hot-swap TLS contexts.
 */
export class WorkloadCertificateClient extends EventEmitter<WorkloadCertificateClientEvents> {
  #currentCertificate: CurrentCertificate | undefined;
  #timer: NodeJS.Timeout | undefined;
  #renewalAt: Date | undefined;
  #closed = false;
  readonly #retryBackoff: Backoff;
  #inflight: Promise<CurrentCertificate> | undefined;
  readonly #endpoint: SigningServiceEndpoint;
  readonly #log: Logger;
  readonly #options: WorkloadCertificateClientOptions;

  constructor(options: WorkloadCertificateClientOptions) {
    super();
    this.#options = options;
    const fraction = options.renewAtFraction ?? 0.5;
    const jitter = options.jitterFraction ?? 0.1;
    if (!(fraction > 0 && fraction < 1)) throw new CaError(CaErrorCodes.ttlInvalid, `renewAtFraction must be between 0 and 1, exclusive (got ${fraction})`);
    if (!(jitter >= 0 && jitter < Math.min(fraction, 1 - fraction))) throw new CaError(CaErrorCodes.ttlInvalid, `jitterFraction must be at least 0 and less than ${Math.min(fraction, 1 - fraction)} so renewal stays inside the lifetime (got ${jitter})`);
    const id = parseSpiffeId(options.spiffeId);
    this.#endpoint = { ...options.endpoint, controllerSpiffeId: options.endpoint.controllerSpiffeId ?? controllerIdentity(id.trustDomain) };
    this.#log = options.logger ?? logger('ca-client', { spiffeId: options.spiffeId });
    const { min, max } = options.retryDelayMs ?? { min: 1000, max: 60_000 };
    this.#retryBackoff = new Backoff({ initialMs: min, maxMs: max });
    if (options.registry) this.#registerMetrics(options.registry);
  }

  /** When the next renewal (or retry) is due; undefined before start() and after close(). */
  nextRenewalAt(): Date | undefined {
    return this.#closed ? undefined : this.#renewalAt;
  }

  /** The certificate in effect, if any. */
  current(): CurrentCertificate | undefined {
    return this.#currentCertificate;
  }

  /**
   * Loads a still-valid saved certificate or fetches one, then keeps renewing. Resolves
   * with the first certificate; rejects if the first fetch fails (e.g. bad token).
   */
  async start(): Promise<CurrentCertificate> {
    const saved = await this.#loadSaved();
    if (saved) {
      this.#install(saved, false);
      return saved;
    }
    const fresh = await this.renewNow();
    return fresh;
  }

  /** Fetches a new certificate now (coalescing concurrent calls) and reschedules. */
  renewNow(): Promise<CurrentCertificate> {
    this.#inflight ??= this.#fetch().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  close(): void {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
  }

  async #fetch(): Promise<CurrentCertificate> {
    const key = await generatePrivateKey(this.#options.keyType ?? DEFAULT_KEY_TYPE);
    const csr = createCsr(key, this.#options.spiffeId);
    const request = { csr, validitySeconds: this.#options.ttlSeconds ?? 0 };
    const current = this.#currentCertificate;
    // Once we hold a certificate, the signer's latest bundle (not the bootstrap one) says whom to trust: it is how a root rotation reaches us.
    const endpoint = current ? { ...this.#endpoint, trustBundlePem: buildTrustBundle([current.trustBundlePem, ...(this.#options.additionalRoots?.() ?? [])]) } : this.#endpoint;
    let response: CreateCertificateResponse | undefined;
    // Renew with the current certificate while it is valid; fall back to a token if the signer no longer accepts it.
    if (current && current.notAfter.getTime() - Date.now() > 1000) {
      try {
        response = await requestCertificate(endpoint, { privateKeyPem: current.privateKeyPem, certChainPem: current.certChainPem }, request);
      } catch (error) {
        const rejected = error instanceof CaError && (error.code === CaErrorCodes.unauthenticated || error.code === CaErrorCodes.peerCertificateInvalid);
        if (!rejected || !this.#options.joinToken) throw error;
        this.#log.warn({ code: error.code }, 'the signing service refused the current certificate; retrying with the join token');
      }
    }
    response ??= await requestCertificate(endpoint, { joinToken: await this.#joinToken(current !== undefined) }, request);
    const trustBundlePem = buildTrustBundle(response.trustBundle);
    const certChainPem = response.certChain.join('');
    // Never serve what peers would reject: check the chain and the identity before installing.
    const verified = verifyCertificateChain(certChainPem, trustBundlePem);
    if (verified.spiffeId !== this.#options.spiffeId) throw new CaError(CaErrorCodes.certificateInvalid, `the signing service returned a certificate for ${verified.spiffeId}, not ${this.#options.spiffeId}`);
    const cert = toCurrent(this.#options.spiffeId, privateKeyPem(key), response.certChain, trustBundlePem, verified.leaf);
    await this.#persist(cert);
    this.#install(cert, true);
    return cert;
  }

  async #joinToken(hadCertificate: boolean): Promise<string> {
    const token = typeof this.#options.joinToken === 'function' ? await this.#options.joinToken() : this.#options.joinToken;
    if (!token?.trim()) {
      throw new CaError(
        CaErrorCodes.unauthenticated,
        hadCertificate
          ? `the certificate for ${this.#options.spiffeId} expired or was refused and no join token is configured; mint one with \`causeway ca token\``
          : `no certificate yet for ${this.#options.spiffeId} and no join token; mint one with \`causeway ca token\``,
      );
    }
    return token.trim();
  }

  #install(cert: CurrentCertificate, fresh: boolean): void {
    this.#currentCertificate = cert;
    this.#retryBackoff.reset();
    this.#log.info({ notAfter: cert.notAfter.toISOString(), fresh }, 'workload certificate in effect');
    this.#schedule(this.#renewalDelayMs(cert));
    this.emit('certificate', cert);
  }

  #renewalDelayMs(cert: CurrentCertificate): number {
    const issuedAt = certificateIssuedAt(cert.notBefore, cert.notAfter);
    const lifetime = cert.notAfter.getTime() - issuedAt;
    const fraction = this.#options.renewAtFraction ?? 0.5;
    const jitter = this.#options.jitterFraction ?? 0.1;
    const at = issuedAt + lifetime * (fraction + jitter * (Math.random() * 2 - 1));
    return Math.max(0, at - Date.now());
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#renewalAt = new Date(Date.now() + delayMs);
    this.#timer = setTimeout(() => {
      this.renewNow().catch((error: unknown) => {
        const failure = error instanceof CaError ? error : new CaError(CaErrorCodes.fetchFailed, `renewal failed: ${(error as Error).message}`, { cause: error, retryable: true });
        const retryInMs = Math.round(this.#retryBackoff.next());
        this.#log.warn({ code: failure.code, attempt: this.#retryBackoff.attempts, retryInMs }, `certificate renewal failed: ${failure.message}`);
        this.emit('renewal-failed', failure);
        this.#schedule(retryInMs);
      });
    }, delayMs);
    this.#timer.unref();
  }

  async #persist(cert: CurrentCertificate): Promise<void> {
    const dir = this.#options.stateDir;
    if (!dir) return;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Write then rename: a crash never leaves a key that does not match its certificate.
    const write = async (name: string, text: string, mode: number) => {
      const temp = join(dir, `.${name}.tmp`);
      await writeFile(temp, text, { mode });
      await chmod(temp, mode);
      await rename(temp, join(dir, name));
    };
    await write(CaFiles.workloadKey, cert.privateKeyPem, 0o600);
    await write(CaFiles.certChain, cert.certChainPem, 0o644);
    await write(CaFiles.trustBundle, cert.trustBundlePem, 0o644);
    if (this.#options.pkcs12) {
      // A keystore that cannot be written must not cost the sidecar its certificate: logged, retried at the next renewal.
      try {
        const password = (await readFile(this.#options.pkcs12.passwordFile, 'utf8')).split(/\r?\n/)[0] ?? '';
        const temp = join(dir, `.${CaFiles.workloadPkcs12}.tmp`);
        await writeFile(temp, encodePkcs12({ privateKeyPem: cert.privateKeyPem, certChain: splitCertificates(cert.certChainPem), trustBundlePem: cert.trustBundlePem, password }), { mode: 0o600 });
        await chmod(temp, 0o600);
        await rename(temp, join(dir, CaFiles.workloadPkcs12));
      } catch (error) {
        this.#log.error({ err: error, passwordFile: this.#options.pkcs12.passwordFile }, `cannot write ${CaFiles.workloadPkcs12}; check the password file (its first line is the keystore password)`);
      }
    }
  }

  async #loadSaved(): Promise<CurrentCertificate | undefined> {
    const dir = this.#options.stateDir;
    if (!dir) return undefined;
    try {
      const [key, chain, bundle] = await Promise.all([CaFiles.workloadKey, CaFiles.certChain, CaFiles.trustBundle].map((name) => readFile(join(dir, name), 'utf8')));
      const verified = verifyCertificateChain(chain as string, bundle as string);
      if (verified.spiffeId !== this.#options.spiffeId || !verified.leaf.checkPrivateKey(createPrivateKey(key as string))) return undefined;
      return toCurrent(this.#options.spiffeId, key as string, splitCertificates(chain as string), bundle as string, verified.leaf);
    } catch (error) {
      this.#log.debug({ err: error }, 'no usable saved certificate');
      return undefined;
    }
  }

  #registerMetrics(registry: Registry): void {
    const labels = { spiffe_id: this.#options.spiffeId };
    const self = this;
    new Gauge({
      name: 'causeway_workload_certificate_expiry_timestamp_seconds',
      help: 'notAfter of the workload certificate currently served (Unix seconds); 0 before the first one',
      labelNames: ['spiffe_id'] as const,
      registers: [registry],
      collect() {
        this.set(labels, (self.#currentCertificate?.notAfter.getTime() ?? 0) / 1000);
      },
    });
    new Gauge({
      name: 'causeway_workload_certificate_remaining_seconds',
      help: 'Seconds until the served workload certificate expires (negative once expired: alert on it)',
      labelNames: ['spiffe_id'] as const,
      registers: [registry],
      collect() {
        const notAfter = self.#currentCertificate?.notAfter.getTime();
        if (notAfter !== undefined) this.set(labels, (notAfter - Date.now()) / 1000);
      },
    });
  }
}

function toCurrent(spiffeId: string, keyPem: string, chain: readonly string[], trustBundlePem: string, leaf: X509Certificate): CurrentCertificate {
  const certChainPem = chain.map((c) => (c.endsWith('\n') ? c : `${c}\n`)).join('');
  return {
    spiffeId,
    privateKeyPem: keyPem,
    certChain: chain,
    certChainPem,
    trustBundlePem,
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    tlsOptions: { key: keyPem, cert: certChainPem, ca: trustBundlePem },
  };
}

/**
 * When a certificate's lifetime began, in ms: our CA backdates notBefore (for peers with
 * slow clocks), so the lifetime the caller asked for starts that much later. Renewal is
 * scheduled from it, and the mesh view reads how much of a lifetime is left from it.
 */
export function certificateIssuedAt(notBefore: Date, notAfter: Date): number {
  return Math.min(notBefore.getTime() + Defaults.backdateSeconds * 1000, notAfter.getTime());
}
