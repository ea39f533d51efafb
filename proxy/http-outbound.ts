import type { Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { SidecarMetrics } from './metrics.js';
import { DownstreamConnection, type BufferedRequest, type DownstreamHandler } from './http1-relay.js';
import type { HttpFallback } from './http-fallback.js';
import { OutboundExchange } from './outbound-exchange.js';
import type { AttemptPlan, OutboundListenerSpec, RequestPolicy } from './request-policy.js';
import type { TargetConnections } from './target-connections.js';
import { IDLE_KEEPALIVE_MS } from './wire.js';

/** What an HTTP port's listener stands for at the moment (the listener table updates `spec` in place). */
export interface ListenerBinding {
  readonly spec: OutboundListenerSpec | undefined;
}

/**
 * Outbound HTTP ports: each connection is read by the HTTP/1.1 fast path
 * ({@link DownstreamConnection}); each request is planned and admitted by the request
 * policy and forwarded by an {@link OutboundExchange}. A connection the fast path does
 * not take goes to Node's HTTP server ({@link HttpFallback}), under the same policy.
 */
export class HttpOutbound {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #fallback: HttpFallback;
  readonly #metrics: SidecarMetrics;
  readonly #downstreams = new Set<Socket>();

  constructor(policy: RequestPolicy, connections: TargetConnections, fallback: HttpFallback, metrics: SidecarMetrics) {
    this.#policy = policy;
    this.#connections = connections;
    this.#fallback = fallback;
    this.#metrics = metrics;
  }

  /** An HTTP port's listener: each request goes to the service the listener stands for at that moment. */
  server(listener: ListenerBinding): TcpServer {
    const handler = new ListenerRequests(this, listener, this.#fallback);
    const server = createTcpServer({ noDelay: true }, (socket) => {
      this.#downstreams.add(socket);
      this.#metrics.activeConnections.inc({ direction: 'outbound' });
      socket.once('close', () => {
        this.#downstreams.delete(socket);
        this.#metrics.activeConnections.dec({ direction: 'outbound' });
      });
      new DownstreamConnection(socket, handler, undefined, IDLE_KEEPALIVE_MS);
    });
    server.once('close', () => handler.closed());
    return server;
  }

  close(): void {
    for (const socket of this.#downstreams) socket.destroy();
  }

  /** One request on the fast path: the policy's plan, then an exchange; a request it refuses is answered at once. */
  forward(connection: DownstreamConnection<undefined>, request: BufferedRequest, spec: OutboundListenerSpec | undefined): void {
    const policy = this.#policy;
    let plan: AttemptPlan;
    try {
      plan = policy.admit(spec);
    } catch (error) {
      new OutboundExchange(policy, this.#connections, connection, request, spec?.serviceLabel ?? 'unknown', undefined).refuse(error);
      return;
    }
    new OutboundExchange(policy, this.#connections, connection, request, spec!.serviceLabel, plan).start();
  }
}

/** The fast path's handler of one listener: requests go to {@link HttpOutbound.forward}, hand-offs to Node's HTTP server. */
class ListenerRequests implements DownstreamHandler<undefined> {
  readonly #outbound: HttpOutbound;
  readonly #listener: ListenerBinding;
  readonly #fallback: HttpFallback;
  #server: HttpServer | undefined;

  constructor(outbound: HttpOutbound, listener: ListenerBinding, fallback: HttpFallback) {
    this.#outbound = outbound;
    this.#listener = listener;
    this.#fallback = fallback;
  }

  handle(connection: DownstreamConnection<undefined>, request: BufferedRequest): void {
    this.#outbound.forward(connection, request, this.#listener.spec);
  }

  handOff(socket: Socket | TLSSocket): void {
    (this.#server ??= this.#fallback.server(this.#listener)).emit('connection', socket);
    socket.resume();
  }

  closed(): void {
    if (this.#server) this.#fallback.forget(this.#server);
  }
}
