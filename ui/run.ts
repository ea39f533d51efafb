import { createMetricsRegistry, type ClusterConfig } from '../mesh/index.js';
import { connectFederationStore } from '../federation/index.js';
import type { EtcdStore } from '../store/index.js';
import { MeshViewFeed } from './mesh-view-feed.js';
import { UiMetrics } from './metrics.js';
import { PrometheusTraffic } from './traffic.js';
import { ViewServer } from './view-server.js';

export interface RunMeshViewOptions {
  readonly config: ClusterConfig;
  readonly host?: string;
  readonly port?: number;
  readonly allowRemote?: boolean;
  /** Listen on this Unix socket instead of host:port. */
  readonly socketPath?: string;
  /** A Prometheus server's base URL for the traffic numbers. */
  readonly prometheus?: string;
  readonly refreshMs?: number;
}

export interface RunningMeshView {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

/**
 * Starts `causeway ui`: the feed on the local etcd, then the server. The listener is
 * bound before the first read, so a bad port fails at once, and the page answers (503 on
 * the API, not ready) while etcd is still away.
 */
export async function runMeshView(options: RunMeshViewOptions): Promise<RunningMeshView> {
  const traffic = options.prometheus === undefined ? undefined : new PrometheusTraffic(options.prometheus);
  const registry = createMetricsRegistry('ui');
  const metrics = new UiMetrics(registry);
  const store: EtcdStore = connectFederationStore(options.config.etcd, { setting: 'etcd.endpoints' });
  const feed = new MeshViewFeed({ store, config: options.config, metrics, ...(traffic ? { traffic } : {}), ...(options.refreshMs ? { refreshMs: options.refreshMs } : {}) });
  const server = new ViewServer({ feed, registry, metrics, ...pick(options) });
  const close = async () => {
    await server.stop();
    await feed.stop();
    await store.close();
  };
  try {
    await server.start();
  } catch (error) {
    await store.close();
    throw error;
  }
  void feed.start();
  return { url: server.url, port: server.port, stop: close };
}

function pick(options: RunMeshViewOptions): { host?: string; port?: number; allowRemote?: boolean; socketPath?: string } {
  return {
    ...(options.socketPath !== undefined ? { socketPath: options.socketPath } : {}),
    ...(options.host !== undefined ? { host: options.host } : {}),
    ...(options.port !== undefined ? { port: options.port } : {}),
    ...(options.allowRemote !== undefined ? { allowRemote: options.allowRemote } : {}),
  };
}
