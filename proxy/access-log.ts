import type { IncomingHttpHeaders } from 'node:http2';
import type { Logger, SnapshotTarget } from '../mesh/index.js';
import type { SidecarTuning } from './config.js';
import { ProxyErrorCodes, RequestTimeoutError } from './errors.js';
import { parseTraceparent } from './tracing.js';
import { headerValue, type ResponseHead } from './http1.js';
import type { BufferedRequest } from './http1-relay.js';

/**
 * The sidecar's access log (proxy/README.md "Access log"): one pino line per request and
 * per TCP connection, at info level on its own child logger (`log: "access"`), with
 * Envoy's default-format fields in Envoy's order, then the mesh's own. Off by default;
 * when off, no path builds anything for it.
 */

/** Envoy's response flags the sidecar can produce (Envoy's `%RESPONSE_FLAGS%` vocabulary). */
export const ResponseFlags = {
  /** No healthy upstream host (503). */
  noHealthyUpstream: 'UH',
  /** Upstream connection failure: refused, handshake failed, connect timeout, secure naming (503/504). */
  upstreamConnectFailure: 'UF',
  /** Upstream overflow: the circuit breaker is full (503). */
  upstreamOverflow: 'UO',
  /** No route: the service is not in the catalog, or has no such port (404). */
  noRoute: 'NR',
  /** Upstream retry limit exceeded: added when the failure came after retries. */
  upstreamRetryLimitExceeded: 'URX',
  /** Downstream connection termination: the app hung up before the exchange ended. */
  downstreamConnectionTermination: 'DC',
  /** Upstream request timeout (504): a traffic policy's `requestTimeoutMs`. */
  upstreamRequestTimeout: 'UT',
  /** Upstream connection termination: the target reset or closed without (a whole) response. */
  upstreamConnectionTermination: 'UC',
  /** Rate limited (429). */
  rateLimited: 'RL',
} as const;

/** `result` values of the request and connection metrics, mapped to their flag. */
const FLAG_OF_RESULT: Readonly<Record<string, string>> = {
  [ProxyErrorCodes.noHealthyTarget]: ResponseFlags.noHealthyUpstream,
  [ProxyErrorCodes.connectFailed]: ResponseFlags.upstreamConnectFailure,
  [ProxyErrorCodes.connectTimeout]: ResponseFlags.upstreamConnectFailure,
  [ProxyErrorCodes.handshakeFailed]: ResponseFlags.upstreamConnectFailure,
  [ProxyErrorCodes.secureNaming]: ResponseFlags.upstreamConnectFailure,
  [ProxyErrorCodes.circuitOpen]: ResponseFlags.upstreamOverflow,
  [ProxyErrorCodes.unknownService]: ResponseFlags.noRoute,
  [ProxyErrorCodes.upstreamReset]: ResponseFlags.upstreamConnectionTermination,
  downstream_closed: ResponseFlags.downstreamConnectionTermination,
  // Inbound: the app is this sidecar's upstream.
  app_unavailable: ResponseFlags.upstreamConnectFailure,
  app_reset: ResponseFlags.upstreamConnectionTermination,
  rate_limited: ResponseFlags.rateLimited,
  [ProxyErrorCodes.rateLimited]: ResponseFlags.rateLimited,
  [ProxyErrorCodes.routeTimeout]: ResponseFlags.upstreamRequestTimeout,
};

const RETRIED_FLAGS: ReadonlySet<string> = new Set([ResponseFlags.upstreamConnectFailure, ResponseFlags.upstreamConnectionTermination, ResponseFlags.upstreamRequestTimeout]);

/** How one request or connection ended, as the paths report it. */
export interface Outcome {
  /** The `result` label of the metrics (`ok`, `incomplete`, an error code…). */
  readonly result: string;
  /** The error that ended it, if any (a request timeout, an upstream failure mid-response). */
  readonly error?: unknown;
  /** Attempts after the first. */
  readonly retries: number;
}

/**
 * Envoy's `%RESPONSE_FLAGS%` for an outcome: `-` when none applies. An `incomplete`
 * exchange is the upstream's doing when an error ended it (`UC`), else the app's (`DC`).
 */
export function responseFlags(outcome: Outcome): string {
  let flag: string | undefined;
  if (outcome.error instanceof RequestTimeoutError) flag = ResponseFlags.upstreamRequestTimeout;
  else if (outcome.result === 'incomplete') flag = outcome.error === undefined ? ResponseFlags.downstreamConnectionTermination : ResponseFlags.upstreamConnectionTermination;
  else flag = FLAG_OF_RESULT[outcome.result];
  if (flag === undefined) return '-';
  return outcome.retries > 0 && RETRIED_FLAGS.has(flag) ? `${flag},${ResponseFlags.upstreamRetryLimitExceeded}` : flag;
}

/** What a path knows about one finished TCP connection (and what an HTTP request adds to). */
export interface TcpAccessFacts extends Outcome {
  readonly direction: 'outbound' | 'inbound';
  /** performance.now() when the request head was complete (TCP: the connection accepted). */
  readonly started: number;
  readonly bytesReceived: number;
  readonly bytesSent: number;
  /** `address:port` of the target (outbound) or the app (inbound). */
  readonly upstreamHost: string | undefined;
  /** The mesh cluster the request went to (outbound) or arrived in (inbound). */
  readonly upstreamCluster: string | undefined;
  readonly sourceCluster: string | undefined;
  /** `<svc>.<ns>` of the destination. */
  readonly destinationService: string;
  readonly sourcePrincipal: string | undefined;
  readonly destinationPrincipal: string | undefined;
  /** Envoy's `%RESPONSE_CODE_DETAILS%` where the sidecar refused for a reason flags do not carry (RBAC). */
  readonly details?: string | undefined;
  /** The traffic policy route the request took (outbound HTTP). */
  readonly route?: string | undefined;
  /** Why the request ended, in the request policy's words (`RequestEndReasons`). */
  readonly endReason?: string | undefined;
}

/** What a path knows about one finished HTTP request; built only when the access log is on. */
export interface HttpAccessFacts extends TcpAccessFacts {
  readonly method: string | undefined;
  readonly path: string | undefined;
  readonly protocol: string;
  /** The status the app (outbound) or the caller (inbound) got; 499 (none sent) logs as 0, as Envoy does. */
  readonly status: number;
  /** Milliseconds from sending the request upstream to its response head, if one came. */
  readonly upstreamServiceMs: number | undefined;
  /** A request header by lower-case name. */
  readonly header: (name: string) => string | undefined;
  /** The `x-request-id` the sidecar gave the request (outbound), when the app's was absent or not acceptable. */
  readonly requestId?: string | undefined;
  /** The trace the sidecar put the request in (tracing on); else the one of its `traceparent`, if any. */
  readonly traceId?: string | undefined;
  /** A response header by lower-case name (for `grpc-status`), if a response came. */
  readonly responseHeader: (name: string) => string | undefined;
}

/** The facts the HTTP/1.1 fast path reads off a request and its response head (both directions alike). */
export function fastPathFacts(request: BufferedRequest, response: ResponseHead | undefined): Pick<HttpAccessFacts, 'started' | 'method' | 'path' | 'protocol' | 'bytesReceived' | 'header' | 'responseHeader'> {
  const head = request.head;
  return {
    started: request.started,
    method: head.method,
    path: head.target,
    protocol: 'HTTP/1.1',
    bytesReceived: request.body.length,
    header: (name) => headerValue(head, name),
    responseHeader: (name) => (response ? headerValue(response, name) : undefined),
  };
}

/**
 * The facts of one HTTP/2 stream (both directions alike): `response` is the response's
 * headers if they came, `grpcStatus` its final `grpc-status` (from the trailers when it
 * had a body). An HTTP/2 request has `:authority` where HTTP/1.1 has `host`.
 */
export function h2StreamFacts(
  started: number,
  request: IncomingHttpHeaders,
  response: IncomingHttpHeaders | undefined,
  grpcStatus: number | undefined,
  bytesReceived: number,
  bytesSent: number,
): Pick<HttpAccessFacts, 'started' | 'method' | 'path' | 'protocol' | 'bytesReceived' | 'bytesSent' | 'header' | 'responseHeader'> {
  return {
    started,
    method: request[':method'],
    path: request[':path'],
    protocol: 'HTTP/2',
    bytesReceived,
    bytesSent,
    header: (name) => headerText(request[name === 'host' ? ':authority' : name]),
    responseHeader: (name) => (name === 'grpc-status' && grpcStatus !== undefined ? String(grpcStatus) : headerText(response?.[name])),
  };
}

/** Who called whom, for an outbound request's line: the target it went to (if any) and both identities. */
export function outboundParties(target: SnapshotTarget | undefined, destinationService: string, sourcePrincipal: string | undefined, destinationPrincipal: string | undefined): Pick<HttpAccessFacts, 'direction' | 'upstreamHost' | 'upstreamCluster' | 'sourceCluster' | 'destinationService' | 'sourcePrincipal' | 'destinationPrincipal'> {
  return {
    direction: 'outbound',
    upstreamHost: target && `${target.address}:${target.port}`,
    upstreamCluster: target?.cluster,
    sourceCluster: undefined,
    destinationService,
    sourcePrincipal,
    destinationPrincipal,
  };
}

/** A header of Node's parsed headers as one string (repeated ones joined as HTTP allows). */
export function headerText(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

function startTime(started: number): string {
  return new Date(performance.timeOrigin + started).toISOString();
}

/**
 * One HTTP request's line: Envoy's default format fields in Envoy's order
 * (`[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
 * %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
 * %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
 * "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"`), then the mesh's own.
 * Unset values are null (Envoy's JSON format does the same; its text format prints `-`).
 */
export function httpAccessLine(f: HttpAccessFacts): Record<string, unknown> {
  return accessLine(f, f);
}

/** One TCP connection's line: the same fields, null where they are HTTP's only (Envoy's TCP proxy logs the same way). */
export function tcpAccessLine(f: TcpAccessFacts): Record<string, unknown> {
  return accessLine(f, undefined);
}

function accessLine(f: TcpAccessFacts, http: HttpAccessFacts | undefined): Record<string, unknown> {
  const header = (name: string) => http?.header(name) ?? null;
  const grpc = http?.responseHeader('grpc-status');
  return {
    start_time: startTime(f.started),
    method: http?.method ?? null,
    path: http?.path ?? null,
    protocol: http?.protocol ?? null,
    response_code: http === undefined || http.status === 499 ? 0 : http.status,
    response_flags: responseFlags(f),
    bytes_received: f.bytesReceived,
    bytes_sent: f.bytesSent,
    duration: Math.round(performance.now() - f.started),
    upstream_service_time: http?.upstreamServiceMs === undefined ? null : Math.round(http.upstreamServiceMs),
    x_forwarded_for: header('x-forwarded-for'),
    user_agent: header('user-agent'),
    request_id: http?.requestId ?? header('x-request-id'),
    authority: header('host'),
    upstream_host: f.upstreamHost ?? null,
    direction: f.direction,
    response_code_details: f.details ?? null,
    upstream_cluster: f.upstreamCluster ?? null,
    source_cluster: f.sourceCluster ?? null,
    destination_service: f.destinationService,
    source_principal: f.sourcePrincipal ?? null,
    destination_principal: f.destinationPrincipal ?? null,
    trace_id: http ? (http.traceId ?? parseTraceparent(http.header('traceparent'))?.traceId ?? null) : null,
    retries: f.retries,
    route: f.route ?? null,
    end_reason: f.endReason ?? null,
    grpc_status: grpc === undefined ? null : Number(grpc),
    result: f.result,
  };
}

/** Whether `sidecar.accessLog` turns the access log on (`true`, or `{ enabled: true }`). */
export function accessLogEnabled(tuning: Pick<SidecarTuning, 'accessLog'>): boolean {
  const setting = tuning.accessLog;
  return typeof setting === 'boolean' ? setting : setting.enabled;
}

/** The access log of one side of the sidecar (outbound or inbound). */
export class AccessLog {
  /** Read by the paths before they build any facts: off costs one boolean test per request. */
  readonly enabled: boolean;
  readonly #log: Logger;

  constructor(log: Logger, tuning: Pick<SidecarTuning, 'accessLog'>) {
    this.enabled = accessLogEnabled(tuning);
    this.#log = log.child({ log: 'access' });
  }

  http(facts: HttpAccessFacts): void {
    this.#log.info(httpAccessLine(facts), facts.direction === 'outbound' ? 'outbound request' : 'inbound request');
  }

  tcp(facts: TcpAccessFacts): void {
    this.#log.info(tcpAccessLine(facts), facts.direction === 'outbound' ? 'outbound connection' : 'inbound connection');
  }
}
