import type { Server as HttpServer } from 'node:http';
import type { Http2Server } from 'node:http2';
import type { Server as TcpServer, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { AppConnections } from './app-connections.js';
import type { AppH2c } from './app-h2c.js';
import { asksForH2c } from './h2c-upgrade.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { headerValue, type RequestHead } from './http1.js';
import type { SidecarMetrics } from './metrics.js';
import type { BufferedRequest, DownstreamConnection, DownstreamHandler } from './http1-relay.js';
import type { HttpFallback } from './http-fallback.js';
import { OutboundExchange } from './outbound-exchange.js';
import type { AttemptPlan, OutboundListenerSpec, RequestPolicy } from './request-policy.js';
import type { TargetConnections } from './target-connections.js';
import type { RouteRequest } from './traffic-routes.js';

/** What an HTTP port's listener stands for at the moment (the listener table updates `spec` in place). */
export interface ListenerBinding {
  readonly spec: OutboundListenerSpec | undefined;
}

/**
 * Outbound HTTP ports: each connection is read by the HTTP/1.1 fast path
 * ({@link DownstreamConnection}); each request is planned and admitted by the request
 * policy and forwarded by an {@link OutboundExchange}. A connection the fast path does
 * not take goes to Node's HTTP server ({@link HttpFallback}), under the same policy.
 * The app may speak HTTP/2 too (h2c): a connection that opens with the HTTP/2 preface,
 * or whose request asks for `Upgrade: h2c`, goes to Node's HTTP/2 server, each stream
 * one request on the fallback path.
 */
export class HttpOutbound {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #fallback: HttpFallback;
  readonly #metrics: SidecarMetrics;
  readonly #appH2c: AppH2c;
  readonly #downstreams: AppConnections;

  constructor(policy: RequestPolicy, connections: TargetConnections, fallback: HttpFallback, metrics: SidecarMetrics, appH2c: AppH2c) {
    this.#policy = policy;
    this.#connections = connections;
    this.#fallback = fallback;
    this.#metrics = metrics;
    this.#appH2c = appH2c;
    this.#downstreams = new AppConnections(metrics);
  }

  /** An HTTP port's listener: each request goes to the service the listener stands for at that moment. */
  server(listener: ListenerBinding): TcpServer {
    const handler = new ListenerRequests(this, listener, this.#fallback, this.#appH2c);
    const server = this.#downstreams.server(handler);
    server.once('close', () => handler.closed());
    return server;
  }

  close(): void {
    this.#downstreams.close();
  }

  /** A connection left the fast path (counted once per connection, never per request). */
  handedOff(to: 'http2' | 'node-http1'): void {
    this.#metrics.appHandoffs.inc({ to });
  }

  /** One request on the fast path: the policy's plan, then an exchange; a request it refuses is answered at once. */
  forward(connection: DownstreamConnection<undefined>, request: BufferedRequest, spec: OutboundListenerSpec | undefined): void {
    const policy = this.#policy;
    if (!spec) {
      new OutboundExchange(policy, this.#connections, connection, request, 'unknown', undefined).refuse(new ProxyError(ProxyErrorCodes.unknownService, 'this listener no longer stands for a mesh service'));
      return;
    }
    let plan: AttemptPlan | undefined;
    try {
      plan = policy.plan(spec, new HeadRouteRequest(request.head));
      policy.admitRequest(plan);
    } catch (error) {
      // Not admitted (rate limit, breaker): the plan, if one was made, only names the route in the log.
      new OutboundExchange(policy, this.#connections, connection, request, spec.serviceLabel, undefined).refuse(error, plan);
      return;
    }
    new OutboundExchange(policy, this.#connections, connection, request, spec.serviceLabel, plan).start();
  }
}

/**
 * The fast path's handler of one listener: requests go to {@link HttpOutbound.forward},
 * hand-offs to Node's HTTP server, h2c connections to Node's HTTP/2 server.
 */
class ListenerRequests implements DownstreamHandler<undefined> {
  readonly #outbound: HttpOutbound;
  readonly #listener: ListenerBinding;
  readonly #fallback: HttpFallback;
  readonly #appH2c: AppH2c;
  #server: HttpServer | undefined;
  #h2Server: Http2Server | undefined;

  constructor(outbound: HttpOutbound, listener: ListenerBinding, fallback: HttpFallback, appH2c: AppH2c) {
    this.#outbound = outbound;
    this.#listener = listener;
    this.#fallback = fallback;
    this.#appH2c = appH2c;
  }

  handle(connection: DownstreamConnection<undefined>, request: BufferedRequest): void {
    const upgrade = request.head.upgrade;
    if (upgrade !== undefined && asksForH2c(upgrade)) {
      if (this.#appH2c.upgrade(connection, request, (upgraded) => this.#serveH2(upgraded)) !== 'declined') return;
      // Served as HTTP/1.1: the head is forwarded without the upgrade (and without Upgrade/HTTP2-Settings, hop-by-hop).
      request = { ...request, head: { ...request.head, upgrade: undefined } };
    }
    this.#outbound.forward(connection, request, this.#listener.spec);
  }

  /** The connection opened with the HTTP/2 preface (h2c with prior knowledge). */
  http2(socket: Socket): void {
    this.#outbound.handedOff('http2');
    this.#serveH2(socket);
  }

  /** An h2c connection (prior knowledge, or upgraded): a session of this listener's HTTP/2 server. */
  #serveH2(socket: Duplex): void {
    if (!this.#h2Server) {
      const server = (this.#h2Server = this.#fallback.h2Server(this.#listener));
      server.on('session', (session) => this.#appH2c.track(session));
    }
    this.#h2Server.emit('connection', socket);
  }

  handOff(socket: Socket | TLSSocket): void {
    this.#outbound.handedOff('node-http1');
    (this.#server ??= this.#fallback.server(this.#listener)).emit('connection', socket);
    socket.resume();
  }

  closed(): void {
    if (this.#server) this.#fallback.forget(this.#server);
  }
}

/** What a route match reads of a request on the fast path: its parsed head. */
class HeadRouteRequest implements RouteRequest {
  readonly #head: RequestHead;

  constructor(head: RequestHead) {
    this.#head = head;
  }

  get method(): string {
    return this.#head.method;
  }

  get target(): string {
    return this.#head.target;
  }

  header(lowerName: string): string | undefined {
    return headerValue(this.#head, lowerName);
  }
}
