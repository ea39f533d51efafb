import { createMetricsRegistry, type ClusterConfig } from '../mesh/index.js';
import { connectFederationStore } from '../federation/index.js';
import { MeshViewService, type MeshViewServiceOptions } from './mesh-view-service.js';

export type RunMeshViewOptions = Omit<MeshViewServiceOptions, 'store' | 'registry' | 'config'> & { readonly config: ClusterConfig };

export interface RunningMeshView {
  readonly url: string;
  readonly port: number;
  stop(): Promise<void>;
}

/**
 * Starts `causeway ui`: its own etcd client and metrics, the listener bound first, so a
 * bad port fails at once, and the page answers (503 on the API, not ready) while etcd is
 * still away.
 */
export async function runMeshView(options: RunMeshViewOptions): Promise<RunningMeshView> {
  const store = connectFederationStore(options.config.etcd, { setting: 'etcd.endpoints' });
  const service = new MeshViewService({ ...options, store, registry: createMetricsRegistry('ui') });
  try {
    await service.listen();
  } catch (error) {
    await store.close();
    throw error;
  }
  service.startReading();
  return {
    url: service.url,
    port: service.port,
    stop: async () => {
      await service.stop();
      await store.close();
    },
  };
}
