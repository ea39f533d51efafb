import type { Logger, SnapshotTarget, TrafficPolicy } from '../mesh/index.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { headerValue, rewriteHead, textResponse, upgradeLines, type ResponseHead } from './http1.js';
import { type AbortListener, type BufferedRequest, type DownstreamConnection, type ResponseSink, type UpstreamConnection, type UpstreamPool } from './http1-relay.js';
import type { SidecarMetrics } from './metrics.js';
import { targetKey, type OutlierDetector } from './target-balancer.js';
import type { UpstreamRoute } from './upstream-connector.js';
import { APP_RESET, APP_UNAVAILABLE } from './wire.js';

export const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);
const NO_EXTRA_DROPS: ReadonlySet<string> = new Set();

/** What an exchange needs of the outbound proxy. */
export interface OutboundExchangeHost {
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  /** Access logs at debug, decided once. */
  readonly accessLog: boolean;
  readonly sourceCluster: string;
  readonly sourceService: string;
  readonly outliers: OutlierDetector;
  pool(target: SnapshotTarget, route: UpstreamRoute, connectTimeoutMs: number): UpstreamPool;
  connectFailed(target: SnapshotTarget, route: UpstreamRoute, error: unknown, policy: TrafficPolicy | undefined): void;
}

/** Requests in flight to one service: the HTTP circuit breaker's count. */
export interface Circuit {
  active: number;
  pending: number;
}

export interface ExchangePlan {
  route: UpstreamRoute;
  policy: TrafficPolicy | undefined;
  /** Targets to try, in order. */
  plan: SnapshotTarget[];
  attempts: number;
  connectTimeoutMs: number;
}

/**
 * One request of the outbound fast path: targets in plan order; a connect failure, a
 * reset before any response of a replayable request, or a server sidecar's "app
 * unavailable" moves on to the next target. The response head is rewritten, its body
 * forwarded as it comes. A class rather than closures: it is made once per request.
 */
export class OutboundExchange implements ResponseSink, AbortListener {
  readonly #host: OutboundExchangeHost;
  readonly #connection: DownstreamConnection<undefined>;
  readonly #request: BufferedRequest;
  readonly #serviceLabel: string;
  readonly #circuit: Circuit | undefined;
  readonly #plan: ExchangePlan | undefined;
  readonly #head: string;
  #attempt = 0;
  #target: SnapshotTarget | undefined;
  #pool: UpstreamPool | undefined;
  #upstream: UpstreamConnection | undefined;
  #status = 0;
  #discarding = false;
  #closeAfter: boolean;
  /** The current attempt has ended (response, failure, timeout or abort): later events of it are ignored. */
  #settled = false;
  #finished = false;
  #timer: NodeJS.Timeout | undefined;
  #lastError: unknown;

  constructor(host: OutboundExchangeHost, connection: DownstreamConnection<undefined>, request: BufferedRequest, serviceLabel: string, circuit: Circuit | undefined, plan: ExchangePlan | undefined) {
    this.#host = host;
    this.#connection = connection;
    this.#request = request;
    this.#serviceLabel = serviceLabel;
    this.#circuit = circuit;
    this.#plan = plan;
    this.#closeAfter = request.head.close;
    const upgrade = request.head.upgrade;
    this.#head = plan ? rewriteHead(request.head, NO_EXTRA_DROPS, upgrade ? upgradeLines(upgrade) : '') : '';
  }

  /** Answers with the sidecar's own error response (no target was tried, or all failed). */
  refuse(error: unknown): void {
    const code = error instanceof ProxyError ? error.code : 'CW_PROXY_ERROR';
    const status = code === ProxyErrorCodes.connectTimeout ? 504 : code === ProxyErrorCodes.unknownService ? 404 : 503;
    this.#connection.write(textResponse(status, `${(error as Error).message}\n`, { 'x-causeway-error': code }));
    this.#done(status, code);
    this.#connection.finish(this.#request.head.close);
  }

  start(): void {
    this.#connection.onAbort(this);
    this.#try(0);
  }

  #try(i: number): void {
    const plan = this.#plan!;
    this.#attempt = i;
    const target = (this.#target = plan.plan[i]!);
    const pool = (this.#pool = this.#host.pool(target, plan.route, plan.connectTimeoutMs));
    const idle = pool.takeIdle();
    if (idle) {
      this.#send(idle);
      return;
    }
    pool.acquire().then(
      (upstream) => this.#send(upstream),
      (error: unknown) => {
        this.#host.connectFailed(target, plan.route, error, plan.policy);
        this.#next(error);
      },
    );
  }

  #next(error: unknown): void {
    this.#lastError = error;
    if (this.#connection.gone) this.#done(499, 'downstream_closed');
    else if (this.#attempt + 1 < this.#plan!.attempts) this.#try(this.#attempt + 1);
    else this.refuse(error instanceof ProxyError ? error : new ProxyError(ProxyErrorCodes.upstreamReset, `${this.#serviceLabel}: ${(error as Error)?.message ?? 'no response'}`, { cause: error }));
  }

  #send(upstream: UpstreamConnection): void {
    if (this.#connection.gone) {
      this.#pool!.release(upstream, true);
      this.#done(499, 'downstream_closed');
      return;
    }
    this.#upstream = upstream;
    this.#status = 0;
    this.#discarding = false;
    this.#settled = false;
    upstream.send(this.#request.head.method, this.#head, this.#request.body, this, this.#request.head.upgrade !== undefined);
    const ms = this.#plan!.policy?.requestTimeoutMs;
    if (ms) this.#timer = setTimeout(requestTimedOut, ms, this, upstream, ms);
  }

  /** The traffic policy's requestTimeoutMs passed without a response head. */
  timedOut(upstream: UpstreamConnection, ms: number): void {
    if (upstream !== this.#upstream || this.#settled) return;
    upstream.destroy();
    this.#attemptFailed(new ProxyError(ProxyErrorCodes.connectTimeout, `no response within ${ms} ms (traffic policy requestTimeoutMs)`), this.#status !== 0, true);
  }

  aborted(): void {
    this.#clearTimer();
    const upstream = this.#upstream;
    if (upstream && !this.#settled) {
      this.#settled = true;
      upstream.destroy();
      this.#pool!.release(upstream, false);
    }
    this.#done(this.#status || 499, this.#status ? 'incomplete' : 'downstream_closed');
  }

  #clearTimer(): void {
    if (this.#timer) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  // ---- ResponseSink (the current attempt's upstream)

  head(response: ResponseHead, kind: 'none' | 'length' | 'chunked' | 'close'): 'forward' | 'discard' {
    if (response.status < 200) {
      this.#connection.write(rewriteHead(response, NO_EXTRA_DROPS, ''));
      return 'forward';
    }
    this.#clearTimer();
    const status = (this.#status = response.status);
    const key = targetKey(this.#target!);
    const plan = this.#plan!;
    const method = this.#request.head.method;
    // The server sidecar answered for an app that is gone: eject it and try the next target.
    const serverSide = status === 503 ? headerValue(response, 'x-causeway-error') : undefined;
    if ((serverSide === APP_UNAVAILABLE || (serverSide === APP_RESET && IDEMPOTENT.has(method))) && this.#attempt + 1 < plan.attempts) {
      this.#discarding = true;
      this.#host.outliers.failure(key, 'connect', outlierSettings(plan.policy));
      this.#lastError = new ProxyError(ProxyErrorCodes.upstreamReset, `${this.#serviceLabel}: ${serverSide} from ${key}`);
      return 'discard';
    }
    if (status >= 500) this.#host.outliers.failure(key, 'http-5xx', outlierSettings(plan.policy));
    else this.#host.outliers.success(key);
    if (kind === 'close') this.#closeAfter = true;
    this.#connection.write(rewriteHead(response, NO_EXTRA_DROPS, this.#closeAfter ? 'connection: close\r\n' : ''));
    return 'forward';
  }

  body(chunk: Buffer): void {
    this.#connection.write(chunk, this.#upstream!);
  }

  end(reusable: boolean): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#pool!.release(this.#upstream!, reusable);
    if (this.#discarding) {
      this.#next(this.#lastError);
      return;
    }
    this.#connection.onAbort(undefined);
    this.#done(this.#status, 'ok');
    this.#connection.finish(this.#closeAfter);
  }

  fail(error: Error, gotHead: boolean): void {
    this.#attemptFailed(error, gotHead, false);
  }

  upgraded(response: ResponseHead, rest: Buffer): void {
    this.#clearTimer();
    this.#settled = true;
    this.#status = 101;
    const upstream = this.#upstream!;
    this.#pool!.forget(upstream);
    this.#host.outliers.success(targetKey(this.#target!));
    this.#connection.switchProtocols(upstream, response, rest, this.#request.head.upgrade!);
    this.#done(101, 'upgraded');
  }

  batch(open: boolean): void {
    if (open) this.#connection.io.cork();
    else this.#connection.io.uncork();
  }

  #attemptFailed(error: Error, gotHead: boolean, timedOut: boolean): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#clearTimer();
    this.#pool!.release(this.#upstream!, false);
    if (gotHead && !this.#discarding) {
      // Part of the response is already with the app: nothing to do but cut it.
      this.#connection.onAbort(undefined);
      this.#connection.abort();
      this.#done(this.#status, 'incomplete');
      return;
    }
    // The request reached the target but no response came (the target died or reset).
    const plan = this.#plan!;
    this.#host.outliers.failure(targetKey(this.#target!), 'connect', outlierSettings(plan.policy));
    const replayable = IDEMPOTENT.has(this.#request.head.method) || this.#upstream!.served > 0;
    if (timedOut || !replayable) this.#attempt = plan.attempts; // no further target
    this.#next(error);
  }

  #done(code: number, result: string): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#circuit) this.#circuit.active--;
    const host = this.#host;
    const cluster = this.#target?.cluster ?? 'none';
    const started = this.#request.started;
    host.metrics.requests.inc({ direction: 'outbound', source_cluster: host.sourceCluster, source_service: host.sourceService, destination_cluster: cluster, destination_service: this.#serviceLabel, code: String(code), result });
    host.metrics.requestSeconds.observe({ direction: 'outbound', destination_cluster: cluster, destination_service: this.#serviceLabel }, (performance.now() - started) / 1000);
    if (host.accessLog) {
      const head = this.#request.head;
      const target = this.#target;
      host.log.debug({ direction: 'outbound', method: head.method, path: head.target, service: this.#serviceLabel, target: target && targetKey(target), cluster, code, result, ms: Math.round((performance.now() - started) * 100) / 100 }, 'request');
    }
  }
}

function requestTimedOut(exchange: OutboundExchange, upstream: UpstreamConnection, ms: number): void {
  exchange.timedOut(upstream, ms);
}

/** Outlier detection settings of a traffic policy (defaults when it has none). */
export function outlierSettings(policy: TrafficPolicy | undefined): { consecutiveFailures?: number; baseEjectionMs?: number } {
  const o = policy?.outlierDetection;
  return o ? { consecutiveFailures: o.consecutiveFailures, baseEjectionMs: o.baseEjectionMs } : {};
}
