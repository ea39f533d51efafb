import { performServerHandshake, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Server as TcpServer, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../mesh/index.js';
import { AppConnections } from './app-connections.js';
import type { AppH2c } from './app-h2c.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { H2Exchange } from './h2-exchange.js';
import { asksForH2c } from './h2c-upgrade.js';
import { textResponse } from './http1.js';
import type { BufferedRequest, DownstreamConnection, DownstreamHandler } from './http1-relay.js';
import type { ListenerBinding } from './http-outbound.js';
import type { SidecarMetrics } from './metrics.js';
import type { AttemptPlan, RequestPolicy } from './request-policy.js';
import type { TargetConnections } from './target-connections.js';
import { HeaderMapRouteRequest } from './traffic-routes.js';

/**
 * Outbound `http2` and `grpc` ports: the app speaks h2c (HTTP/2 with prior knowledge,
 * as gRPC clients do, or after an HTTP/1.1 request with `Upgrade: h2c`) to the listener,
 * and each stream is one request under the request policy ({@link H2Exchange}) — so the
 * calls of one long-lived gRPC channel spread over the service's targets like HTTP/1.1
 * requests do. Other HTTP/1.1 requests are answered 426 (the mTLS hop of these ports
 * speaks HTTP/2).
 */
export class H2Outbound {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #metrics: SidecarMetrics;
  readonly #log: Logger;
  readonly #appH2c: AppH2c;
  readonly #downstreams: AppConnections;

  constructor(policy: RequestPolicy, connections: TargetConnections, metrics: SidecarMetrics, log: Logger, appH2c: AppH2c) {
    this.#policy = policy;
    this.#connections = connections;
    this.#metrics = metrics;
    this.#log = log.child({ module: 'h2-outbound' });
    this.#appH2c = appH2c;
    this.#downstreams = new AppConnections(metrics);
  }

  /** An HTTP/2 port's listener: each stream goes to the service the listener stands for at that moment. */
  server(listener: ListenerBinding): TcpServer {
    // Read by the fast path's reader only until the first bytes say how the app speaks HTTP/2.
    return this.#downstreams.server(new H2PortRequests(this, listener, this.#appH2c));
  }

  close(): void {
    this.#downstreams.close();
  }

  /** An h2c connection (prior knowledge, or upgraded): one HTTP/2 session with the app. */
  accept(socket: Duplex, listener: ListenerBinding): void {
    let session: ServerHttp2Session;
    try {
      session = performServerHandshake(socket);
    } catch (error) {
      this.#log.debug({ err: error }, 'h2c handshake with the app failed');
      socket.destroy();
      return;
    }
    // The connection goes with its session (also one that failed: a bad preface, a protocol error).
    this.#appH2c.track(session, socket);
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.#forward(stream, headers, listener));
  }

  /** One stream: the policy's plan, then an exchange; a stream it refuses is answered at once. */
  #forward(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, listener: ListenerBinding): void {
    const policy = this.#policy;
    const spec = listener.spec;
    if (!spec) {
      new H2Exchange(policy, this.#connections, this.#metrics, stream, headers, 'unknown', undefined).refuse(new ProxyError(ProxyErrorCodes.unknownService, 'this listener no longer stands for a mesh service'));
      return;
    }
    let plan: AttemptPlan | undefined;
    try {
      plan = policy.plan(spec, new HeaderMapRouteRequest(headers[':method'], headers[':path'], headers));
      policy.admitRequest(plan);
    } catch (error) {
      // Not admitted (rate limit, breaker): the plan, if one was made, only names the route in the log.
      new H2Exchange(policy, this.#connections, this.#metrics, stream, headers, spec.serviceLabel, undefined).refuse(error, plan);
      return;
    }
    new H2Exchange(policy, this.#connections, this.#metrics, stream, headers, spec.serviceLabel, plan).start();
  }
}

/**
 * The first request of a connection to an HTTP/2 port that did not open with the HTTP/2
 * preface: an `Upgrade: h2c` switches it to HTTP/2; anything else gets a 426 that says
 * how to speak to the port, and the connection closes.
 */
class H2PortRequests implements DownstreamHandler<undefined> {
  readonly #outbound: H2Outbound;
  readonly #listener: ListenerBinding;
  readonly #appH2c: AppH2c;

  constructor(outbound: H2Outbound, listener: ListenerBinding, appH2c: AppH2c) {
    this.#outbound = outbound;
    this.#listener = listener;
    this.#appH2c = appH2c;
  }

  http2(socket: Duplex): void {
    this.#outbound.accept(socket, this.#listener);
  }

  handle(connection: DownstreamConnection<undefined>, request: BufferedRequest): void {
    const upgrade = request.head.upgrade;
    let why = 'it speaks HTTP/2 only';
    if (upgrade !== undefined && asksForH2c(upgrade)) {
      if (this.#appH2c.upgrade(connection, request, (upgraded) => this.http2(upgraded)) !== 'declined') return;
      why = 'the upgrade needs one HTTP2-Settings header and a request body of at most 65,535 bytes with a Content-Length';
    }
    connection.write(upgradeRequired(why));
    connection.finish(true);
  }

  /** A request the fast path's reader does not take (HTTP/1.0, `Expect`…): the same 426. */
  handOff(socket: Socket): void {
    socket.end(upgradeRequired('it speaks HTTP/2 only'));
    // Read (and drop) what else the client sent, so that its FIN closes the connection.
    socket.resume();
  }
}

function upgradeRequired(why: string): Buffer {
  return textResponse(426, `this port's protocol is http2 or grpc and ${why}: connect with HTTP/2 prior knowledge (h2c), or send Upgrade: h2c with HTTP2-Settings\n`, { upgrade: 'h2c', 'x-causeway-error': ProxyErrorCodes.badRequest }, true);
}
