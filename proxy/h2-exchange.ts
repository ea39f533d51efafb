import { constants, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { SnapshotTarget } from '../mesh/index.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { GrpcStatus, grpcErrorHeaders, grpcStatusOf, grpcTimeoutMs, isGrpcRequest } from './grpc-wire.js';
import { endsStream, forwardHeaders, relayResponse } from './h2-relay.js';
import type { SidecarMetrics } from './metrics.js';
import { errorStatus, type AttemptPlan, type RequestPolicy } from './request-policy.js';
import type { TargetConnections } from './target-connections.js';

/**
 * Request bodies up to this size are held for a replay; a longer one (a client-streaming
 * call, an upload) streams on without, so a stream never waits for its body to be buffered.
 */
const REPLAY_BUFFER_BYTES = 64 * 1024;

/**
 * One HTTP/2 stream from the app — one request, one gRPC call — under the request
 * policy: targets in plan order on each target's pooled session; a failed connect, a
 * stream that ends without a response, a server sidecar's "app unavailable" or a
 * retryable `grpc-status` in a trailers-only response moves on to the next target while
 * the request body is held (up to {@link REPLAY_BUFFER_BYTES}: a call that streamed
 * more is not replayed). The body streams on as it comes; the response streams back
 * with its trailers. `grpc-timeout` is the call's deadline: when it passes the call ends
 * with `DEADLINE_EXCEEDED` here. The sidecar's own errors on a gRPC call are gRPC
 * errors (`UNAVAILABLE`, trailers-only), on other streams a status with a text body.
 */
export class H2Exchange {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #metrics: SidecarMetrics;
  readonly #stream: ServerHttp2Stream;
  readonly #headers: IncomingHttpHeaders;
  readonly #serviceLabel: string;
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
  /**
   * The stream may be replayed after a reset without a response: its session had carried
   * streams before (a race with the session's closing, as with a kept-alive HTTP/1.1
   * connection) or the peer refused it unprocessed (REFUSED_STREAM, GOAWAY).
   */
  #reused = false;
  /** The response is going to the app: no other attempt can start. */
  #committed = false;
  #finished = false;
  #attemptTimer: NodeJS.Timeout | undefined;
  #deadlineTimer: NodeJS.Timeout | undefined;

  constructor(policy: RequestPolicy, connections: TargetConnections, metrics: SidecarMetrics, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, serviceLabel: string, plan: AttemptPlan | undefined) {
    this.#policy = policy;
    this.#connections = connections;
    this.#metrics = metrics;
    this.#stream = stream;
    this.#headers = headers;
    this.#serviceLabel = serviceLabel;
    this.#plan = plan;
    this.#grpc = isGrpcRequest(headers);
    stream.on('error', () => {});
  }

  /** Answers with the sidecar's own error (no target was tried, or all failed). */
  refuse(error: unknown): void {
    const { status, code } = errorStatus(error);
    const message = (error as Error).message;
    if (this.#grpc) this.#respondGrpcError(GrpcStatus.unavailable, message, code);
    else if (!this.#stream.headersSent && !this.#stream.destroyed) {
      this.#stream.respond({ ':status': status, 'content-type': 'text/plain', 'x-causeway-error': code });
      this.#stream.end(`${message}\n`);
    }
    this.#done(this.#grpc ? 200 : status, code, this.#grpc ? GrpcStatus.unavailable : undefined);
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

  /** The traffic policy's requestTimeoutMs passed without response headers on this attempt. */
  attemptTimedOut(upstream: ClientHttp2Stream, ms: number): void {
    if (upstream !== this.#upstream || this.#committed || this.#finished) return;
    this.#upstream = undefined;
    upstream.close(constants.NGHTTP2_CANCEL);
    this.#attemptFailed(this.#policy.requestTimeout(ms), true);
  }

  #requestData(chunk: Buffer): void {
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
        this.#next(error);
      },
    );
  }

  #next(error: unknown): void {
    if (this.#finished) return;
    if (this.#attempt + 1 < this.#plan!.attempts) this.#try(this.#attempt + 1);
    else this.refuse(this.#policy.exhausted(this.#plan, error));
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
      upstream = session.request(forwardHeaders(this.#headers), { endStream: endNow });
    } catch (error) {
      // The session closed between being handed out and this request (GOAWAY, idle close).
      this.#attemptFailed(error as Error, false);
      return;
    }
    this.#upstream = upstream;
    upstream.on('error', () => {});
    if (!endNow) {
      for (const chunk of body) upstream.write(chunk);
      if (this.#requestEnded) upstream.end();
    }
    if (!this.#held && this.#pending.length > 0) {
      this.#pending = [];
      this.#stream.resume();
    }
    upstream.once('response', (headers: IncomingHttpHeaders, flags: number) => this.#response(upstream, headers, endsStream(flags)));
    upstream.once('close', () => {
      if (this.#upstream !== upstream || this.#committed) return;
      // REFUSED_STREAM (also what a GOAWAY does to the streams after its last one): the peer never processed it.
      if (upstream.rstCode === constants.NGHTTP2_REFUSED_STREAM) this.#reused = true;
      this.#attemptFailed(new ProxyError(ProxyErrorCodes.upstreamReset, `${this.#serviceLabel}: the stream was reset before a response (HTTP/2 code ${upstream.rstCode ?? 'none'})`), false);
    });
    const ms = this.#plan!.policy?.requestTimeoutMs;
    if (ms) this.#attemptTimer = setTimeout(attemptTimedOut, ms, this, upstream, ms);
  }

  #response(upstream: ClientHttp2Stream, headers: IncomingHttpHeaders, trailersOnly: boolean): void {
    if (this.#upstream !== upstream || this.#finished) return;
    clearTimeout(this.#attemptTimer);
    const plan = this.#plan!;
    const status = Number(headers[':status'] ?? 0);
    const grpcStatus = grpcStatusOf(headers);
    // A gRPC response with a body has its status in the trailers: judged when they come.
    if (!this.#grpc || trailersOnly) {
      const serverError = status === 503 || grpcStatus !== undefined ? (headers['x-causeway-error'] as string | undefined) : undefined;
      const replay = this.#policy.responded(plan, this.#attempt, this.#target!, status, serverError, this.#headers[':method'] as string, this.#held !== undefined, grpcStatus);
      if (replay) {
        this.#upstream = undefined;
        upstream.close(constants.NGHTTP2_CANCEL);
        this.#next(replay);
        return;
      }
    }
    this.#committed = true;
    const target = this.#target!;
    const judged = !this.#grpc || trailersOnly;
    relayResponse(upstream, headers, trailersOnly, this.#stream, this.#grpc, (finalStatus, complete) => {
      if (!judged) this.#policy.responded(plan, this.#attempt, target, status, undefined, this.#headers[':method'] as string, false, finalStatus);
      this.#done(status, complete ? 'ok' : 'incomplete', finalStatus);
    });
  }

  #attemptFailed(error: Error, timedOut: boolean): void {
    if (this.#finished) return;
    clearTimeout(this.#attemptTimer);
    this.#upstream = undefined;
    const plan = this.#plan!;
    if (!this.#policy.noResponse(plan, this.#target!, this.#headers[':method'] as string, this.#reused, this.#held !== undefined, timedOut)) this.#attempt = plan.attempts;
    this.#next(error);
  }

  #respondGrpcError(status: number, message: string, causewayCode: string | undefined): void {
    const stream = this.#stream;
    if (stream.headersSent || stream.destroyed || stream.closed) return;
    stream.respond(grpcErrorHeaders(status, message, causewayCode), { endStream: true });
  }

  #clearTimers(): void {
    clearTimeout(this.#attemptTimer);
    clearTimeout(this.#deadlineTimer);
  }

  #done(code: number, result: string, grpcStatus: number | undefined): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#clearTimers();
    if (this.#plan) this.#plan.circuit.active--;
    this.#policy.requestDone(this.#serviceLabel, this.#target, code, result, this.#started, this.#headers[':method'] as string | undefined, this.#headers[':path'] as string | undefined);
    if (grpcStatus !== undefined) this.#metrics.grpcResponses.inc({ direction: 'outbound', destination_cluster: this.#target?.cluster ?? 'none', destination_service: this.#serviceLabel, grpc_status: String(grpcStatus) });
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
