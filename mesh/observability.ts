import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { ObservabilityPorts, listenOn } from './listen.js';

/** A fresh metrics registry with Node's default process metrics, labelled by component. */
export function createMetricsRegistry(component: string, options: { defaultMetrics?: boolean } = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  if (options.defaultMetrics ?? true) collectDefaultMetrics({ register: registry });
  return registry;
}

export interface Readiness {
  readonly ready: boolean;
  /** What is still missing (empty when ready), e.g. `link west: initial sync pending`. */
  readonly reasons: readonly string[];
  readonly details?: Record<string, unknown>;
}

export interface ObservabilityServerOptions {
  host?: string;
  /** Port for `/healthz/ready` (0 = pick one). */
  readyPort: number;
  /** Port for `/metrics`; when undefined or equal to a non-zero readyPort, one server answers both. */
  metricsPort?: number;
  registry: Registry;
  readiness: () => Readiness;
  /**
   * The `component` label of `causeway_ready`, for a registry without that default label
   * (the gateway's; {@link createMetricsRegistry} sets it for the others).
   */
  component?: string;
}

/**
 * `causeway_ready`: 1 when {@link Readiness} says ready, 0 otherwise — what `/healthz/ready`
 * answers, asked at scrape time so that nothing else pays for it. The alert rules in
 * `deploy/prometheus/` read it.
 */
function registerReadinessMetric(options: ObservabilityServerOptions): void {
  // A registry may outlive one server (tests restart them): the newest readiness wins.
  options.registry.removeSingleMetric('causeway_ready');
  const labels = options.component === undefined ? {} : { component: options.component };
  new Gauge({
    name: 'causeway_ready',
    help: 'Whether /healthz/ready answers ready (1) or not (0)',
    labelNames: Object.keys(labels),
    registers: [options.registry],
    collect() {
      let ready = false;
      try {
        ready = options.readiness().ready;
      } catch {
        // A failing readiness check is not ready, as /healthz/ready answers it.
      }
      this.set(labels, ready ? 1 : 0);
    },
  });
}

export interface ObservabilityServer {
  readonly readyPort: number;
  readonly metricsPort: number;
  close(): Promise<void>;
}

function handler(options: ObservabilityServerOptions, serves: { ready: boolean; metrics: boolean }) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (serves.ready && (path === '/healthz/ready' || path === '/healthz/live')) {
      if (path === '/healthz/live') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"live":true}\n');
        return;
      }
      let state: Readiness;
      try {
        state = options.readiness();
      } catch (error) {
        state = { ready: false, reasons: [`readiness check failed: ${(error as Error).message}`] };
      }
      res.writeHead(state.ready ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(state)}\n`);
      return;
    }
    if (serves.metrics && path === '/metrics') {
      options.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': options.registry.contentType }).end(text),
        (error: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${error.message}\n`),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /healthz/ready or /metrics\n');
  };
}

/**
 * Serves `/healthz/ready` (200 only when ready, JSON reasons otherwise) and `/metrics`.
 * A port that cannot be bound rejects with a ListenError naming `observability.readyPort`
 * or `observability.metricsPort` and its flag; nothing is left listening then.
 */
export async function startObservabilityServer(options: ObservabilityServerOptions): Promise<ObservabilityServer> {
  const host = options.host ?? '127.0.0.1';
  registerReadinessMetric(options);
  const shared = options.metricsPort === undefined || (options.metricsPort === options.readyPort && options.readyPort !== 0);
  const servers: Server[] = [];
  const readyServer = createServer(handler(options, { ready: true, metrics: shared }));
  servers.push(readyServer);
  const readyPort = (await listenOn(readyServer, { host, port: options.readyPort }, ObservabilityPorts.ready)).port;
  let metricsPort = readyPort;
  if (!shared) {
    const metricsServer = createServer(handler(options, { ready: false, metrics: true }));
    servers.push(metricsServer);
    try {
      metricsPort = (await listenOn(metricsServer, { host, port: options.metricsPort ?? 0 }, ObservabilityPorts.metrics)).port;
    } catch (error) {
      readyServer.close();
      throw error;
    }
  }
  return {
    readyPort,
    metricsPort,
    close: () =>
      Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              s.closeAllConnections();
              s.close(() => resolve());
            }),
        ),
      ).then(() => undefined),
  };
}
