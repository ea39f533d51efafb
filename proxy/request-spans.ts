import type { SnapshotTarget } from '../mesh/index.js';
import type { HttpAccessFacts } from './access-log.js';
import { SpanKind, type RequestTrace, type Tracer } from './tracing.js';

/**
 * The spans of one HTTP request, the same on every path (the HTTP/1.1 fast path, Node's
 * server path, HTTP/2 streams): on the caller's side a client span and under it the hop
 * to the target; on the callee's side a server span, child of that hop.
 */

/** What the caller's sidecar knows of one finished outbound request. */
export interface OutboundSpanFacts {
  readonly method: string;
  readonly path: string | undefined;
  /** The status the app got (0 or 499: none). */
  readonly status: number;
  /** A gRPC call's final `grpc-status`. */
  readonly grpcStatus?: number | undefined;
  readonly serviceLabel: string;
  readonly sourcePrincipal: string | undefined;
  /** The target of the last attempt, if one was tried. */
  readonly target: SnapshotTarget | undefined;
  readonly retries: number;
  /** performance.now() of: the request's start, its first attempt leaving (0: none did), the response head (0: none came). */
  readonly started: number;
  readonly firstSentAt: number;
  readonly respondedAt: number;
  /** The SPIFFE ID the target presented. */
  readonly destinationPrincipal: string | undefined;
}

/** What the callee's sidecar knows of one finished inbound request: its parties as the access log has them. */
export interface ServerSpanFacts extends Pick<HttpAccessFacts, 'sourcePrincipal' | 'sourceCluster' | 'destinationPrincipal' | 'upstreamCluster' | 'destinationService'> {
  readonly method: string | undefined;
  readonly path: string | undefined;
  readonly status: number;
  readonly grpcStatus?: number | undefined;
  readonly started: number;
}

/** A span's error status: no response, a server error, or a gRPC status other than OK. */
function failed(status: number, grpcStatus: number | undefined): boolean {
  return status === 0 || status === 499 || status >= 500 || (grpcStatus !== undefined && grpcStatus !== 0);
}

/**
 * The client span (the whole request as the app saw it) and, under it, the hop to the
 * target — for a remote cluster, the gateway hop, recorded here because the gateway
 * never terminates TLS and cannot read the headers. The upstream got the hop's id.
 */
export function recordOutboundSpans(tracer: Tracer, trace: RequestTrace, f: OutboundSpanFacts): void {
  const target = f.target;
  const end = performance.now();
  const error = failed(f.status, f.grpcStatus);
  const common = { 'causeway.source.principal': f.sourcePrincipal, 'causeway.destination.service': f.serviceLabel, 'causeway.destination.cluster': target?.cluster };
  tracer.record({
    traceId: trace.traceId,
    spanId: trace.spanId,
    parentSpanId: trace.parentSpanId,
    name: `${f.method} ${f.serviceLabel}`,
    kind: SpanKind.client,
    start: f.started,
    end,
    error,
    attributes: { ...common, 'http.request.method': f.method, 'url.path': f.path, 'http.response.status_code': f.status, 'rpc.grpc.status_code': f.grpcStatus, 'causeway.retries': f.retries },
  });
  if (!target || f.firstSentAt === 0) return;
  const gateway = target.kind === 'gateway';
  tracer.record({
    traceId: trace.traceId,
    spanId: trace.hopSpanId,
    parentSpanId: trace.spanId,
    name: gateway ? `gateway ${target.cluster}` : `endpoint ${target.cluster}`,
    kind: SpanKind.client,
    start: f.firstSentAt,
    end: f.respondedAt || end,
    error,
    attributes: { ...common, 'causeway.hop': target.kind, 'server.address': target.address, 'server.port': target.port, 'causeway.destination.principal': f.destinationPrincipal },
  });
}

/** The server span: the request as the callee's sidecar served it, child of the caller's hop span. */
export function recordServerSpan(tracer: Tracer, trace: RequestTrace, f: ServerSpanFacts): void {
  tracer.record({
    traceId: trace.traceId,
    spanId: trace.spanId,
    parentSpanId: trace.parentSpanId,
    name: `${f.method} ${f.destinationService}`,
    kind: SpanKind.server,
    start: f.started,
    end: performance.now(),
    error: failed(f.status, f.grpcStatus),
    attributes: {
      'http.request.method': f.method,
      'url.path': f.path,
      'http.response.status_code': f.status,
      'rpc.grpc.status_code': f.grpcStatus,
      'causeway.source.principal': f.sourcePrincipal,
      'causeway.source.cluster': f.sourceCluster,
      'causeway.destination.principal': f.destinationPrincipal,
      'causeway.destination.cluster': f.upstreamCluster,
      'causeway.destination.service': f.destinationService,
    },
  });
}
