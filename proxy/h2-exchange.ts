import { constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { SnapshotTarget } from '../mesh/index.js';
import { h2StreamFacts, headerText, outboundParties, type HttpAccessFacts } from './access-log.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { GrpcStatus, grpcErrorHeaders, grpcStatusOf, grpcTimeoutMs, isGrpcRequest } from './grpc-wire.js';
import { GRPC_HEADERS_HOLD_MS, GrpcResponseHold, type HeldResponseOwner } from './grpc-response-hold.js';
import { endsStream, forwardHeaders, relayResponse } from './h2-relay.js';
import { sessionPeerSpiffeId } from './h2-session-pool.js';
import type { SidecarMetrics } from './metrics.js';
import { errorStatus, type AttemptPlan, type RequestPolicy } from './request-policy.js';
import { CONNECT_FAILURE, type TryOutcome } from './retry-policy.js';
import { REQUEST_ID_HEADER } from './request-id.js';
import { recordOutboundSpans } from './request-spans.js';
import type { RequestTrace } from './tracing.js';
import { retryNow, routeTimedOut, type RetryTimers } from './exchange-timers.js';
import { targetKey } from './target-balancer.js';
import type { TargetConnections } from './target-connections.js';

/**
 * Request bodies up to this size are held for a replay; a longer one (a client-streaming
 * call, an upload) streams on without, so a stream never waits for its body to be buffered.
 */
const REPLAY_BUFFER_BYTES = 64 * 1024;

/**
 * One HTTP/2 stream from the app — one request, one gRPC call — under the request
 * policy, as the HTTP/1.1 fast path's requests are (outbound-exchange.ts): targets in
 * plan order on each target's pooled session; after each try the policy says whether the
 * next target gets the stream (the route's `retries.on`, gRPC codes included, the retry
 * budget) and after what back-off; the route's timeout cuts the whole exchange. A stream
 * is replayed only while its request body is held (up to {@link REPLAY_BUFFER_BYTES}: a
 * call that streamed more is not replayed). The body streams on as it comes; the
 * response streams back with its trailers. `grpc-timeout` is the call's deadline: when it
 * passes the call ends with `DEADLINE_EXCEEDED` here. The sidecar's own errors on a gRPC
 * call are gRPC errors (trailers-only, the status {@link errorStatus} gives), on other
 * streams a status with a text body. A gRPC call's `grpc-status` is judged for a retry
 * from a trailers-only response or, while a retry is still possible, from trailers that
 * come before any message: until the first message (or {@link GRPC_HEADERS_HOLD_MS}) the
 * response headers are held ({@link GrpcResponseHold}); after a message, never.
 */
export class H2Exchange implements RetryTimers, HeldResponseOwner {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #metrics: SidecarMetrics;
  readonly #stream: ServerHttp2Stream;
  readonly #headers: IncomingHttpHeaders;
  readonly #method: string;
  readonly #serviceLabel: string;
  /** Set once the request policy admitted the stream (its circuit counts it). */
  readonly #plan: AttemptPlan | undefined;
  readonly #grpc: boolean;
  readonly #started = performance.now();
  /** The request body so far, while it can still be replayed; undefined once it outgrew the buffer. */
  #held: Buffer[] | undefined = [];
  #heldBytes = 0;
  /** Body chunks that arrived while no upstream stream was open and none are held (the app is paused meanwhile). */
  #pending: Buffer[] = [];
  #requestEnded = false;
  #attempt = 0;
  #target: SnapshotTarget | undefined;
  #upstream: ClientHttp2Stream | undefined;
  #session: ClientHttp2Session | undefined;
  /**
   * The stream may be replayed after a reset without a response: its session had carried
   * streams before (a race with the session's closing, as with a kept-alive HTTP/1.1
   * connection) or the peer refused it unprocessed (REFUSED_STREAM, GOAWAY).
   */
  #reused = false;
  /** The response is going to the app: no other attempt can start. */
  #committed = false;
  /** The current try's response headers, held until its first message or its trailers. */
  #hold: GrpcResponseHold | undefined;
  #finished = false;
  /** The per-try timeout of the current try. */
  #attemptTimer: NodeJS.Timeout | undefined;
  /** The call's `grpc-timeout`. */
  #deadlineTimer: NodeJS.Timeout | undefined;
  /** The route's timeout over all tries. */
  #routeTimer: NodeJS.Timeout | undefined;
  /** The back-off before the next try. */
  #retryTimer: NodeJS.Timeout | undefined;
  /** For the access log: request body bytes, when the current try left and its response came, what ended the stream. */
  #bytesReceived = 0;
  #bytesSent = 0;
  #sentAt = 0;
  #respondedAt = 0;
  #response: IncomingHttpHeaders | undefined;
  #endError: unknown;
  #refusedPlan: AttemptPlan | undefined;
  /** The `x-request-id` this sidecar gave the stream (the app's was absent or not acceptable). */
  readonly #requestId: string | undefined;
  /** Set when tracing is on and the stream was admitted: its spans, and when its first try left. */
  readonly #trace: RequestTrace | undefined;
  #firstSentAt = 0;
  /** What every try adds to the app's headers: the request id, the trace context (undefined: nothing). */
  readonly #extraHeaders: Record<string, string> | undefined;

  constructor(policy: RequestPolicy, connections: TargetConnections, metrics: SidecarMetrics, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, serviceLabel: string, plan: AttemptPlan | undefined) {
    this.#policy = policy;
    this.#connections = connections;
    this.#metrics = metrics;
    this.#stream = stream;
    this.#headers = headers;
    this.#method = (headers[':method'] as string | undefined) ?? '';
    this.#serviceLabel = serviceLabel;
    this.#plan = plan;
    this.#grpc = isGrpcRequest(headers);
    const requestId = (this.#requestId = policy.requestIds?.replacement(headerText(headers[REQUEST_ID_HEADER])));
    const trace = (this.#trace = plan ? policy.tracer?.start(headerText(headers.traceparent), true) : undefined);
    if (requestId !== undefined || trace) {
      const extra: Record<string, string> = {};
      if (requestId !== undefined) extra[REQUEST_ID_HEADER] = requestId;
      if (trace) extra.traceparent = trace.traceparent;
      this.#extraHeaders = extra;
    }
    stream.on('error', () => {});
  }

  /**
   * Answers with the sidecar's own error (no target was tried, or all failed).
   * `refusedPlan`: the plan of a stream the policy did not admit, for its log line only.
   */
  refuse(error: unknown, refusedPlan?: AttemptPlan): void {
    this.#refusedPlan = refusedPlan;
    const { status, grpcStatus, code } = errorStatus(error);
    const message = (error as Error).message;
    if (this.#grpc) this.#respondGrpcError(grpcStatus, message, code);
    else if (!this.#stream.headersSent && !this.#stream.destroyed) {
      this.#stream.respond({ ':status': status, 'content-type': 'text/plain', 'x-causeway-error': code });
      this.#stream.end(`${message}\n`);
    }
    this.#endError = error;
    this.#done(this.#grpc ? 200 : status, code, this.#grpc ? grpcStatus : undefined);
    this.#stream.resume();
  }

  start(): void {
    const stream = this.#stream;
    stream.on('data', (chunk: Buffer) => this.#requestData(chunk));
    stream.once('end', () => {
      this.#requestEnded = true;
      this.#upstream?.end();
    });
    stream.once('close', () => {
      if (this.#finished) return;
      this.#clearTimers();
      this.#upstream?.close(constants.NGHTTP2_CANCEL);
      this.#done(499, 'downstream_closed', undefined);
    });
    const deadline = grpcTimeoutMs(this.#headers);
    if (this.#grpc && deadline !== undefined) this.#deadlineTimer = setTimeout(deadlinePassed, deadline, this, deadline);
    const routeDeadline = this.#plan!.deadline;
    if (routeDeadline !== undefined) this.#routeTimer = setTimeout(routeTimedOut, Math.max(0, routeDeadline - performance.now()), this);
    this.#try(0);
  }

  /** The call's `grpc-timeout` passed: the upstream stream is cancelled and the app gets DEADLINE_EXCEEDED. */
  deadlinePassed(ms: number): void {
    if (this.#finished) return;
    this.#deadlineTimer = undefined;
    this.#upstream?.close(constants.NGHTTP2_CANCEL);
    if (!this.#stream.headersSent) this.#respondGrpcError(GrpcStatus.deadlineExceeded, `deadline of ${ms} ms (grpc-timeout) passed in the sidecar`, undefined);
    else this.#stream.close(constants.NGHTTP2_CANCEL);
    this.#done(200, 'deadline_exceeded', GrpcStatus.deadlineExceeded);
  }

  /** The route's timeout passed: unless the response is with the app already, the stream ends with a 504 (gRPC: DEADLINE_EXCEEDED). */
  routeTimedOut(): void {
    this.#routeTimer = undefined;
    if (this.#finished || this.#committed) return;
    // The response headers came: the route's timeout is met, they go to the app.
    if (this.#hold) return this.#hold.release();
    const upstream = this.#upstream;
    this.#upstream = undefined;
    upstream?.close(constants.NGHTTP2_CANCEL);
    this.refuse(this.#policy.routeTimeout(this.#plan!));
  }

  /** The back-off after a failed try passed. */
  retryNow(): void {
    this.#retryTimer = undefined;
    if (!this.#finished) this.#try(this.#attempt + 1);
  }

  /** The per-try timeout passed without response headers on this try. */
  attemptTimedOut(upstream: ClientHttp2Stream, ms: number): void {
    if (upstream !== this.#upstream || this.#committed || this.#finished) return;
    this.#upstream = undefined;
    upstream.close(constants.NGHTTP2_CANCEL);
    this.#attemptFailed(this.#policy.requestTimeout(ms), true);
  }

  #requestData(chunk: Buffer): void {
    this.#bytesReceived += chunk.length;
    if (this.#held) {
      this.#heldBytes += chunk.length;
      if (this.#heldBytes <= REPLAY_BUFFER_BYTES) this.#held.push(chunk);
      else {
        // Not sent anywhere yet (still connecting): what was held is the start of the body.
        if (!this.#upstream) this.#pending = this.#held;
        this.#held = undefined;
      }
    }
    const upstream = this.#upstream;
    if (!upstream) {
      if (!this.#held) {
        this.#pending.push(chunk);
        this.#stream.pause();
      }
      return;
    }
    if (!upstream.write(chunk)) {
      this.#stream.pause();
      upstream.once('drain', () => this.#stream.resume());
    }
  }

  #try(i: number): void {
    const plan = this.#plan!;
    this.#attempt = i;
    const target = (this.#target = plan.targets[i]!);
    const pool = this.#connections.h2Pool(target, plan.route, plan.connectTimeoutMs);
    const session = pool.session();
    if (!(session instanceof Promise)) {
      this.#send(session);
      return;
    }
    session.then(
      (s) => this.#send(s),
      (error: unknown) => {
        if (this.#finished) return;
        this.#policy.connectFailed(plan, target, error);
        this.#afterTry(CONNECT_FAILURE, error);
      },
    );
  }

  /** A try failed (or its response is not taken): the next try, after the policy's back-off, or the error answer. */
  #afterTry(outcome: TryOutcome, error: unknown): void {
    if (this.#finished) return;
    const delay = this.#policy.retryDelay(this.#plan!, this.#attempt, outcome, this.#method, this.#held !== undefined);
    if (delay === undefined) this.refuse(this.#policy.exhausted(this.#plan, error));
    else if (delay <= 0) this.#try(this.#attempt + 1);
    else this.#retryTimer = setTimeout(retryNow, delay, this);
  }

  #send(session: ClientHttp2Session): void {
    if (this.#finished) return;
    const streamsBefore = (session as SessionWithCount)[STREAMS_SERVED] ?? 0;
    (session as SessionWithCount)[STREAMS_SERVED] = streamsBefore + 1;
    this.#reused = streamsBefore > 0;
    const body = this.#held ?? this.#pending;
    const endNow = this.#requestEnded && body.length === 0;
    let upstream: ClientHttp2Stream;
    try {
      upstream = session.request(forwardHeaders(this.#headers, undefined, this.#extraHeaders), { endStream: endNow });
    } catch (error) {
      // The session closed between being handed out and this request (GOAWAY, idle close).
      this.#attemptFailed(error as Error, false);
      return;
    }
    this.#upstream = upstream;
    this.#session = session;
    this.#sentAt = performance.now();
    if (this.#firstSentAt === 0) this.#firstSentAt = this.#sentAt;
    upstream.on('error', () => {});
    if (!endNow) {
      for (const chunk of body) upstream.write(chunk);
      if (this.#requestEnded) upstream.end();
    }
    if (!this.#held && this.#pending.length > 0) {
      this.#pending = [];
      this.#stream.resume();
    }
    upstream.once('response', (headers: IncomingHttpHeaders, flags: number) => this.#responseHead(upstream, headers, endsStream(flags)));
    upstream.once('close', () => {
      if (this.#upstream !== upstream || this.#committed) return;
      // REFUSED_STREAM (also what a GOAWAY does to the streams after its last one): the peer never processed it.
      if (upstream.rstCode === constants.NGHTTP2_REFUSED_STREAM) this.#reused = true;
      const when = this.#hold ? 'after its response headers, before a message or a grpc-status' : 'before a response';
      this.#attemptFailed(new ProxyError(ProxyErrorCodes.upstreamReset, `${this.#serviceLabel}: the stream was reset ${when} (HTTP/2 code ${upstream.rstCode ?? 'none'})`), false);
    });
    const ms = this.#plan!.perTryTimeoutMs;
    if (ms) this.#attemptTimer = setTimeout(attemptTimedOut, ms, this, upstream, ms);
  }

  #responseHead(upstream: ClientHttp2Stream, headers: IncomingHttpHeaders, trailersOnly: boolean): void {
    if (this.#upstream !== upstream || this.#finished) return;
    clearTimeout(this.#attemptTimer);
    this.#respondedAt = performance.now();
    this.#response = headers;
    // A gRPC response with a body has its status in the trailers. While the status could
    // still be retried the headers wait for the first message or the trailers; once a
    // message went to the app the call is committed and its status only counts for the
    // outlier detector.
    if (!this.#grpc || trailersOnly) {
      if (!this.#retried(upstream, headers, headers)) this.#commit(upstream, headers, trailersOnly, true, undefined);
    } else if (this.#policy.mayRetryGrpcStatus(this.#plan!, this.#attempt, this.#held !== undefined)) {
      this.#hold = new GrpcResponseHold(upstream, this, GRPC_HEADERS_HOLD_MS);
    } else this.#commit(upstream, headers, false, false, undefined);
  }

  /** The held response's first message came (or its hold ran out): its headers go to the app and the call is committed. */
  releaseHeld(upstream: ClientHttp2Stream, trailers: IncomingHttpHeaders | undefined, ranOut: boolean): void {
    this.#hold = undefined;
    if (this.#upstream !== upstream || this.#finished) return;
    if (ranOut) this.#metrics.grpcHeadersHoldExpired.inc({ destination_service: this.#serviceLabel });
    this.#commit(upstream, this.#response!, false, false, trailers);
  }

  /** The held response ended with its trailers and no message: their status is judged as a trailers-only response's would be. */
  heldTrailers(upstream: ClientHttp2Stream, trailers: IncomingHttpHeaders): void {
    this.#hold = undefined;
    if (this.#upstream !== upstream || this.#finished) return;
    const headers = this.#response!;
    if (!this.#retried(upstream, headers, trailers)) this.#commit(upstream, headers, false, true, trailers);
  }

  /**
   * Counts the try's response (`status`: the headers or trailers with its `grpc-status`)
   * for the outlier detector and, when the policy retries it, starts the next try: true.
   */
  #retried(upstream: ClientHttp2Stream, headers: IncomingHttpHeaders, status: IncomingHttpHeaders): boolean {
    const plan = this.#plan!;
    const target = this.#target!;
    const httpStatus = Number(headers[':status'] ?? 0);
    const grpcStatus = grpcStatusOf(status);
    const serverError = httpStatus === 503 || grpcStatus !== undefined ? (status['x-causeway-error'] as string | undefined) : undefined;
    const outcome = this.#policy.responded(plan, target, httpStatus, serverError, grpcStatus);
    const delay = this.#policy.retryDelay(plan, this.#attempt, outcome, this.#method, this.#held !== undefined);
    if (delay === undefined) return false;
    this.#upstream = undefined;
    upstream.close(constants.NGHTTP2_CANCEL);
    this.#endError = new ProxyError(ProxyErrorCodes.upstreamReset, `${plan.serviceLabel}: ${grpcStatus !== undefined ? `grpc-status ${grpcStatus}` : (serverError ?? httpStatus)} from ${targetKey(target)}`);
    if (delay <= 0) this.#try(this.#attempt + 1);
    else this.#retryTimer = setTimeout(retryNow, delay, this);
    return true;
  }

  /**
   * The try's response goes to the app; no other try can start. `judged`: its status was
   * counted already (else the relay's final `grpc-status` is); `trailers`: trailers that
   * came while it was held.
   */
  #commit(upstream: ClientHttp2Stream, headers: IncomingHttpHeaders, trailersOnly: boolean, judged: boolean, trailers: IncomingHttpHeaders | undefined): void {
    this.#committed = true;
    const plan = this.#plan!;
    const target = this.#target!;
    const status = Number(headers[':status'] ?? 0);
    relayResponse(
      upstream,
      headers,
      trailersOnly,
      this.#stream,
      this.#grpc,
      (finalStatus, complete, bytesSent) => {
        this.#bytesSent = bytesSent;
        if (!judged) this.#policy.responded(plan, target, status, undefined, finalStatus);
        if (!complete) this.#endError = new ProxyError(ProxyErrorCodes.upstreamReset, `${plan.serviceLabel}: the response from ${targetKey(target)} broke off`);
        this.#done(status, complete ? 'ok' : 'incomplete', finalStatus);
      },
      trailers,
    );
  }

  #attemptFailed(error: Error, timedOut: boolean): void {
    if (this.#finished) return;
    clearTimeout(this.#attemptTimer);
    this.#hold?.cancel();
    this.#hold = undefined;
    this.#upstream = undefined;
    this.#afterTry(this.#policy.noResponse(this.#plan!, this.#target!, this.#reused, timedOut), error);
  }

  #respondGrpcError(status: number, message: string, causewayCode: string | undefined): void {
    const stream = this.#stream;
    if (stream.headersSent || stream.destroyed || stream.closed) return;
    stream.respond(grpcErrorHeaders(status, message, causewayCode), { endStream: true });
  }

  #clearTimers(): void {
    clearTimeout(this.#attemptTimer);
    clearTimeout(this.#deadlineTimer);
    clearTimeout(this.#routeTimer);
    clearTimeout(this.#retryTimer);
    this.#attemptTimer = this.#deadlineTimer = this.#routeTimer = this.#retryTimer = undefined;
    this.#hold?.cancel();
    this.#hold = undefined;
  }

  #done(code: number, result: string, grpcStatus: number | undefined): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#clearTimers();
    if (this.#plan) this.#policy.release(this.#plan);
    const access = this.#policy.accessLog.enabled ? this.#accessFacts(code, result, grpcStatus) : undefined;
    this.#policy.requestDone(this.#serviceLabel, this.#target, code, result, this.#started, access, this.#plan ?? this.#refusedPlan);
    const trace = this.#trace;
    if (trace?.sampled) {
      recordOutboundSpans(this.#policy.tracer!, trace, {
        method: this.#method,
        path: this.#headers[':path'],
        status: code,
        grpcStatus,
        serviceLabel: this.#serviceLabel,
        sourcePrincipal: this.#policy.sourcePrincipal,
        target: this.#target,
        retries: this.#attempt,
        started: this.#started,
        firstSentAt: this.#firstSentAt,
        respondedAt: this.#respondedAt,
        destinationPrincipal: this.#session && sessionPeerSpiffeId(this.#session),
      });
    }
    if (grpcStatus !== undefined) this.#metrics.grpcResponses.inc({ direction: 'outbound', destination_cluster: this.#target?.cluster ?? 'none', destination_service: this.#serviceLabel, grpc_status: String(grpcStatus) });
  }

  #accessFacts(status: number, result: string, grpcStatus: number | undefined): HttpAccessFacts {
    const response = this.#response;
    return {
      ...h2StreamFacts(this.#started, this.#headers, response, grpcStatus, this.#bytesReceived, this.#bytesSent),
      ...outboundParties(this.#target, this.#serviceLabel, this.#policy.sourcePrincipal, this.#session && sessionPeerSpiffeId(this.#session)),
      status,
      result,
      error: this.#endError,
      retries: this.#attempt,
      upstreamServiceMs: response ? this.#respondedAt - this.#sentAt : undefined,
      requestId: this.#requestId,
      traceId: this.#trace?.traceId,
    };
  }
}

/** How many streams a pooled session has carried, kept on the session object itself (no map lookup per stream). */
const STREAMS_SERVED = Symbol('streamsServed');
type SessionWithCount = ClientHttp2Session & { [STREAMS_SERVED]?: number };

function deadlinePassed(exchange: H2Exchange, ms: number): void {
  exchange.deadlinePassed(ms);
}

function attemptTimedOut(exchange: H2Exchange, upstream: ClientHttp2Stream, ms: number): void {
  exchange.attemptTimedOut(upstream, ms);
}
