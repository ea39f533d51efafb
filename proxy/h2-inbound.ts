import { performServerHandshake, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { connect as tcpConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../mesh/index.js';
import { h2StreamFacts, headerText } from './access-log.js';
import { rbacDetails } from './authorization.js';
import { ProxyErrorCodes } from './errors.js';
import { GrpcStatus, grpcErrorHeaders, isGrpcRequest } from './grpc-wire.js';
import { endsStream, forwardHeaders, relayResponse } from './h2-relay.js';
import { H2SessionPool } from './h2-session-pool.js';
import type { InboundRequestFacts } from './inbound.js';
import type { SidecarMetrics } from './metrics.js';
import type { RequestTrace, Tracer } from './tracing.js';
import { APP_RESET, APP_UNAVAILABLE, IDLE_KEEPALIVE_MS } from './wire.js';

/** How long a closing inbound waits for the streams in flight on its HTTP/2 sessions. */
const DRAIN_MS = 1000;

/** What the inbound listener knows of one verified mTLS connection that chose ALPN `h2`. */
export interface InboundH2Connection {
  /** The app port the SNI named. */
  readonly targetPort: number;
  /** The authorization decision for one stream: the denying policy's name, or undefined. */
  denied(): string | undefined;
  /** Counts and logs a denial. */
  countDenial(policy: string): void;
  /** The caller's verified identity as headers for the app (incoming copies are dropped). */
  readonly identityHeaders: Readonly<Record<string, string>>;
  /** Counts one stream: status, result, duration, (access log on) its line, whose facts `facts` gives, and (sampled) its server span. */
  finish(code: number, result: string, started: number, facts: () => InboundRequestFacts, trace: RequestTrace | undefined, grpcStatus: number | undefined): void;
}

export interface InboundH2Deps {
  readonly appHost: string;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  /** `<svc>.<ns>` and own cluster, the labels of `causeway_sidecar_grpc_responses_total`. */
  readonly serviceLabel: string;
  readonly cluster: string;
  /** Headers a caller may not set (the identity headers). */
  readonly dropHeaders: ReadonlySet<string>;
  /** Spans and trace context; undefined = tracing off. */
  readonly tracer: Tracer | undefined;
}

/**
 * The inbound side of HTTP/2 and gRPC ports: a verified mTLS connection that chose ALPN
 * `h2` carries many streams; each is authorized on its own, gets the caller's identity
 * headers and goes to the app as h2c on one pooled session per app port, headers and
 * trailers kept. An app that does not accept the connection answers `UNAVAILABLE` (gRPC)
 * or 503 with `x-causeway-error: CW_PROXY_APP_UNAVAILABLE`, which the client sidecar
 * replays on another target; one that resets a stream it took, `CW_PROXY_APP_RESET`.
 */
export class InboundH2 {
  readonly #deps: InboundH2Deps;
  readonly #apps = new Map<number, H2SessionPool>();
  readonly #sessions = new Set<ServerHttp2Session>();
  readonly #appGauge: { inc(): void; dec(): void };

  constructor(deps: InboundH2Deps) {
    this.#deps = deps;
    const gauge = deps.metrics.h2Sessions;
    this.#appGauge = { inc: () => gauge.inc({ direction: 'inbound', peer: 'app' }), dec: () => gauge.dec({ direction: 'inbound', peer: 'app' }) };
  }

  /** Serves the streams of one verified connection. */
  serve(socket: Duplex, connection: InboundH2Connection): void {
    let session: ServerHttp2Session;
    try {
      session = performServerHandshake(socket);
    } catch (error) {
      this.#deps.log.debug({ err: error }, 'inbound HTTP/2 session failed to start');
      socket.destroy();
      return;
    }
    const gauge = this.#deps.metrics.h2Sessions;
    this.#sessions.add(session);
    gauge.inc({ direction: 'inbound', peer: 'mesh' });
    session.once('close', () => {
      // The connection goes with its session (also one that failed: a bad preface, a protocol error).
      socket.destroy();
      this.#sessions.delete(session);
      gauge.dec({ direction: 'inbound', peer: 'mesh' });
    });
    session.on('error', (error) => this.#deps.log.debug({ err: error }, 'inbound HTTP/2 session failed'));
    session.setTimeout(IDLE_KEEPALIVE_MS, () => session.close());
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.#forward(stream, headers, connection));
  }

  /**
   * Closes every session gracefully: a GOAWAY tells each client sidecar which streams
   * were taken (those finish, up to `drainMs`) and which were not (it replays them on
   * another target), instead of cutting responses half-way.
   */
  async close(drainMs = DRAIN_MS): Promise<void> {
    const sessions = [...this.#sessions];
    await Promise.race([
      Promise.all(sessions.map((session) => new Promise<void>((resolve) => session.close(() => resolve())))),
      new Promise<void>((resolve) => setTimeout(resolve, drainMs).unref()),
    ]);
    for (const session of sessions) session.destroy();
    for (const pool of this.#apps.values()) pool.destroy();
    this.#apps.clear();
  }

  #forward(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, connection: InboundH2Connection): void {
    const record = new StreamRecord(connection, headers, this.#deps, this.#deps.tracer?.start(headerText(headers.traceparent), false));
    const grpc = isGrpcRequest(headers);
    stream.on('error', () => {});
    const denied = connection.denied();
    if (denied) {
      connection.countDenial(denied);
      this.#answer(stream, grpc, 403, GrpcStatus.permissionDenied, `RBAC: access denied (${denied})`, ProxyErrorCodes.authzDenied);
      record.details = rbacDetails(denied);
      record.finish(grpc ? 200 : 403, 'denied', grpc ? GrpcStatus.permissionDenied : undefined);
      stream.resume();
      return;
    }
    const pool = this.#appPool(connection.targetPort);
    const session = pool.session();
    const send = (app: ClientHttp2Session) => this.#send(app, stream, headers, grpc, connection, record);
    if (!(session instanceof Promise)) {
      send(session);
      return;
    }
    session.then(send, (error: unknown) => {
      this.#deps.log.debug({ err: error, port: connection.targetPort }, 'app connection failed');
      this.#answer(stream, grpc, 503, GrpcStatus.unavailable, 'the app behind the sidecar is not listening', APP_UNAVAILABLE);
      record.finish(grpc ? 200 : 503, 'app_unavailable', grpc ? GrpcStatus.unavailable : undefined);
      stream.resume();
    });
  }

  #send(app: ClientHttp2Session, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, grpc: boolean, connection: InboundH2Connection, record: StreamRecord): void {
    if (stream.destroyed || stream.closed) {
      record.finish(499, 'downstream_closed', undefined);
      return;
    }
    let upstream;
    try {
      const trace = record.trace;
      upstream = app.request(forwardHeaders(headers, this.#deps.dropHeaders, trace ? { ...connection.identityHeaders, traceparent: trace.traceparent } : connection.identityHeaders));
    } catch (error) {
      this.#deps.log.debug({ err: error }, 'app session closed before the request');
      this.#answer(stream, grpc, 503, GrpcStatus.unavailable, 'the app closed the connection without answering', APP_RESET);
      record.finish(grpc ? 200 : 503, 'app_reset', grpc ? GrpcStatus.unavailable : undefined);
      return;
    }
    upstream.on('error', () => {});
    stream.pipe(upstream);
    // Counted once the body flows to the app (a listener attached earlier would start the flow with nowhere to go).
    stream.on('data', (chunk: Buffer) => (record.bytesReceived += chunk.length));
    let answered = false;
    upstream.once('response', (responseHeaders: IncomingHttpHeaders, flags: number) => {
      answered = true;
      record.responded(responseHeaders);
      const status = Number(responseHeaders[':status'] ?? 0);
      relayResponse(upstream, responseHeaders, endsStream(flags), stream, grpc, (grpcStatus, complete, bytesSent) => {
        record.bytesSent = bytesSent;
        record.finish(status, complete ? 'ok' : 'incomplete', grpcStatus);
      });
    });
    upstream.once('close', () => {
      if (answered) return;
      this.#answer(stream, grpc, 503, GrpcStatus.unavailable, 'the app closed the stream without answering', APP_RESET);
      record.finish(grpc ? 200 : 503, 'app_reset', grpc ? GrpcStatus.unavailable : undefined);
    });
  }

  /** The sidecar's own answer: a trailers-only gRPC error, or a status with a text body. */
  #answer(stream: ServerHttp2Stream, grpc: boolean, status: number, grpcStatus: number, message: string, code: string): void {
    if (stream.headersSent || stream.destroyed || stream.closed) return;
    if (grpc) {
      stream.respond(grpcErrorHeaders(grpcStatus, message, code), { endStream: true });
      return;
    }
    const headers: OutgoingHttpHeaders = { ':status': status, 'content-type': 'text/plain', 'x-causeway-error': code };
    stream.respond(headers);
    stream.end(`${message}\n`);
  }

  #appPool(port: number): H2SessionPool {
    let pool = this.#apps.get(port);
    if (!pool) {
      const host = this.#deps.appHost;
      pool = new H2SessionPool(() => dialApp(host, port), `http://${host}:${port}`, this.#appGauge);
      this.#apps.set(port, pool);
    }
    return pool;
  }
}

/** One inbound stream's facts as it goes: counted and logged once, when it ends. */
class StreamRecord {
  readonly #connection: InboundH2Connection;
  readonly #headers: IncomingHttpHeaders;
  readonly #deps: InboundH2Deps;
  readonly #started = performance.now();
  #response: IncomingHttpHeaders | undefined;
  #respondedAt = 0;
  #finished = false;
  bytesReceived = 0;
  bytesSent = 0;
  details: string | undefined;

  /** The stream's trace (tracing on): the app gets its server span as the parent. */
  readonly trace: RequestTrace | undefined;

  constructor(connection: InboundH2Connection, headers: IncomingHttpHeaders, deps: InboundH2Deps, trace: RequestTrace | undefined) {
    this.trace = trace;
    this.#connection = connection;
    this.#headers = headers;
    this.#deps = deps;
  }

  responded(headers: IncomingHttpHeaders): void {
    this.#response = headers;
    this.#respondedAt = performance.now();
  }

  finish(code: number, result: string, grpcStatus: number | undefined): void {
    if (this.#finished) return;
    this.#finished = true;
    const started = this.#started;
    this.#connection.finish(code, result, started, () => ({
      ...h2StreamFacts(started, this.#headers, this.#response, grpcStatus, this.bytesReceived, this.bytesSent),
      details: this.details,
      upstreamServiceMs: this.#response ? this.#respondedAt - started : undefined,
    }), this.trace, grpcStatus);
    if (grpcStatus !== undefined) this.#deps.metrics.grpcResponses.inc({ direction: 'inbound', destination_cluster: this.#deps.cluster, destination_service: this.#deps.serviceLabel, grpc_status: String(grpcStatus) });
  }
}

/** A plain TCP connection to the app, resolved once it is accepted. */
function dialApp(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host, port, noDelay: true });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
  });
}
