import { performServerHandshake, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { Logger } from '../mesh/index.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { H2Exchange } from './h2-exchange.js';
import type { ListenerBinding } from './http-outbound.js';
import type { SidecarMetrics } from './metrics.js';
import type { AttemptPlan, RequestPolicy } from './request-policy.js';
import type { TargetConnections } from './target-connections.js';
import { HeaderMapRouteRequest } from './traffic-routes.js';
import { IDLE_KEEPALIVE_MS } from './wire.js';

/**
 * Outbound `http2` and `grpc` ports: the app speaks h2c (HTTP/2 with prior knowledge,
 * as gRPC clients do) to the listener, and each stream is one request under the request
 * policy ({@link H2Exchange}) — so the calls of one long-lived gRPC channel spread over
 * the service's targets like HTTP/1.1 requests do.
 */
export class H2Outbound {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #metrics: SidecarMetrics;
  readonly #log: Logger;
  readonly #sessions = new Set<ServerHttp2Session>();

  constructor(policy: RequestPolicy, connections: TargetConnections, metrics: SidecarMetrics, log: Logger) {
    this.#policy = policy;
    this.#connections = connections;
    this.#metrics = metrics;
    this.#log = log.child({ module: 'h2-outbound' });
  }

  /** An HTTP/2 port's listener: each stream goes to the service the listener stands for at that moment. */
  server(listener: ListenerBinding): TcpServer {
    return createTcpServer({ noDelay: true }, (socket) => this.#accept(socket, listener));
  }

  close(): void {
    for (const session of this.#sessions) session.destroy();
  }

  #accept(socket: Socket, listener: ListenerBinding): void {
    const metrics = this.#metrics;
    socket.on('error', () => {});
    let session: ServerHttp2Session;
    try {
      session = performServerHandshake(socket);
    } catch (error) {
      this.#log.debug({ err: error }, 'h2c handshake with the app failed');
      socket.destroy();
      return;
    }
    this.#sessions.add(session);
    metrics.activeConnections.inc({ direction: 'outbound' });
    metrics.h2Sessions.inc({ direction: 'outbound', peer: 'app' });
    session.once('close', () => {
      // The connection goes with its session (also one that failed: a bad preface, a protocol error).
      socket.destroy();
      this.#sessions.delete(session);
      metrics.activeConnections.dec({ direction: 'outbound' });
      metrics.h2Sessions.dec({ direction: 'outbound', peer: 'app' });
    });
    // An app that is not speaking HTTP/2 (an HTTP/1.1 client on a gRPC port) fails the preface: logged, connection closed.
    session.on('error', (error) => this.#log.debug({ err: error }, 'h2c session with the app failed'));
    session.setTimeout(IDLE_KEEPALIVE_MS, () => session.close());
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
