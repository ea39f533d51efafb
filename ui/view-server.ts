import { chmodSync, existsSync, lstatSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Registry } from 'prom-client';
import { listenOn, logger, type PortSetting } from '../mesh/index.js';
import { UiError, UiErrorCodes } from './errors.js';
import type { MeshViewFeed } from './mesh-view-feed.js';
import type { MeshView } from './mesh-view.js';
import type { UiMetrics } from './metrics.js';

export const UI_DEFAULT_PORT = 15080;
export const UiPort: PortSetting = { setting: 'ui.port', flag: '--port' };

/**
 * The files the page is made of; nothing is fetched from anywhere else (works offline).
 * `../ui/assets/` resolves the same from this file and from a command bundle (dist/, one
 * folder below the checkout root: scripts/bundles.mjs).
 */
const nodeModules = createRequire(import.meta.url);
const ASSETS: Readonly<Record<string, { file: string; type: string }>> = {
  '/': { file: fileURLToPath(new URL('../ui/assets/index.html', import.meta.url)), type: 'text/html; charset=utf-8' },
  '/assets/mesh-view.js': { file: fileURLToPath(new URL('../ui/assets/mesh-view.js', import.meta.url)), type: 'text/javascript; charset=utf-8' },
  '/assets/mesh-view.css': { file: fileURLToPath(new URL('../ui/assets/mesh-view.css', import.meta.url)), type: 'text/css; charset=utf-8' },
  '/assets/cytoscape.min.js': { file: nodeModules.resolve('cytoscape/dist/cytoscape.min.js'), type: 'text/javascript; charset=utf-8' },
};

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

/** Whether `host` names this machine's loopback only (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

export interface ViewServerOptions {
  readonly feed: MeshViewFeed;
  readonly registry: Registry;
  readonly metrics: UiMetrics;
  readonly host?: string;
  readonly port?: number;
  /** Needed to bind anything but loopback: the view shows the mesh's topology to whoever reaches it. */
  readonly allowRemote?: boolean;
  /**
   * Listen on this Unix socket (created 0600) instead of host:port: a socket file is
   * reachable from every network namespace that sees the file, which is how the demo
   * shows a view running inside a cluster's namespace on the host's loopback.
   */
  readonly socketPath?: string;
  /** Comment lines on idle event streams, so proxies and browsers keep them open. */
  readonly keepAliveMs?: number;
}

/**
 * `causeway ui`'s HTTP server (ui/README.md): the page, its assets, `GET /api/mesh`,
 * `GET /api/events` (server-sent events, one `mesh` event per new view), `/healthz/ready`
 * and `/metrics`. Read-only: any method but GET and HEAD answers 405.
 */
export class ViewServer {
  readonly #o: ViewServerOptions;
  readonly #log = logger('ui-server');
  readonly #server: Server;
  readonly #streams = new Set<ServerResponse>();
  #unsubscribe: (() => void) | undefined;
  #keepAlive: NodeJS.Timeout | undefined;
  #port = 0;
  #host: string;

  constructor(options: ViewServerOptions) {
    this.#o = options;
    this.#host = options.host ?? '127.0.0.1';
    if (!isLoopbackHost(this.#host) && !options.allowRemote) {
      throw new UiError(
        UiErrorCodes.remoteBindRefused,
        `--host ${this.#host} is not a loopback address: the view shows the mesh's clusters, gateways and services to whoever reaches it, with no login. Add --allow-remote (ui.allowRemote in the config) to bind it anyway, or keep the default 127.0.0.1 and forward the port (ssh -L).`,
      );
    }
    this.#server = createServer((req, res) => this.#handle(req, res));
    // Longer than clients' own idle limit (undici: 4 s), so a client never sends on a
    // kept-alive connection the server is closing at that moment (a "fetch failed" on a
    // loaded machine); stop() closes every connection anyway.
    this.#server.keepAliveTimeout = 30_000;
  }

  get port(): number {
    return this.#port;
  }

  /** The page's address, e.g. http://127.0.0.1:15080/ (`unix:<path>` on a socket). */
  get url(): string {
    if (this.#o.socketPath !== undefined) return `unix:${this.#o.socketPath}`;
    const host = isIP(this.#host) === 6 ? `[${this.#host}]` : this.#host === '0.0.0.0' ? '127.0.0.1' : this.#host;
    return `http://${host}:${this.#port}/`;
  }

  async start(): Promise<void> {
    if (this.#o.socketPath !== undefined) await this.#listenOnSocket(this.#o.socketPath);
    else this.#port = (await listenOn(this.#server, { host: this.#host, port: this.#o.port ?? UI_DEFAULT_PORT }, UiPort)).port;
    this.#unsubscribe = this.#o.feed.onView((view) => this.#broadcast(view));
    this.#keepAlive = setInterval(() => {
      for (const res of this.#streams) res.write(': keep-alive\n\n');
    }, this.#o.keepAliveMs ?? 15_000);
    this.#keepAlive.unref();
    this.#log.info(this.#o.socketPath !== undefined ? { socket: this.#o.socketPath } : { host: this.#host, port: this.#port }, 'mesh view serving');
  }

  async #listenOnSocket(path: string): Promise<void> {
    // A socket file left by a view that died is replaced; any other file is not.
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new UiError(UiErrorCodes.invalidOption, `--socket ${path} exists and is not a socket; give a new path`);
      rmSync(path);
    }
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', (error) => reject(new UiError(UiErrorCodes.invalidOption, `cannot listen on --socket ${path}: ${error.message}`, { cause: error })));
      this.#server.listen({ path, readableAll: false, writableAll: false }, () => resolve());
    });
    chmodSync(path, 0o600);
  }

  async stop(): Promise<void> {
    this.#unsubscribe?.();
    clearInterval(this.#keepAlive);
    for (const res of this.#streams) res.end();
    this.#streams.clear();
    this.#o.metrics.clients.set(0);
    await new Promise<void>((resolve) => {
      this.#server.closeAllConnections();
      this.#server.close(() => resolve());
    });
  }

  #reply(res: ServerResponse, route: string, code: number, headers: Record<string, string>, body?: string | Buffer): void {
    this.#o.metrics.requests.inc({ route, code: String(code) });
    res.writeHead(code, { ...SECURITY_HEADERS, ...headers });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  }

  /**
   * A loopback-only view answers only requests that name a loopback host: a web page
   * elsewhere that rebinds its own name to 127.0.0.1 (DNS rebinding) gets 421, not the mesh.
   */
  #hostAllowed(req: IncomingMessage): boolean {
    if (this.#o.allowRemote) return true;
    const header = req.headers.host;
    if (header === undefined) return false;
    const name = header.startsWith('[') ? header.slice(1, header.indexOf(']')) : header.replace(/:\d+$/, '');
    return isLoopbackHost(name.toLowerCase());
  }

  #handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (!this.#hostAllowed(req)) {
      this.#reply(res, 'refused', 421, { 'content-type': 'text/plain; charset=utf-8' }, 'this view answers only requests to a loopback host (127.0.0.1, localhost, [::1]); start it with --allow-remote to serve other names\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      this.#reply(res, 'refused', 405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }, 'the mesh view is read-only: only GET and HEAD\n');
      return;
    }
    const asset = ASSETS[path];
    if (asset) {
      readFile(asset.file).then(
        (body) => this.#reply(res, 'asset', 200, { 'content-type': asset.type }, body),
        (error: Error) => {
          this.#log.error({ err: error, file: asset.file }, 'asset missing');
          this.#reply(res, 'asset', 500, { 'content-type': 'text/plain' }, `cannot read ${path}; is the installation complete?\n`);
        },
      );
      return;
    }
    if (path === '/api/mesh') {
      const view = this.#o.feed.view;
      if (!view) this.#reply(res, 'mesh', 503, { 'content-type': 'application/json', 'retry-after': '1' }, '{"error":"the first read of the local etcd has not succeeded yet"}\n');
      else this.#reply(res, 'mesh', 200, { 'content-type': 'application/json' }, `${JSON.stringify(view)}\n`);
      return;
    }
    if (path === '/api/events') {
      this.#openStream(res);
      return;
    }
    if (path === '/healthz/ready') {
      const view = this.#o.feed.view;
      const reasons = !view ? ['the first read of the local etcd has not succeeded yet'] : view.error ? [view.error] : [];
      this.#reply(res, 'ready', reasons.length === 0 ? 200 : 503, { 'content-type': 'application/json' }, `${JSON.stringify({ ready: reasons.length === 0, reasons })}\n`);
      return;
    }
    if (path === '/metrics') {
      this.#o.registry.metrics().then(
        (text) => this.#reply(res, 'metrics', 200, { 'content-type': this.#o.registry.contentType }, text),
        (error: Error) => this.#reply(res, 'metrics', 500, { 'content-type': 'text/plain' }, `metrics failed: ${error.message}\n`),
      );
      return;
    }
    this.#reply(res, 'unknown', 404, { 'content-type': 'text/plain; charset=utf-8' }, 'not found; the view is at /, its data at /api/mesh and /api/events\n');
  }

  #openStream(res: ServerResponse): void {
    this.#o.metrics.requests.inc({ route: 'events', code: '200' });
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': 'text/event-stream; charset=utf-8', connection: 'keep-alive' });
    if (res.req.method === 'HEAD') {
      res.end();
      return;
    }
    res.write('retry: 2000\n\n');
    this.#streams.add(res);
    this.#o.metrics.clients.set(this.#streams.size);
    res.on('close', () => {
      this.#streams.delete(res);
      this.#o.metrics.clients.set(this.#streams.size);
    });
    const view = this.#o.feed.view;
    if (view) this.#send(res, view);
  }

  #send(res: ServerResponse, view: MeshView): void {
    res.write(`event: mesh\ndata: ${JSON.stringify(view)}\n\n`);
    this.#o.metrics.eventsSent.inc();
  }

  #broadcast(view: MeshView): void {
    for (const res of this.#streams) this.#send(res, view);
  }
}
