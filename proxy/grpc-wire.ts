import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';

/**
 * What the sidecar reads and writes of gRPC's wire format (grpc/doc/PROTOCOL-HTTP2.md):
 * status codes, the `grpc-timeout` header and the trailers-only error response. The one
 * place these are parsed and built.
 */

/** gRPC status codes the sidecar names (the full list is 0–16). */
export const GrpcStatus = {
  ok: 0,
  cancelled: 1,
  unknown: 2,
  deadlineExceeded: 4,
  permissionDenied: 7,
  resourceExhausted: 8,
  internal: 13,
  unavailable: 14,
  dataLoss: 15,
} as const;

/** True for a port whose requests are gRPC calls (errors answered as gRPC statuses, `grpc-timeout` honoured). */
export function isGrpcRequest(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  return typeof type === 'string' && type.startsWith('application/grpc');
}

/** The `grpc-status` of response headers or trailers; undefined when absent or not a number 0–16. */
export function grpcStatusOf(headers: IncomingHttpHeaders): number | undefined {
  const raw = headers['grpc-status'];
  if (typeof raw !== 'string' || !/^\d{1,2}$/.test(raw)) return undefined;
  const code = Number(raw);
  return code <= 16 ? code : undefined;
}

const TIMEOUT_UNIT_MS: Readonly<Record<string, number>> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/**
 * The deadline of a call in ms from its `grpc-timeout` header (`1S`, `250m`, up to 8
 * digits and a unit); undefined when absent. A malformed value is ignored like an absent
 * one (the server sees it too and is the one to reject it).
 */
export function grpcTimeoutMs(headers: IncomingHttpHeaders): number | undefined {
  const raw = headers['grpc-timeout'];
  if (typeof raw !== 'string') return undefined;
  const match = /^(\d{1,8})([HMSmun])$/.exec(raw);
  if (!match) return undefined;
  return Math.max(1, Math.ceil(Number(match[1]) * TIMEOUT_UNIT_MS[match[2]!]!));
}

/**
 * A `grpc-message` value: the message's UTF-8 bytes, percent-encoding only `%` and bytes
 * outside printable ASCII, as gRPC's wire format asks (clients decode just those).
 */
export function grpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  return out;
}

/**
 * A trailers-only gRPC response carrying an error: HTTP 200, the status and a
 * percent-encoded message, plus the sidecar's `x-causeway-error` code (what a peer
 * sidecar reads to decide a retry, as with HTTP/1.1's 503s).
 */
export function grpcErrorHeaders(status: number, message: string, causewayCode: string | undefined): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(status), 'grpc-message': grpcMessage(message) };
  if (causewayCode) headers['x-causeway-error'] = causewayCode;
  return headers;
}
