import type { SnapshotTarget } from '../mesh/index.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { fastPathFacts, outboundParties, type HttpAccessFacts } from './access-log.js';
import { traceHeaders, type RequestTrace } from './tracing.js';
import { REQUEST_ID_HEADER } from './request-id.js';
import { recordOutboundSpans } from './request-spans.js';
import { peerSpiffeId } from './peer-certificate.js';
import { headerValue, rewriteHead, textResponse, upgradeLines, type ResponseHead } from './http1.js';
import { type AbortListener, type BufferedRequest, type DownstreamConnection, type ResponseSink, type UpstreamConnection, type UpstreamPool } from './http1-relay.js';
import { errorStatus, type AttemptPlan, type RequestPolicy } from './request-policy.js';
import { CONNECT_FAILURE, type TryOutcome } from './retry-policy.js';
import { retryNow, routeTimedOut, type RetryTimers } from './exchange-timers.js';
import { targetKey } from './target-balancer.js';
import type { TargetConnections } from './target-connections.js';

const NO_EXTRA_DROPS: ReadonlySet<string> = new Set();
/** Headers replaced when the sidecar gives the request its `x-request-id` (with or without a trace). */
const REQUEST_ID_DROPS: ReadonlySet<string> = new Set([REQUEST_ID_HEADER]);
const TRACE_AND_REQUEST_ID_DROPS: ReadonlySet<string> = new Set([...traceHeaders(), REQUEST_ID_HEADER]);

/**
 * One request of the outbound fast path: targets in plan order; after each try the
 * request policy says whether the next target gets the request (and after what
 * back-off); the route's timeout cuts the whole exchange. The response head is
 * rewritten, its body forwarded as it comes. A class rather than closures: it is made
 * once per request.
 */
export class OutboundExchange implements ResponseSink, AbortListener, RetryTimers {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #connection: DownstreamConnection<undefined>;
  readonly #request: BufferedRequest;
  readonly #serviceLabel: string;
  /** Set once the request policy admitted the request (its circuit counts it). */
  readonly #plan: AttemptPlan | undefined;
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
  /** The per-try timeout of the current try. */
  #timer: NodeJS.Timeout | undefined;
  /** The route's timeout over all tries. */
  #routeTimer: NodeJS.Timeout | undefined;
  /** The back-off before the next try. */
  #retryTimer: NodeJS.Timeout | undefined;
  /** Back-off decided for a try whose response is being discarded (the retry starts when it ends). */
  #retryDelayMs = 0;
  #lastError: unknown;
  /** For the access log: when the current attempt was sent and its response head came, body bytes to the app, what ended it. */
  #sentAt = 0;
  #respondedAt = 0;
  #bytesSent = 0;
  #response: ResponseHead | undefined;
  #endError: unknown;
  /** Set when tracing is on: this request's spans, and when its first attempt left. */
  readonly #trace: RequestTrace | undefined;
  #firstSentAt = 0;
  #refusedPlan: AttemptPlan | undefined;
  /** The `x-request-id` this sidecar gave the request (the app's was absent or not acceptable). */
  readonly #requestId: string | undefined;

  constructor(policy: RequestPolicy, connections: TargetConnections, connection: DownstreamConnection<undefined>, request: BufferedRequest, serviceLabel: string, plan: AttemptPlan | undefined) {
    this.#policy = policy;
    this.#connections = connections;
    this.#connection = connection;
    this.#request = request;
    this.#serviceLabel = serviceLabel;
    this.#plan = plan;
    this.#closeAfter = request.head.close;
    const upgrade = request.head.upgrade;
    const tracer = policy.tracer;
    this.#trace = tracer && plan ? tracer.start(headerValue(request.head, 'traceparent'), true) : undefined;
    const requestId = (this.#requestId = policy.requestIds?.replacement(headerValue(request.head, REQUEST_ID_HEADER)));
    if (!plan) {
      this.#head = '';
      return;
    }
    // One rewrite of the head whatever is added: the trace's line, the request id's, the upgrade's.
    let extra = upgrade ? upgradeLines(upgrade) : '';
    if (requestId !== undefined) extra = `${REQUEST_ID_HEADER}: ${requestId}\r\n${extra}`;
    const trace = this.#trace;
    if (trace) this.#head = rewriteHead(request.head, requestId === undefined ? traceHeaders() : TRACE_AND_REQUEST_ID_DROPS, trace.header + extra);
    else this.#head = rewriteHead(request.head, requestId === undefined ? NO_EXTRA_DROPS : REQUEST_ID_DROPS, extra);
  }

  /**
   * Answers with the sidecar's own error response (no target was tried, or all failed).
   * `refusedPlan`: the plan of a request the policy did not admit, for its log line only.
   */
  refuse(error: unknown, refusedPlan?: AttemptPlan): void {
    this.#refusedPlan = refusedPlan;
    const { status, code } = errorStatus(error);
    this.#connection.write(textResponse(status, `${(error as Error).message}\n`, { 'x-causeway-error': code }));
    this.#endError = error;
    this.#done(status, code);
    this.#connection.finish(this.#request.head.close);
  }

  start(): void {
    this.#connection.onAbort(this);
    const deadline = this.#plan!.deadline;
    if (deadline !== undefined) this.#routeTimer = setTimeout(routeTimedOut, Math.max(0, deadline - performance.now()), this);
    this.#try(0);
  }

  /** The route's timeout passed: unless the response head is with the app already, the request ends with a 504. */
  routeTimedOut(): void {
    this.#routeTimer = undefined;
    if (this.#finished || (this.#status >= 200 && !this.#discarding)) return;
    const upstream = this.#upstream;
    if (upstream && !this.#settled) {
      this.#settled = true;
      upstream.destroy();
      this.#pool!.release(upstream, false);
    }
    this.#connection.onAbort(undefined);
    this.refuse(this.#policy.routeTimeout(this.#plan!));
  }

  /** The back-off after a failed try passed. */
  retryNow(): void {
    this.#retryTimer = undefined;
    if (!this.#finished) this.#try(this.#attempt + 1);
  }

  #try(i: number): void {
    const plan = this.#plan!;
    this.#attempt = i;
    const target = (this.#target = plan.targets[i]!);
    const pool = (this.#pool = this.#connections.pool(target, plan.route, plan.connectTimeoutMs));
    const idle = pool.takeIdle();
    if (idle) {
      this.#send(idle);
      return;
    }
    pool.acquire().then(
      (upstream) => this.#send(upstream),
      (error: unknown) => {
        this.#policy.connectFailed(plan, target, error);
        this.#afterTry(CONNECT_FAILURE, error);
      },
    );
  }

  /** A try failed (or its response is discarded): the next try, after the policy's back-off, or the error response. */
  #afterTry(outcome: TryOutcome, error: unknown): void {
    if (this.#finished) return;
    this.#lastError = error;
    if (this.#connection.gone) {
      this.#done(499, 'downstream_closed');
      return;
    }
    const delay = this.#policy.retryDelay(this.#plan!, this.#attempt, outcome, this.#request.head.method, true);
    if (delay === undefined) this.refuse(this.#policy.exhausted(this.#plan, error));
    else this.#retryAfter(delay);
  }

  #retryAfter(delay: number): void {
    if (delay <= 0) this.#try(this.#attempt + 1);
    else this.#retryTimer = setTimeout(retryNow, delay, this);
  }

  #send(upstream: UpstreamConnection): void {
    if (this.#finished) {
      this.#pool!.release(upstream, true);
      return;
    }
    if (this.#connection.gone) {
      this.#pool!.release(upstream, true);
      this.#done(499, 'downstream_closed');
      return;
    }
    this.#upstream = upstream;
    this.#status = 0;
    this.#discarding = false;
    this.#settled = false;
    this.#sentAt = performance.now();
    if (this.#firstSentAt === 0) this.#firstSentAt = this.#sentAt;
    upstream.send(this.#request.head.method, this.#head, this.#request.body, this, this.#request.head.upgrade !== undefined);
    const ms = this.#plan!.perTryTimeoutMs;
    if (ms) this.#timer = setTimeout(requestTimedOut, ms, this, upstream, ms);
  }

  /** The traffic policy's requestTimeoutMs passed without a response head. */
  timedOut(upstream: UpstreamConnection, ms: number): void {
    if (upstream !== this.#upstream || this.#settled) return;
    upstream.destroy();
    this.#attemptFailed(this.#policy.requestTimeout(ms), this.#status !== 0, true);
  }

  aborted(): void {
    this.#clearTimers();
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

  #clearTimers(): void {
    this.#clearTimer();
    if (this.#routeTimer) clearTimeout(this.#routeTimer);
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#routeTimer = this.#retryTimer = undefined;
  }

  // ---- ResponseSink (the current attempt's upstream)

  head(response: ResponseHead, kind: 'none' | 'length' | 'chunked' | 'close'): 'forward' | 'discard' {
    if (response.status < 200) {
      this.#connection.write(rewriteHead(response, NO_EXTRA_DROPS, ''));
      return 'forward';
    }
    this.#clearTimer();
    this.#respondedAt = performance.now();
    this.#response = response;
    const status = (this.#status = response.status);
    const serverError = status === 503 ? headerValue(response, 'x-causeway-error') : undefined;
    const plan = this.#plan!;
    const outcome = this.#policy.responded(plan, this.#target!, status, serverError);
    const delay = this.#policy.retryDelay(plan, this.#attempt, outcome, this.#request.head.method, true);
    if (delay !== undefined) {
      this.#discarding = true;
      this.#retryDelayMs = delay;
      this.#lastError = new ProxyError(ProxyErrorCodes.upstreamReset, `${plan.serviceLabel}: ${serverError ?? status} from ${targetKey(this.#target!)}`);
      return 'discard';
    }
    if (kind === 'close') this.#closeAfter = true;
    this.#connection.write(rewriteHead(response, NO_EXTRA_DROPS, this.#closeAfter ? 'connection: close\r\n' : ''));
    return 'forward';
  }

  body(chunk: Buffer): void {
    this.#bytesSent += chunk.length;
    this.#connection.write(chunk, this.#upstream!);
  }

  end(reusable: boolean): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#pool!.release(this.#upstream!, reusable);
    if (this.#discarding) {
      this.#retryAfter(this.#retryDelayMs);
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
    this.#policy.responded(this.#plan!, this.#target!, 101, undefined);
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
    if (this.#discarding) {
      // The retry was decided on the response head; only its body was lost.
      this.#retryAfter(this.#retryDelayMs);
      return;
    }
    if (gotHead) {
      // Part of the response is already with the app: nothing to do but cut it.
      this.#connection.onAbort(undefined);
      this.#connection.abort();
      this.#endError = error;
      this.#done(this.#status, 'incomplete');
      return;
    }
    this.#afterTry(this.#policy.noResponse(this.#plan!, this.#target!, this.#upstream!.served > 0, timedOut), error);
  }

  #done(code: number, result: string): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#clearTimers();
    if (this.#plan) this.#policy.release(this.#plan);
    this.#policy.requestDone(this.#serviceLabel, this.#target, code, result, this.#request.started, this.#policy.accessLog.enabled ? this.#accessFacts(code, result) : undefined, this.#plan ?? this.#refusedPlan);
    const trace = this.#trace;
    if (trace?.sampled) {
      const head = this.#request.head;
      recordOutboundSpans(this.#policy.tracer!, trace, {
        method: head.method,
        path: head.target,
        status: code,
        serviceLabel: this.#serviceLabel,
        sourcePrincipal: this.#policy.sourcePrincipal,
        target: this.#target,
        retries: this.#attempt,
        started: this.#request.started,
        firstSentAt: this.#firstSentAt,
        respondedAt: this.#respondedAt,
        destinationPrincipal: this.#upstream && peerSpiffeId(this.#upstream.socket),
      });
    }
  }

  #accessFacts(status: number, result: string): HttpAccessFacts {
    const target = this.#target;
    const response = this.#response;
    return {
      ...fastPathFacts(this.#request, response),
      ...outboundParties(target, this.#serviceLabel, this.#policy.sourcePrincipal, this.#upstream && peerSpiffeId(this.#upstream.socket)),
      status,
      result,
      error: this.#endError,
      retries: this.#attempt,
      bytesSent: this.#bytesSent,
      upstreamServiceMs: response ? this.#respondedAt - this.#sentAt : undefined,
      traceId: this.#trace?.traceId,
      requestId: this.#requestId,
    };
  }

}

function requestTimedOut(exchange: OutboundExchange, upstream: UpstreamConnection, ms: number): void {
  exchange.timedOut(upstream, ms);
}
