import { CausewayError } from '../mesh/index.js';

/** Stable codes of the sidecar's errors (also the `result` label of its metrics where they apply). */
export const ProxyErrorCodes = {
  connectTimeout: 'CW_PROXY_CONNECT_TIMEOUT',
  connectFailed: 'CW_PROXY_CONNECT_FAILED',
  handshakeFailed: 'CW_PROXY_HANDSHAKE_FAILED',
  secureNaming: 'CW_PROXY_SECURE_NAMING',
  noHealthyTarget: 'CW_PROXY_NO_HEALTHY_TARGET',
  circuitOpen: 'CW_PROXY_CIRCUIT_OPEN',
  unknownService: 'CW_PROXY_UNKNOWN_SERVICE',
  /** A traffic policy route's rate limit refused the request (429; gRPC RESOURCE_EXHAUSTED). */
  rateLimited: 'CW_PROXY_RATE_LIMITED',
  /** A traffic policy route's timeoutMs passed over all tries without a response head (504). */
  routeTimeout: 'CW_PROXY_ROUTE_TIMEOUT',
  upstreamReset: 'CW_PROXY_UPSTREAM_RESET',
  badRequest: 'CW_PROXY_BAD_REQUEST',
  noCertificate: 'CW_PROXY_NO_CERTIFICATE',
  certificateIssue: 'CW_PROXY_CERTIFICATE_ISSUE',
  certificateStore: 'CW_PROXY_CERTIFICATE_STORE',
  bootstrapToken: 'CW_PROXY_JOIN_TOKEN',
  listen: 'CW_PROXY_LISTEN',
  addressExhausted: 'CW_PROXY_ADDRESS_EXHAUSTED',
  outboundRangeTaken: 'CW_PROXY_OUTBOUND_RANGE_TAKEN',
  controlPlane: 'CW_PROXY_CONTROL_PLANE',
  snapshotRejected: 'CW_PROXY_SNAPSHOT_REJECTED',
  /** `x-causeway-error` of a 503 the server sidecar sends when its app does not accept the connection (safe to retry anywhere). */
  appUnavailable: 'CW_PROXY_APP_UNAVAILABLE',
  /** `x-causeway-error` of a 503 when the app took the request and closed without answering (retry only if idempotent). */
  appReset: 'CW_PROXY_APP_RESET',
  /** `x-causeway-error` of a 403: an authorization policy denied the caller. */
  authzDenied: 'CW_PROXY_AUTHZ_DENIED',
  /** `x-causeway-error` of a failure that is not a {@link ProxyError} (no more precise code). */
  unclassified: 'CW_PROXY_ERROR',
} as const;
export type ProxyErrorCode = (typeof ProxyErrorCodes)[keyof typeof ProxyErrorCodes];

/** Any error of the sidecar. `retryable` marks failures where another target may succeed. */
export class ProxyError extends CausewayError {
  constructor(code: ProxyErrorCode, message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(code, message, options);
  }
}

/** Connecting to one target failed before any byte of the app reached it: safe to try the next target. */
export class UpstreamConnectError extends ProxyError {
  readonly target: string;
  constructor(code: ProxyErrorCode, target: string, message: string, options: { cause?: unknown } = {}) {
    super(code, `${target}: ${message}`, { ...options, retryable: code !== ProxyErrorCodes.circuitOpen });
    this.target = target;
  }
}

/**
 * A traffic policy's `requestTimeoutMs` passed without a response head. Same code and
 * status as a connect timeout (`504`, `CW_PROXY_CONNECT_TIMEOUT`); its own class so the
 * access log can tell the two apart (`UT` against `UF`).
 */
export class RequestTimeoutError extends ProxyError {
  constructor(ms: number) {
    super(ProxyErrorCodes.connectTimeout, `no response within ${ms} ms (traffic policy requestTimeoutMs or the route's retries.perTryTimeoutMs)`);
  }
}

/** The server presented a SPIFFE ID the service does not allow (secure naming). Never retried on that target. */
export class SecureNamingError extends UpstreamConnectError {
  readonly presented: string | undefined;
  constructor(target: string, presented: string | undefined, allowed: readonly string[]) {
    super(
      ProxyErrorCodes.secureNaming,
      target,
      `server identity ${presented ?? '(none)'} is not one the service allows (${allowed.join(', ') || 'none'}); check the service's serviceAccounts`,
    );
    this.presented = presented;
  }
}
