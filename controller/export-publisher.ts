import { isDeepStrictEqual } from 'node:util';
import {
  Backoff,
  CATALOG_SCHEMA_VERSION,
  EtcdKeys,
  ExportedCluster,
  ExportedService,
  encodeCatalogValue,
  logger,
  type GatewayAddress,
  type HealthyCount,
  type Locality,
} from '../mesh/index.js';
import { exportedClusterValue } from '../federation/index.js';
import type { CatalogCache, CatalogChanges, ServiceKey, StoredEndpoint } from './catalog-cache.js';
import type { EtcdStore } from '../store/index.js';
import type { ControllerMetrics } from './metrics.js';
import type { ExportsView } from './export-store-view.js';
import { GatewayProbe } from './gateway-probe.js';

export interface ExportPublisherOptions {
  readonly cluster: string;
  readonly locality: Locality;
  readonly network: string;
  readonly trustDomain: string;
  readonly debounceMs: number;
  /** Writes `/exports/_cluster` (the federation's `publishExportedCluster`). */
  publishCluster(value: Omit<ExportedCluster, 'schema'>): Promise<void>;
  endpointHealthy(endpoint: StoredEndpoint): boolean;
  /**
   * Where the exports are read from when they do not live in the main etcd (the export
   * store's {@link ExportStoreView}); default: the catalog, i.e. the main etcd.
   */
  readonly view?: ExportsView & { strays(): string[] };
}

/**
 * Export writes of one pass kept in flight at once. Each is its own compare-and-swap on
 * one key, so their order does not matter; one after another, a cluster exporting 1,000
 * services paid 1,000 etcd round trips in a row before peers saw the last of them.
 */
export const EXPORT_WRITES_IN_FLIGHT = 32;

/**
 * Runs `tasks` with at most `limit` at a time. After a failure no further task starts; it
 * rejects with the first failure once the started ones settled (the pass is then retried).
 */
async function runWithin(tasks: ReadonlyArray<() => Promise<void>>, limit: number): Promise<void> {
  let next = 0;
  let failed = false;
  const lanes = Array.from({ length: Math.min(limit, tasks.length) }, async () => {
    while (!failed && next < tasks.length) {
      try {
        await tasks[next++]!();
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  });
  const results = await Promise.allSettled(lanes);
  const failure = results.find((r) => r.status === 'rejected');
  if (failure) throw failure.reason;
}

/** Gateway addresses of this cluster, sorted (from `/causeway/v1/gateways/`): the cluster record's list; `_cluster` holds those {@link GatewayProbe} lets through. */
export function gatewayAddresses(catalog: CatalogCache): GatewayAddress[] {
  return [...catalog.gateways.values()]
    .map((g) => ({ address: g.value.address, port: g.value.port }))
    .sort((a, b) => a.address.localeCompare(b.address) || a.port - b.port);
}

/**
 * Maintains what peers read of this cluster: `/exports/<ns>/<name>` for exported
 * services (spec + healthy counts per locality) and `/exports/_cluster`. (The
 * `/exports/_heartbeat` lease is the federation's HeartbeatPublisher, run by the
 * controller beside this.)
 *
 * Several controllers of one cluster run this at once without fighting: every value is
 * a pure function of the shared catalog, a write happens only when etcd holds something
 * different (ignoring `exportedAt`, which is kept from the first write), so their writes
 * converge instead of alternating. (The gateways in `_cluster` also depend on what each
 * controller's probe saw: they agree once every listed gateway answers.)
 */
export class ExportPublisher {
  readonly #log = logger('controller-exports');
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;

  readonly #store: EtcdStore;
  readonly #catalog: CatalogCache;
  readonly #options: ExportPublisherOptions;
  readonly #metrics: ControllerMetrics;
  readonly #probe = new GatewayProbe({ onAnswered: () => this.schedule() });
  /** Between failed passes (etcd away): 0.5 s doubling to 10 s, jittered, reset by a pass that succeeds. */
  readonly #retry = new Backoff({ initialMs: 500, maxMs: 10_000 });

  constructor(
    store: EtcdStore,
    catalog: CatalogCache,
    options: ExportPublisherOptions,
    metrics: ControllerMetrics,
  ) {
    this.#store = store;
    this.#catalog = catalog;
    this.#options = options;
    this.#metrics = metrics;
  }

  start(): Promise<void> {
    return this.reconcile();
  }

  onCatalogChange(changes: CatalogChanges): void {
    if (changes.everything || changes.exports || changes.gateways || changes.services.size > 0) this.schedule();
  }

  /** Recompute soon (health-check results changed). */
  schedule(): void {
    if (this.#closed || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.reconcile().then(
        () => this.#retry.reset(),
        (error: Error) => {
          const delayMs = Math.round(this.#retry.next());
          this.#log.warn({ err: error.message, retryInMs: delayMs }, 'export reconcile failed; retrying');
          setTimeout(() => this.schedule(), delayMs).unref();
        },
      );
    }, this.#options.debounceMs);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#probe.close();
    await this.#running?.catch(() => undefined);
  }

  /** Healthy and total endpoint counts per locality, sorted by region then zone. */
  healthyCounts(key: ServiceKey): HealthyCount[] {
    const counts = new Map<string, HealthyCount>();
    for (const stored of this.#catalog.endpointsOf(key).values()) {
      const l = stored.value.locality;
      const k = `${l.region}/${l.zone}`;
      const c = counts.get(k) ?? { locality: l, healthy: 0, total: 0 };
      counts.set(k, { locality: l, healthy: c.healthy + (this.#options.endpointHealthy(stored) ? 1 : 0), total: c.total + 1 });
    }
    return [...counts.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, c]) => c);
  }

  /** Sets the healthy-endpoints gauge of every exported service in one go (no await: a scrape never sees half); an unexported service leaves it. */
  #countHealthyExported(): void {
    const gauge = this.#metrics.exportedHealthyEndpoints;
    gauge.reset();
    for (const [key, { value: spec }] of this.#catalog.services) {
      if (spec.exported) gauge.set({ namespace: spec.namespace, service: spec.name }, this.healthyCounts(key).reduce((sum, c) => sum + c.healthy, 0));
    }
  }

  /** Brings `/exports/` in line with the catalog; runs one pass at a time. */
  reconcile(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.#pass();
        } while (this.#again && !this.#closed);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  async #pass(): Promise<void> {
    this.#countHealthyExported();
    const o = this.#options;
    const view: ExportsView = o.view ?? this.#catalog;
    const cluster = exportedClusterValue({ name: o.cluster, locality: o.locality, network: o.network, trustDomain: o.trustDomain }, await this.#probe.serving(this.#catalog.gateways));
    if (!isDeepStrictEqual(view.exportedCluster?.value, cluster)) {
      const { schema: _schema, ...value } = cluster;
      await o.publishCluster(value);
      this.#metrics.exportWrites.inc({ kind: 'cluster' });
    }
    const writes: Array<() => Promise<void>> = [];
    for (const [key, { value: spec }] of this.#catalog.services) {
      if (!spec.exported) continue;
      const current = view.exports.get(key);
      const healthy = this.healthyCounts(key);
      if (current && isDeepStrictEqual(current.value.service, spec) && isDeepStrictEqual(current.value.healthy, healthy)) continue;
      const etcdKey = EtcdKeys.exportedService(spec.namespace, spec.name);
      const value: ExportedService = { schema: CATALOG_SCHEMA_VERSION, service: spec, healthy, exportedAt: current?.value.exportedAt ?? new Date().toISOString() };
      const encoded = encodeCatalogValue(ExportedService, etcdKey, value);
      writes.push(async () => {
        await this.#store.putIfUnchanged(etcdKey, encoded, current?.modRevision ?? '0');
        this.#metrics.exportWrites.inc({ kind: 'service' });
      });
    }
    for (const [key, current] of view.exports) {
      if (this.#catalog.services.get(key)?.value.exported) continue;
      const { namespace, name } = current.value.service;
      writes.push(async () => {
        await this.#store.deleteIfUnchanged(EtcdKeys.exportedService(namespace, name), current.modRevision);
        this.#metrics.exportWrites.inc({ kind: 'unexport' });
        this.#log.info({ service: `${name}.${namespace}` }, 'service no longer exported');
      });
    }
    await runWithin(writes, EXPORT_WRITES_IN_FLIGHT);
    // Only in the export store, which holds nothing but what the controllers write there.
    for (const key of o.view?.strays() ?? []) {
      await this.#store.delete(key);
      this.#metrics.exportWrites.inc({ kind: 'stray' });
      this.#log.warn({ key }, 'removed a key from the export store that no controller wrote');
    }
  }
}
