import {
  CATALOG_SCHEMA_VERSION,
  EtcdKeys,
  ExportedCluster,
  Heartbeat,
  encodeCatalogValue,
  logger as moduleLogger,
  type EtcdConnection,
  type Logger,
} from '../mesh/index.js';
import { LeasedKey, type EtcdStore } from '../store/index.js';
import { connectFederationStore } from './etcd-connection.js';

export interface HeartbeatPublisherOptions {
  readonly cluster: string;
  /** This cluster's etcd (the one peers watch). */
  readonly store: EtcdStore | EtcdConnection;
  readonly intervalMs: number;
  readonly logger?: Logger;
}

/**
 * Refreshes `/causeway/v1/exports/_heartbeat` every `intervalMs` on a lease (TTL a few
 * intervals), so peers see this cluster's control plane alive — and see it die: when the
 * process stops, the lease expires and the key goes. The controller runs one of these.
 */
export class HeartbeatPublisher {
  readonly #o: HeartbeatPublisherOptions;
  readonly #store: EtcdStore;
  readonly #ownsStore: boolean;
  readonly #key: LeasedKey;
  readonly #log: Logger;
  #timer: NodeJS.Timeout | undefined;
  #beating: Promise<void> = Promise.resolve();
  #failing = false;
  #started = false;

  constructor(options: HeartbeatPublisherOptions) {
    this.#o = options;
    this.#ownsStore = !('list' in options.store);
    this.#store = 'list' in options.store ? options.store : connectFederationStore(options.store);
    this.#log = options.logger ?? moduleLogger('heartbeat', { cluster: options.cluster });
    this.#key = new LeasedKey({
      store: this.#store,
      key: EtcdKeys.heartbeat,
      ttlSeconds: Math.max(2, Math.ceil((3 * options.intervalMs) / 1000)),
      value: () => encodeCatalogValue(Heartbeat, EtcdKeys.heartbeat, { schema: CATALOG_SCHEMA_VERSION, cluster: this.#o.cluster, at: new Date().toISOString() }),
      logger: this.#log,
    });
  }

  /** Publishes the first heartbeat (rejecting if etcd refuses it), then keeps beating. */
  async start(): Promise<void> {
    await this.#beat(true);
    this.#timer = setInterval(() => {
      this.#beating = this.#beating.then(() => this.#beat(false));
    }, this.#o.intervalMs);
  }

  async stop(options: { revoke?: boolean } = {}): Promise<void> {
    clearInterval(this.#timer);
    await this.#beating;
    await this.#key.close({ revoke: options.revoke ?? true });
    if (this.#ownsStore) await this.#store.close();
  }

  async #beat(strict: boolean): Promise<void> {
    try {
      if (this.#started) await this.#key.write();
      else {
        await this.#key.start();
        this.#started = true;
      }
      if (this.#failing) this.#log.info('heartbeat published again');
      this.#failing = false;
    } catch (error) {
      if (strict) throw error;
      if (!this.#failing) this.#log.warn({ err: error }, 'cannot publish the heartbeat; peers will see this cluster go stale');
      this.#failing = true;
    }
  }
}

/** Writes `/causeway/v1/exports/_cluster`: what peers need to reach this cluster. */
export async function publishExportedCluster(store: EtcdStore, value: Omit<ExportedCluster, 'schema'>): Promise<void> {
  const json = encodeCatalogValue(ExportedCluster, EtcdKeys.exportedCluster, { schema: CATALOG_SCHEMA_VERSION, ...value });
  await store.commit([{ put: EtcdKeys.exportedCluster, value: json }]);
}
