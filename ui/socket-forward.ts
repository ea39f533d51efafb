import { connect, createServer, type Socket } from 'node:net';
import { listenOn } from '../mesh/index.js';
import { UiPort } from './view-server.js';

export interface SocketForward {
  readonly port: number;
  /** The forwarded page's address on this host's loopback. */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Listens on 127.0.0.1:`port` and splices each connection to the view's Unix socket: the
 * demo's view runs inside a cluster's network namespace, which the host's loopback cannot
 * reach, but the socket file is shared (ui/README.md "The demo").
 */
export async function forwardLoopbackToSocket(options: { socketPath: string; port: number }): Promise<SocketForward> {
  const open = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect({ path: options.socketPath });
    open.add(client).add(upstream);
    const close = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
    client.pipe(upstream).pipe(client);
  });
  const { port } = await listenOn(server, { host: '127.0.0.1', port: options.port }, UiPort);
  return {
    port,
    url: `http://127.0.0.1:${port}/`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
