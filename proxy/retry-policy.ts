import type { RetryCondition } from '../mesh/index.js';
import { GrpcStatus } from './grpc-wire.js';

/**
 * When a request may be tried again (proxy/README.md "Retries"): the route's `on`
 * conditions read against how the last try ended, and the retry budget that keeps
 * retries from multiplying the load on a failing service. HTTP/1.1 and HTTP/2 streams
 * describe a try's end the same way ({@link TryOutcome}), gRPC with its status.
 */

/** How one try ended, as the retry conditions see it. */
export interface TryOutcome {
  /**
   * `connect-failure`: no connection or handshake (nothing sent); `refused-stream`: the
   * request never reached the app (the server sidecar's "app unavailable", a keep-alive
   * race, an HTTP/2 REFUSED_STREAM); `reset`: no response (reset, closed);
   * `timeout`: no response head within the per-try timeout; `response`: a status came.
   */
  readonly kind: 'connect-failure' | 'refused-stream' | 'reset' | 'timeout' | 'response';
  readonly status?: number;
  /** The `grpc-status` of a gRPC response (trailers or trailers-only), when there is one. */
  readonly grpcStatus?: number;
}

/** The outcome of a try whose connect or handshake failed (nothing was sent). */
export const CONNECT_FAILURE: TryOutcome = { kind: 'connect-failure' };

/** A route's retry rules, compiled once per snapshot. */
export interface RetryRules {
  /** Tries in all: 1 + the route's retries. */
  readonly tries: number;
  readonly perTryTimeoutMs: number | undefined;
  readonly on: ReadonlySet<RetryCondition>;
  readonly retriableStatusCodes: ReadonlySet<number>;
}

/** The conditions retried when a route names none: Istio's, plus `reset` (see proxy/README.md "Defaults"). */
export const DEFAULT_RETRY_ON: readonly RetryCondition[] = ['connect-failure', 'refused-stream', 'reset', 'unavailable', 'cancelled', 'retriable-status-codes'];
export const DEFAULT_RETRIABLE_STATUS_CODES: readonly number[] = [503];

/** gRPC status codes by their retry-condition names. */
export const GRPC_RETRY_CODES: Readonly<Record<string, number>> = {
  cancelled: GrpcStatus.cancelled,
  'deadline-exceeded': GrpcStatus.deadlineExceeded,
  'resource-exhausted': GrpcStatus.resourceExhausted,
  internal: GrpcStatus.internal,
  unavailable: GrpcStatus.unavailable,
};

/**
 * Whether a try's end is one the rules retry. Says nothing about the method, the body or
 * the budget ({@link RequestPolicy} adds those); a gRPC status is read when given.
 */
export function retryableOutcome(outcome: TryOutcome, rules: Pick<RetryRules, 'on' | 'retriableStatusCodes'>): boolean {
  const on = rules.on;
  switch (outcome.kind) {
    case 'connect-failure':
      // Envoy's 5xx and gateway-error include connect failures too.
      return on.has('connect-failure') || on.has('5xx') || on.has('gateway-error');
    case 'refused-stream':
      return on.has('refused-stream') || on.has('5xx') || on.has('gateway-error');
    case 'reset':
    case 'timeout':
      return on.has('reset') || on.has('5xx') || on.has('gateway-error');
    case 'response': {
      if (outcome.grpcStatus !== undefined && outcome.grpcStatus !== 0) {
        for (const name in GRPC_RETRY_CODES) if (GRPC_RETRY_CODES[name] === outcome.grpcStatus && on.has(name as RetryCondition)) return true;
      }
      const status = outcome.status ?? 0;
      if (status >= 500 && on.has('5xx')) return true;
      if ((status === 502 || status === 503 || status === 504) && on.has('gateway-error')) return true;
      return on.has('retriable-status-codes') && rules.retriableStatusCodes.has(status);
    }
  }
}

/** Whether the conditions retry any gRPC status: a call's `grpc-status` can still decide a retry. */
export function retriesGrpcStatus(on: ReadonlySet<RetryCondition>): boolean {
  for (const name in GRPC_RETRY_CODES) if (on.has(name as RetryCondition)) return true;
  return false;
}

/** Retry budget settings: the share of active requests that may be retries, and a floor. */
export interface RetryBudgetSettings {
  readonly percent: number;
  readonly minConcurrent: number;
}

/**
 * Whether one more concurrent retry fits the budget (Envoy's retry budget): retries in
 * flight stay under `percent` of the requests in flight, but a few are always allowed so
 * that a quiet service still gets its retries.
 */
export function retryBudgetAllows(activeRequests: number, activeRetries: number, budget: RetryBudgetSettings): boolean {
  return activeRetries < Math.max(budget.minConcurrent, (activeRequests * budget.percent) / 100);
}
