import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { listenOn } from '../mesh/index.js';
import { ProxyErrorCodes } from './errors.js';
import type { HttpFallback } from './http-fallback.js';
import { outboundListenerSpec, type OutboundListenerSpec } from './request-policy.js';
import type { TcpOutbound } from './tcp-outbound.js';
import { IDLE_KEEPALIVE_MS } from './wire.js';

/** A mesh service a host name stands for (`<svc>.<ns>.svc[.<cluster>].<domain>` or `<svc>.<ns>`). */
export type MeshHostResolver = (hostname: string) => { namespace: string; service: string; cluster: string | undefined } | undefined;

/**
 * The optional outbound HTTP proxy (`sidecar.httpProxy`, 15001) for apps that honour
 * `HTTP_PROXY`: requests in absolute form take Node's HTTP server path
 * ({@link HttpFallback}), CONNECT tunnels the TCP path ({@link TcpOutbound}) — the same
 * request policy as the loopback listeners. Any other host is refused with 403, since
 * the sidecar only routes inside the mesh.
 */
export class ForwardProxy {
  readonly #http: HttpFallback;
  readonly #tcp: TcpOutbound;
  #server: HttpServer | undefined;

  constructor(http: HttpFallback, tcp: TcpOutbound) {
    this.#http = http;
    this.#tcp = tcp;
  }

  /** Listens on `host:port` (fails naming `sidecar.httpProxy.port`); returns the bound port. */
  async start(host: string, port: number, resolveHost: MeshHostResolver): Promise<number> {
    const specFor = (authority: string | undefined, defaultPort: number): OutboundListenerSpec | undefined => {
      if (!authority) return undefined;
      const match = /^([^:]+)(?::(\d+))?$/.exec(authority);
      if (!match) return undefined;
      const target = resolveHost(match[1]!);
      if (!target) return undefined;
      return outboundListenerSpec(host, port, target.namespace, target.service, Number(match[2] ?? defaultPort), target.cluster, true);
    };
    const server = createHttpServer({ keepAlive: true, noDelay: true, requestTimeout: 0, keepAliveTimeout: IDLE_KEEPALIVE_MS }, (req, res) => {
      let authority: string | undefined;
      try {
        authority = req.url?.startsWith('/') ? req.headers.host : new URL(req.url ?? '').host;
      } catch {
        authority = undefined;
      }
      const spec = specFor(authority, 80);
      if (!spec) {
        req.resume();
        res.writeHead(403, { 'content-type': 'text/plain', 'x-causeway-error': ProxyErrorCodes.unknownService }).end(`${authority ?? '(no host)'} is not a mesh service name\n`);
        return;
      }
      void this.#http.serve(req, res, spec);
    });
    server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => {});
      const spec = specFor(req.url, 443);
      if (!spec) {
        socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      const downstream = socket as Socket;
      downstream.pause();
      if (head.length > 0) downstream.unshift(head);
      downstream.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      void this.#tcp.proxy(downstream, spec);
    });
    server.on('clientError', (_error, socket: Duplex) => socket.destroy());
    const bound = await listenOn(server, { host, port }, { setting: 'sidecar.httpProxy.port' });
    this.#server = server;
    return bound.port;
  }

  close(): void {
    this.#server?.closeAllConnections();
    this.#server?.close();
  }
}
