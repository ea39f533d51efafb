import { X509Certificate } from 'node:crypto';
import type { SecureContextOptions } from 'node:tls';
import {
  Metadata,
  ServerCredentials,
  status,
  ServerInterceptingCall,
  type Server,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServerUnaryCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { logger, type Logger } from '../mesh/index.js';
import type { IntermediateCa } from './authority.js';
import { CaError, CaErrorCodes, type CaErrorCode } from './errors.js';
import { verifyJoinToken } from './join-token.js';
import type { KeyType } from './keys.js';
import { splitCertificates } from './pem.js';
import { CREATE_CERTIFICATE_PATH, certificateServiceDefinition, type CreateCertificateRequest, type CreateCertificateResponse } from '../api-client/protos.js';
import { spiffeIdFromSubjectAltName } from './trust-bundle.js';

/** gRPC status and metric label of each refusal. Unknown errors are INTERNAL. */
const REFUSALS: Partial<Record<CaErrorCode, { status: status; reason: string }>> = {
  [CaErrorCodes.unauthenticated]: { status: status.UNAUTHENTICATED, reason: 'unauthenticated' },
  [CaErrorCodes.tokenMalformed]: { status: status.UNAUTHENTICATED, reason: 'token_malformed' },
  [CaErrorCodes.tokenSignatureInvalid]: { status: status.UNAUTHENTICATED, reason: 'token_signature_invalid' },
  [CaErrorCodes.tokenExpired]: { status: status.UNAUTHENTICATED, reason: 'token_expired' },
  [CaErrorCodes.tokenAudienceMismatch]: { status: status.UNAUTHENTICATED, reason: 'token_audience_mismatch' },
  [CaErrorCodes.tokenTtlInvalid]: { status: status.UNAUTHENTICATED, reason: 'token_ttl_invalid' },
  [CaErrorCodes.peerCertificateInvalid]: { status: status.UNAUTHENTICATED, reason: 'peer_certificate_invalid' },
  [CaErrorCodes.identityMismatch]: { status: status.PERMISSION_DENIED, reason: 'identity_mismatch' },
  [CaErrorCodes.identityInvalid]: { status: status.INVALID_ARGUMENT, reason: 'identity_invalid' },
  [CaErrorCodes.csrTooLarge]: { status: status.INVALID_ARGUMENT, reason: 'csr_too_large' },
  [CaErrorCodes.csrMalformed]: { status: status.INVALID_ARGUMENT, reason: 'csr_malformed' },
  [CaErrorCodes.csrSignatureInvalid]: { status: status.INVALID_ARGUMENT, reason: 'csr_signature_invalid' },
  [CaErrorCodes.keyNotAllowed]: { status: status.INVALID_ARGUMENT, reason: 'key_not_allowed' },
  [CaErrorCodes.ttlInvalid]: { status: status.INVALID_ARGUMENT, reason: 'ttl_invalid' },
  [CaErrorCodes.ttlAboveMaximum]: { status: status.OUT_OF_RANGE, reason: 'ttl_above_maximum' },
};

/**
 * Refusals grpc-js makes before the handler runs, so the handler never sees them: a
 * request over the server's `grpc.max_receive_message_length` (4 MiB by default), and
 * bytes that do not decode as a CreateCertificateRequest.
 */
const TRANSPORT_REFUSALS = { tooLarge: 'request_too_large', malformed: 'request_malformed' } as const;

/** Every refusal reason the `causeway_ca_refusals_total` counter can carry. */
export const RefusalReasons: readonly string[] = [...Object.values(REFUSALS).map((r) => r.reason), ...Object.values(TRANSPORT_REFUSALS), 'internal'];

/** Trailing metadata key carrying the stable error code of a refusal. */
export const ERROR_CODE_METADATA_KEY = 'causeway-error-code';

export interface CertificateServiceOptions {
  /** The cluster's intermediate; a function lets the controller swap it (rotation) without re-adding the service. */
  readonly ca: IntermediateCa | (() => IntermediateCa);
  /** Roots returned to callers; default the intermediate's trust bundle. */
  readonly trustBundlePem?: string | (() => string);
  readonly defaultTtlSeconds?: number;
  readonly maxTtlSeconds?: number;
  /** What a request above maxTtlSeconds gets: a capped certificate (default, per api/ca.proto) or OUT_OF_RANGE. */
  readonly aboveMaximum?: 'cap' | 'refuse';
  readonly allowedKeyTypes?: readonly KeyType[];
  /** Join tokens living longer than this are refused (default 7 days). */
  readonly maxJoinTokenTtlSeconds?: number;
  /** Where the service's counters go (default: a private registry, still readable from the returned handle). */
  readonly registry?: Registry;
  readonly logger?: Logger;
  /** Clock, for tests. */
  readonly now?: () => Date;
}

export interface CertificateServiceHandle {
  readonly refusals: Counter<'reason'>;
  readonly issued: Counter<'authentication'>;
  readonly registry: Registry;
}

function checkServiceOptions(options: CertificateServiceOptions): void {
  const seconds = (name: keyof CertificateServiceOptions) => {
    const value = options[name];
    if (value !== undefined && (typeof value !== 'number' || !Number.isInteger(value) || value <= 0)) throw new CaError(CaErrorCodes.ttlInvalid, `${name} must be a positive whole number of seconds (got ${String(value)})`);
  };
  seconds('defaultTtlSeconds');
  seconds('maxTtlSeconds');
  seconds('maxJoinTokenTtlSeconds');
  if (options.defaultTtlSeconds !== undefined && options.maxTtlSeconds !== undefined && options.defaultTtlSeconds > options.maxTtlSeconds) {
    throw new CaError(CaErrorCodes.ttlInvalid, `defaultTtlSeconds (${options.defaultTtlSeconds}) must not exceed maxTtlSeconds (${options.maxTtlSeconds})`);
  }
  if (options.aboveMaximum !== undefined && options.aboveMaximum !== 'cap' && options.aboveMaximum !== 'refuse') throw new CaError(CaErrorCodes.ttlInvalid, `aboveMaximum must be "cap" or "refuse" (got ${String(options.aboveMaximum)})`);
  if (options.allowedKeyTypes !== undefined && options.allowedKeyTypes.length === 0) throw new CaError(CaErrorCodes.keyNotAllowed, 'allowedKeyTypes must list at least one key type');
}

interface Caller {
  readonly spiffeId: string;
  readonly authentication: 'join_token' | 'certificate';
}

function authenticate(call: ServerUnaryCall<CreateCertificateRequest, CreateCertificateResponse>, ca: IntermediateCa, options: CertificateServiceOptions, now: Date): Caller {
  const authorization = call.metadata.get('authorization')[0];
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)$/i.exec(String(authorization));
    if (!match) throw new CaError(CaErrorCodes.tokenMalformed, 'the authorization metadata must be "Bearer <join-token>"');
    const claims = verifyJoinToken(match[1] as string, ca, { now, ...(options.maxJoinTokenTtlSeconds ? { maxTtlSeconds: options.maxJoinTokenTtlSeconds } : {}) });
    return { spiffeId: claims.sub, authentication: 'join_token' };
  }
  // grpc-js reports a peer certificate only when it verified against the server's trust bundle.
  const peer = call.getAuthContext()?.sslPeerCertificate;
  if (!peer?.raw) {
    throw new CaError(
      CaErrorCodes.unauthenticated,
      'no credentials: send a join token (metadata "authorization: Bearer <token>") for a first certificate, or connect with your current workload certificate (it must chain to the mesh trust bundle and be unexpired) to renew',
    );
  }
  const cert = new X509Certificate(peer.raw);
  // The handshake may be older than the certificate's expiry: a long-lived connection must not renew forever.
  if (now > new Date(cert.validTo)) throw new CaError(CaErrorCodes.peerCertificateInvalid, `your client certificate expired at ${new Date(cert.validTo).toISOString()}; bootstrap again with a join token`);
  const spiffeId = spiffeIdFromSubjectAltName(cert.subjectAltName);
  if (!spiffeId || cert.ca) throw new CaError(CaErrorCodes.peerCertificateInvalid, 'your client certificate is not a workload certificate with exactly one SPIFFE ID');
  return { spiffeId, authentication: 'certificate' };
}

/**
 * Adds `causeway.ca.v1.CertificateService` to a gRPC server the caller owns and starts.
 * Serve it with {@link createCertificateServiceCredentials} so that renewing callers can
 * present their certificate while first-time callers, who have only a token, still connect.
 */
export function addCertificateService(server: Server, options: CertificateServiceOptions): CertificateServiceHandle {
  checkServiceOptions(options);
  const registry = options.registry ?? new Registry();
  const log = options.logger ?? logger('ca-signer');
  const refusals = new Counter({ name: 'causeway_ca_refusals_total', help: 'Certificate requests the CA refused, by reason', labelNames: ['reason'] as const, registers: [registry] });
  const issued = new Counter({ name: 'causeway_ca_certificates_issued_total', help: 'Workload certificates the CA issued, by how the caller authenticated', labelNames: ['authentication'] as const, registers: [registry] });
  const duration = new Histogram({ name: 'causeway_ca_issue_duration_seconds', help: 'Time to answer one CreateCertificate call', buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25], registers: [registry] });
  for (const reason of RefusalReasons) refusals.inc({ reason }, 0);
  const currentCa = typeof options.ca === 'function' ? options.ca : () => options.ca as IntermediateCa;
  // Read at scrape time: `options.ca` may be a function, so the intermediate can change under a running service.
  new Gauge({
    name: 'causeway_ca_intermediate_expiry_timestamp_seconds',
    help: "notAfter of the cluster's intermediate that signs workload certificates (Unix seconds)",
    labelNames: ['cluster'] as const,
    registers: [registry],
    collect() {
      const ca = currentCa();
      this.reset();
      this.set({ cluster: ca.cluster }, Date.parse(ca.certificate.validTo) / 1000);
    },
  });
  const currentBundle = (ca: IntermediateCa) => (typeof options.trustBundlePem === 'function' ? options.trustBundlePem() : (options.trustBundlePem ?? ca.trustBundlePem));

  const createCertificate = (call: ServerUnaryCall<CreateCertificateRequest, CreateCertificateResponse>, callback: sendUnaryData<CreateCertificateResponse>): void => {
    const started = process.hrtime.bigint();
    const now = options.now?.() ?? new Date();
    const ca = currentCa();
    let caller: Caller | undefined;
    try {
      caller = authenticate(call, ca, options, now);
      const signed = ca.signCsr(call.request.csr, {
        expectedSpiffeId: caller.spiffeId,
        ttlSeconds: call.request.validitySeconds,
        now,
        ...(options.defaultTtlSeconds ? { defaultTtlSeconds: options.defaultTtlSeconds } : {}),
        ...(options.maxTtlSeconds ? { maxTtlSeconds: options.maxTtlSeconds } : {}),
        ...(options.aboveMaximum ? { aboveMaximum: options.aboveMaximum } : {}),
        ...(options.allowedKeyTypes ? { allowedKeyTypes: options.allowedKeyTypes } : {}),
      });
      issued.inc({ authentication: caller.authentication });
      // An audit trail of who obtained which identity: one line per certificate, not per connection.
      log.info({ spiffeId: signed.spiffeId, notAfter: signed.notAfter.toISOString(), authentication: caller.authentication, peer: call.getPeer() }, 'issued a workload certificate');
      callback(null, { certChain: [...signed.certChain], trustBundle: splitCertificates(currentBundle(ca)) });
    } catch (error) {
      const code = error instanceof CaError ? error.code : undefined;
      const refusal = (code && REFUSALS[code]) ?? { status: status.INTERNAL, reason: 'internal' };
      refusals.inc({ reason: refusal.reason });
      let message = error instanceof Error ? error.message : String(error);
      if (refusal.reason === 'internal') {
        log.error({ err: error, caller: caller?.spiffeId, peer: call.getPeer() }, 'certificate request failed inside the signer');
        message = 'the signer failed on this request; it is logged on the controller — retry later';
      } else {
        log.info({ reason: refusal.reason, caller: caller?.spiffeId, peer: call.getPeer() }, `refused a certificate request: ${message}`);
      }
      const metadata = new Metadata();
      metadata.set(ERROR_CODE_METADATA_KEY, code ?? CaErrorCodes.internal);
      callback({ code: refusal.status, details: message, metadata });
    } finally {
      duration.observe(Number(process.hrtime.bigint() - started) / 1e9);
    }
  };
  server.addService(certificateServiceDefinition, { createCertificate });
  return { refusals, issued, registry };
}

/** The refusal reason of a status grpc-js sent on its own, or undefined when it is none of ours to count. */
function transportRefusal(sent: Parameters<ServerInterceptingCallInterface['sendStatus']>[0]): string | undefined {
  // The handler's refusals carry their code and were counted where they were made.
  if (sent.metadata?.get(ERROR_CODE_METADATA_KEY).length) return undefined;
  if (sent.code === status.RESOURCE_EXHAUSTED) return TRANSPORT_REFUSALS.tooLarge;
  if (sent.code === status.INTERNAL && sent.details?.startsWith('Error deserializing request')) return TRANSPORT_REFUSALS.malformed;
  return undefined;
}

/**
 * A server interceptor that counts, in the signer's `causeway_ca_refusals_total`, the
 * CreateCertificate refusals grpc-js makes before the handler runs (`request_too_large`:
 * over the server's message size limit; `request_malformed`: not a request message).
 * grpc-js sends those statuses from the innermost call object, which only the first
 * interceptor is handed, so pass it first: `new Server({ interceptors: [it, …] })`.
 * `signer` is read per refusal, so the server may be built before the service is added.
 */
export function certificateRefusalInterceptor(signer: () => CertificateServiceHandle | undefined): ServerInterceptor {
  return (method, call) => {
    if (method.path === CREATE_CERTIFICATE_PATH) {
      const sendStatus = call.sendStatus.bind(call);
      call.sendStatus = (sent) => {
        const reason = transportRefusal(sent);
        if (reason !== undefined) signer()?.refusals.inc({ reason });
        sendStatus(sent);
      };
    }
    return new ServerInterceptingCall(call);
  };
}

/** PEM material of the server's own TLS identity. */
export interface ServerTlsMaterial {
  readonly privateKeyPem: string;
  /** Leaf then intermediate. */
  readonly certChainPem: string;
  readonly trustBundlePem: string;
}

/** Server credentials whose certificate and bundle can be replaced while the server runs. */
export interface SwappableServerCredentials {
  readonly credentials: ServerCredentials;
  /** New handshakes use the new material; open connections keep theirs. */
  update(material: ServerTlsMaterial): void;
}

function contextOptions(material: ServerTlsMaterial): SecureContextOptions {
  return { key: material.privateKeyPem, cert: material.certChainPem, ca: material.trustBundlePem };
}

/**
 * Requests a client certificate, never requires one. Built on the base class rather than
 * `experimental.createCertificateProviderServerCredentials`: in grpc-js 1.14.7 that one
 * drops every connection when its provider answers synchronously (the first update
 * arrives before the server's watcher is registered).
 */
class RequestingServerCredentials extends ServerCredentials {
  constructor(material: ServerTlsMaterial) {
    super({ requestCert: true, rejectUnauthorized: false }, contextOptions(material));
  }

  update(material: ServerTlsMaterial): void {
    this.updateSecureContextOptions(contextOptions(material));
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

/**
 * TLS server credentials for a server hosting the CA: they REQUEST a client certificate
 * but do not REQUIRE one (first-time callers have only a join token). Node verifies a
 * presented certificate against `trustBundlePem`, and grpc-js shows it to handlers through
 * `call.getAuthContext().sslPeerCertificate` only if it verified (`socket.authorized`).
 * `update()` swaps certificate and bundle for new handshakes (renewal, root rotation).
 */
export function createCertificateServiceCredentials(material: ServerTlsMaterial): SwappableServerCredentials {
  const credentials = new RequestingServerCredentials(material);
  return { credentials, update: (next) => credentials.update(next) };
}
