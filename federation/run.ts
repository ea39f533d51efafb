import {
  EtcdKeys,
  Gateway,
  createMetricsRegistry,
  decodeCatalogValue,
  logger as moduleLogger,
  startObservabilityServer,
  type ClusterConfig,
  type Logger,
  type ObservabilityServer,
  type ShutdownSteps,
} from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';
import { connectFederationStore } from './etcd-connection.js';
import { Federation } from './federation.js';
import { HeartbeatPublisher, exportedClusterValue, publishExportedCluster } from './heartbeat-publisher.js';
import { ensureExportStoreAuth } from './export-store.js';

export interface StandaloneFederationOptions {
  /**
   * Also publish this cluster's `/exports/_cluster` and heartbeat — what a controller does
   * when it runs; for a cluster whose federation runs without one.
   */
  readonly heartbeat?: boolean;
  readonly logger?: Logger;
}

/**
 * The federation as its own process (`causeway federation`; a controller hosts it
 * otherwise): the links, `/healthz/ready` and `/metrics`, and with `heartbeat` this
 * cluster's `_cluster` record and heartbeat. Everything is built at construction, so a
 * {@link stop} during {@link start} (etcd or a peer not up yet) closes what was opened.
 */
export class StandaloneFederation {
  readonly #config: ClusterConfig;
  readonly #options: StandaloneFederationOptions;
  readonly #log: Logger;
  readonly #registry = createMetricsRegistry('federation');
  readonly #local: EtcdStore;
  /** This cluster's export store (config with `exportStore`): where `--heartbeat` publishes. */
  readonly #exportStore: EtcdStore | undefined;
  readonly #federation: Federation;
  #heartbeat: HeartbeatPublisher | undefined;
  #server: ObservabilityServer | undefined;

  constructor(config: ClusterConfig, options: StandaloneFederationOptions = {}) {
    this.#config = config;
    this.#options = options;
    this.#log = options.logger ?? moduleLogger('federation', { cluster: config.cluster.name });
    this.#local = connectFederationStore(config.etcd);
    this.#exportStore = config.exportStore ? connectFederationStore(config.exportStore) : undefined;
    this.#federation = new Federation(Federation.optionsFrom(config, { registry: this.#registry, local: this.#local, exports: this.#exportStore ?? this.#local, logger: this.#log }));
  }

  get readyPort(): number | undefined {
    return this.#server?.readyPort;
  }

  get metricsPort(): number | undefined {
    return this.#server?.metricsPort;
  }

  async start(): Promise<void> {
    const config = this.#config;
    // Bound before anything is written to etcd: a port in use fails start-up and leaves no heartbeat behind.
    this.#server = await startObservabilityServer({
      host: config.observability.host,
      readyPort: config.observability.readyPort,
      metricsPort: config.observability.metricsPort,
      registry: this.#registry,
      readiness: () => this.#federation.readiness(),
    });
    await this.#federation.start();
    if (this.#options.heartbeat) {
      if (this.#exportStore) await ensureExportStoreAuth(this.#exportStore, this.#log);
      await this.#publishExportedCluster();
      this.#heartbeat = new HeartbeatPublisher({ cluster: config.cluster.name, store: this.#exportStore ?? this.#local, intervalMs: config.federation.heartbeatIntervalMs, logger: this.#log });
      await this.#heartbeat.start();
    }
    this.#log.info({ readyPort: this.#server.readyPort, metricsPort: this.#server.metricsPort, links: config.links.map((l) => l.peer) }, 'federation running');
    void this.#federation.whenReady().then((r) => this.#log.info({ details: r.details }, 'federation ready'));
  }

  async stop(steps: ShutdownSteps): Promise<void> {
    await steps.run('observability server', async () => this.#server?.close());
    await steps.run('heartbeat', async () => this.#heartbeat?.stop());
    await steps.run('federation links', () => this.#federation.stop());
    await steps.run('etcd client', () => this.#local.close());
    await steps.run('export store client', async () => this.#exportStore?.close());
  }

  /** `_cluster` with the gateways registered in this cluster's etcd, or else `gateway.advertiseAddress`. */
  async #publishExportedCluster(): Promise<void> {
    const config = this.#config;
    const listed = await this.#local.list(EtcdKeys.gatewaysPrefix);
    const gateways = listed.entries.flatMap((e) => {
      const d = decodeCatalogValue(Gateway, e.key, e.value);
      return d.ok ? [{ address: d.value.address, port: d.value.port }] : [];
    });
    if (gateways.length === 0 && config.gateway.advertiseAddress) gateways.push({ address: config.gateway.advertiseAddress, port: config.gateway.port });
    const identity = { name: config.cluster.name, locality: config.cluster.locality, network: config.cluster.network, trustDomain: config.trustDomain };
    await publishExportedCluster(this.#exportStore ?? this.#local, exportedClusterValue(identity, gateways));
  }
}
