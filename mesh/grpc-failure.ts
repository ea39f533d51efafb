/**
 * gRPC failures in words a person acts on. grpc-js builds its error messages for its own
 * maintainers: `14 UNAVAILABLE: No connection established. Last error: Error: connect
 * ECONNREFUSED 127.0.0.1:15012. Resolution note: ` — a status prefix, a nested error, and a
 * resolver note that is usually empty. Wherever a gRPC error is shown to a user (CLI
 * output, a log line's message), it goes through {@link grpcFailure} first.
 */

/** grpc-js appends the resolver's note to UNAVAILABLE details; it never helps a user. */
const RESOLUTION_NOTE = /[.\s]*Resolution note:[\s\S]*$/;
const STATUS_PREFIX = /^\d+ [A-Z_]+: /;
const LAST_ERROR = /^No connection established\. Last error: (?:Error: )?/;

/** gRPC status codes read here (numbers, so this module needs no gRPC import). */
const DEADLINE_EXCEEDED = 4;
const UNAVAILABLE = 14;

const SOCKET_ERRORS: ReadonlyArray<[RegExp, string]> = [
  [/ECONNREFUSED/, 'connection refused'],
  [/ENOTFOUND|EAI_AGAIN/, 'host name not found'],
  [/ECONNRESET|EPIPE/, 'connection reset'],
  [/EHOSTUNREACH|ENETUNREACH/, 'no route to host'],
  [/ETIMEDOUT|Deadline exceeded|DEADLINE_EXCEEDED/i, 'no answer in time'],
];

export interface GrpcFailure {
  /** The peer could not be reached (or did not answer): a network or process problem, not a refusal. */
  readonly unreachable: boolean;
  /** One short clause, no status prefix and no resolution note: `connection refused`. */
  readonly reason: string;
}

/**
 * What went wrong in a gRPC (or etcd3) error, as one clause: the status prefix and
 * grpc-js's `Resolution note:` removed, socket errors named in plain words.
 */
export function grpcFailure(error: unknown): GrpcFailure {
  const e = error as { code?: unknown; details?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'number' ? e.code : undefined;
  const raw = typeof e?.details === 'string' && e.details !== '' ? e.details : typeof e?.message === 'string' ? e.message : String(error);
  const text = withoutGrpcNoise(raw);
  for (const [pattern, reason] of SOCKET_ERRORS) if (pattern.test(text)) return { unreachable: true, reason };
  const unreachable = code === UNAVAILABLE || code === DEADLINE_EXCEEDED || /^\d+ (UNAVAILABLE|DEADLINE_EXCEEDED):/.test(raw);
  return { unreachable, reason: text === '' ? (unreachable ? 'unavailable' : 'no details') : text };
}

/** `text` without the status prefix, the "Last error" wrapper and the resolution note. */
export function withoutGrpcNoise(text: string): string {
  return text.replace(RESOLUTION_NOTE, '').replace(STATUS_PREFIX, '').replace(LAST_ERROR, '').trim().replace(/\.$/, '');
}
