import {
  CATALOG_SCHEMA_VERSION,
  EtcdKeys,
  ExportedCluster,
  Heartbeat,
  decodeCatalogValue,
  encodeCatalogValue,
  logger as moduleLogger,
  type EtcdConnection,
  type GatewayAddress,
  type Locality,
  type Logger,
} from '../mesh/index.js';
import { LeasedKey, type EtcdStore, type StoredValue } from '../store/index.js';
import { connectFederationStore } from './etcd-connection.js';
import { heartbeatSequence, nextHeartbeatSequence } from './heartbeat-freshness.js';

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
  #lastSequence: number | undefined;
  #started = false;
  /** What the lease key holds next: the value of the beat being written. */
  #value = '';

  constructor(options: HeartbeatPublisherOptions) {
    this.#o = options;
    this.#ownsStore = !('list' in options.store);
    this.#store = 'list' in options.store ? options.store : connectFederationStore(options.store);
    this.#log = options.logger ?? moduleLogger('heartbeat', { cluster: options.cluster });
    this.#key = new LeasedKey({
      store: this.#store,
      key: EtcdKeys.heartbeat,
      ttlSeconds: Math.max(2, Math.ceil((3 * options.intervalMs) / 1000)),
      value: () => this.#value,
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
      const nowMs = Date.now();
      const sequence = nextHeartbeatSequence(await this.#lastWrittenSequence(), nowMs);
      this.#value = encodeCatalogValue(Heartbeat, EtcdKeys.heartbeat, { schema: CATALOG_SCHEMA_VERSION, cluster: this.#o.cluster, at: new Date(nowMs).toISOString(), sequence });
      if (this.#started) await this.#key.write();
      else {
        await this.#key.start();
        this.#started = true;
      }
      this.#lastSequence = sequence;
      if (this.#failing) this.#log.info('heartbeat published again');
      this.#failing = false;
    } catch (error) {
      if (strict) throw error;
      if (!this.#failing) this.#log.warn({ err: error }, 'cannot publish the heartbeat; peers will see this cluster go stale');
      this.#failing = true;
    }
  }

  /**
   * The largest sequence written so far: this process's, or the one in etcd when another
   * controller (or an earlier run, on a clock that since stepped back) wrote a larger one.
   * Peers count a beat only when the sequence advances (heartbeat-freshness.ts).
   */
  async #lastWrittenSequence(): Promise<number | undefined> {
    let stored: StoredValue | undefined;
    try {
      stored = await this.#store.get(EtcdKeys.heartbeat);
    } catch {
      return this.#lastSequence; // the put that follows reports the outage
    }
    if (stored === undefined) return this.#lastSequence;
    const decoded = decodeCatalogValue(Heartbeat, EtcdKeys.heartbeat, stored.value);
    if (!decoded.ok) return this.#lastSequence;
    const theirs = heartbeatSequence(decoded.value);
    return this.#lastSequence === undefined ? theirs : Math.max(this.#lastSequence, theirs);
  }
}

/** What peers are told of a cluster besides its gateways. */
export interface ExportedClusterIdentity {
  readonly name: string;
  readonly locality: Locality;
  readonly network: string;
  readonly trustDomain: string;
}

/**
 * The value of `/causeway/v1/exports/_cluster`: the one builder for the controller's
 * export publisher and `causeway federation --heartbeat` (no controller running).
 */
export function exportedClusterValue(cluster: ExportedClusterIdentity, gateways: readonly GatewayAddress[]): ExportedCluster {
  return { schema: CATALOG_SCHEMA_VERSION, name: cluster.name, locality: cluster.locality, network: cluster.network, trustDomain: cluster.trustDomain, gateways: [...gateways] };
}

/** Writes `/causeway/v1/exports/_cluster`: what peers need to reach this cluster. */
export async function publishExportedCluster(store: EtcdStore, value: Omit<ExportedCluster, 'schema'>): Promise<void> {
  const json = encodeCatalogValue(ExportedCluster, EtcdKeys.exportedCluster, { schema: CATALOG_SCHEMA_VERSION, ...value });
  await store.commit([{ put: EtcdKeys.exportedCluster, value: json }]);
}
