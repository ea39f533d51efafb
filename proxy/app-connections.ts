import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { DownstreamConnection, type DownstreamHandler } from './http1-relay.js';
import type { SidecarMetrics } from './metrics.js';
import { IDLE_KEEPALIVE_MS } from './wire.js';

/**
 * The app's connections to the outbound listeners of one kind (HTTP or HTTP/2 ports):
 * each is read by the fast path's reader ({@link DownstreamConnection}) until its
 * handler takes it or hands it off, is counted in `activeConnections`, and is closed
 * with the others when the sidecar stops.
 */
export class AppConnections {
  readonly #metrics: SidecarMetrics;
  readonly #sockets = new Set<Socket>();

  constructor(metrics: SidecarMetrics) {
    this.#metrics = metrics;
  }

  /** A listener whose connections go to `handler`. */
  server(handler: DownstreamHandler<undefined>): TcpServer {
    return createTcpServer({ noDelay: true }, (socket) => {
      this.#sockets.add(socket);
      this.#metrics.activeConnections.inc({ direction: 'outbound' });
      socket.once('close', () => {
        this.#sockets.delete(socket);
        this.#metrics.activeConnections.dec({ direction: 'outbound' });
      });
      new DownstreamConnection(socket, handler, undefined, IDLE_KEEPALIVE_MS);
    });
  }

  close(): void {
    for (const socket of this.#sockets) socket.destroy();
  }
}
