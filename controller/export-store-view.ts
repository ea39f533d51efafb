import { EtcdKeys, type ExportedCluster, type ExportedService, type Heartbeat, type Logger } from '../mesh/index.js';
import { CatalogMirror, MAX_TXN_OPS, type EtcdStore } from '../store/index.js';
import { CatalogChanges, serviceKey, type ServiceKey } from './catalog-cache.js';

interface Versioned<T> {
  readonly value: T;
  readonly modRevision: string;
}

/** What the export publisher reads of the exports it maintains, wherever they live. */
export interface ExportsView {
  readonly exportedCluster: Versioned<ExportedCluster> | undefined;
  readonly exports: ReadonlyMap<ServiceKey, Versioned<ExportedService>>;
}

export interface ExportStoreViewOptions {
  readonly store: EtcdStore;
  readonly cluster: string;
  readonly log: Logger;
  /**
   * Something under `/causeway/v1/exports/` changed: `exported` names the services whose
   * key changed, `exportedCluster` flags `_cluster`; `everything` means listed again, an
   * invalid value or a stray key (check it all).
   */
  readonly onChange: (changes: CatalogChanges) => void;
  /** How often every key of the export store is checked for strays (besides start and each re-list). */
  readonly sweepIntervalMs?: number;
}

/**
 * The export store as the controller sees it (controller/README.md "The export store"):
 * a validated mirror of its `/causeway/v1/exports/`, shared by every controller of the
 * cluster — they converge on it as they do on the main etcd — and the sweep that removes
 * whatever the controllers (and their federation, `_links`) did not write: invalid values
 * and unknown keys under exports/, a heartbeat or `_links` of another cluster, and any key
 * outside `/causeway/v1/exports/`.
 */
export class ExportStoreView implements ExportsView {
  readonly #o: ExportStoreViewOptions;
  readonly #mirror: CatalogMirror;
  #exportedCluster: Versioned<ExportedCluster> | undefined;
  readonly #exports = new Map<ServiceKey, Versioned<ExportedService>>();
  #heartbeat: Versioned<Heartbeat> | undefined;
  #sweepTimer: NodeJS.Timeout | undefined;
  #sweeping: Promise<void> | undefined;
  #closed = false;

  constructor(options: ExportStoreViewOptions) {
    this.#o = options;
    this.#mirror = new CatalogMirror({
      store: options.store,
      prefix: EtcdKeys.exportsPrefix,
      log: options.log,
      onInvalid: () => options.onChange(Object.assign(new CatalogChanges(), { everything: true })),
      onUpdate: ({ changes, relisted }) => {
        const seen = Object.assign(new CatalogChanges(), { exports: true, everything: relisted });
        for (const { type, entry } of changes) {
          const versioned = type === 'put' ? { value: entry.value, modRevision: entry.modRevision } : undefined;
          if (entry.kind === 'exported-cluster') {
            this.#exportedCluster = versioned as Versioned<ExportedCluster> | undefined;
            seen.exportedCluster = true;
          } else if (entry.kind === 'heartbeat') {
            this.#heartbeat = versioned as Versioned<Heartbeat> | undefined;
            if (this.#heartbeat && this.#heartbeat.value.cluster !== this.#o.cluster) seen.everything = true;
          } else if (entry.kind === 'reported-links') {
            // The hosted (or standalone) federation writes it; only another cluster's report is a stray.
            if (type === 'put' && entry.value.cluster !== this.#o.cluster) seen.everything = true;
          } else if (entry.kind === 'exported-service') {
            const key = serviceKey(entry.name.namespace, entry.name.name);
            if (versioned) this.#exports.set(key, versioned as Versioned<ExportedService>);
            else this.#exports.delete(key);
            seen.exported.add(key);
          } else seen.everything = true;
        }
        if (relisted) this.sweep();
        options.onChange(seen);
      },
    });
  }

  get exportedCluster(): Versioned<ExportedCluster> | undefined {
    return this.#exportedCluster;
  }

  get exports(): ReadonlyMap<ServiceKey, Versioned<ExportedService>> {
    return this.#exports;
  }

  get loaded(): boolean {
    return this.#mirror.loaded;
  }

  /** Keys under exports/ the controllers did not write: invalid values, unknown keys, another cluster's heartbeat. */
  strays(): string[] {
    const keys = [...this.#mirror.invalid.keys()];
    for (const entry of this.#mirror.entries.values()) {
      if (entry.kind === 'reported-links' && entry.value.cluster !== this.#o.cluster) keys.push(entry.key);
      else if (entry.kind !== 'exported-cluster' && entry.kind !== 'heartbeat' && entry.kind !== 'exported-service' && entry.kind !== 'reported-links') keys.push(entry.key);
    }
    if (this.#heartbeat && this.#heartbeat.value.cluster !== this.#o.cluster) keys.push(EtcdKeys.heartbeat);
    return keys;
  }

  /** Lists and watches the export store; rejects when it cannot be reached (the controller retries, unready). */
  async start(): Promise<void> {
    await this.#mirror.start();
    await this.sweep();
    const every = this.#o.sweepIntervalMs ?? 30_000;
    this.#sweepTimer = setInterval(() => void this.sweep(), every);
    this.#sweepTimer.unref();
  }

  /** Removes every key outside `/causeway/v1/exports/`; runs one at a time, never rejects. */
  sweep(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#sweeping ??= (async () => {
      try {
        const outside = (await this.#o.store.listAllKeys()).filter((key) => !key.startsWith(EtcdKeys.exportsPrefix));
        for (let i = 0; i < outside.length; i += MAX_TXN_OPS) await this.#o.store.commit(outside.slice(i, i + MAX_TXN_OPS).map((key) => ({ delete: key })));
        if (outside.length > 0) this.#o.log.warn({ keys: outside.slice(0, 20), count: outside.length }, `removed keys outside ${EtcdKeys.exportsPrefix} from the export store: nothing but exports belongs there`);
      } catch (error) {
        this.#o.log.warn({ err: (error as Error).message }, 'cannot check the export store for stray keys; retrying at the next sweep');
      } finally {
        this.#sweeping = undefined;
      }
    })();
    return this.#sweeping;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#sweepTimer);
    this.#mirror.close();
    await this.#sweeping;
  }
}
