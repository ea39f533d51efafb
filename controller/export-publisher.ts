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
  /** At most one pass starts per this window: a lone change is written at once, a burst in one pass at the window's end. */
  readonly debounceMs: number;
  /** How often every exported service is checked again (besides start and each re-list); default 30 s. */
  readonly fullPassIntervalMs?: number;
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
 *
 * Passes are incremental: a change to service S (its spec, an endpoint's registration or
 * health) recomputes only S's export; `_cluster` only when gateways or `_cluster` itself
 * changed; every service only at start, on a re-list and every `fullPassIntervalMs`. A
 * change of an export key (the echo of this controller's own write, or another
 * controller's) costs one comparison with what the catalog says it should be; only a
 * difference makes the key dirty again. Strays are removed at every pass.
 */
export class ExportPublisher {
  readonly #log = logger('controller-exports');
  #timer: NodeJS.Timeout | undefined;
  #fullTimer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;
  /** When the last pass started (for the debounce window). */
  #lastPassAt = -Infinity;
  /** What the next pass must look at. */
  #full = true;
  #cluster = true;
  readonly #dirty = new Set<ServiceKey>();

  readonly #store: EtcdStore;
  readonly #catalog: CatalogCache;
  readonly #options: ExportPublisherOptions;
  readonly #metrics: ControllerMetrics;
  readonly #probe = new GatewayProbe({ onAnswered: () => this.#markCluster() });
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

  /** Reconciles every exported service, then does so again every `fullPassIntervalMs`. */
  async start(): Promise<void> {
    this.#full = true;
    await this.reconcile();
    this.#fullTimer ??= setInterval(() => {
      this.#full = true;
      this.schedule();
    }, this.#options.fullPassIntervalMs ?? 30_000);
    this.#fullTimer.unref();
  }

  /** A catalog change: its services become dirty; its export keys (main-etcd exports) are compared. */
  onCatalogChange(changes: CatalogChanges): void {
    for (const key of changes.services) this.#dirty.add(key);
    if (changes.gateways) this.#cluster = true;
    // With an export store, the catalog's own exports/ are not what peers read.
    if (this.#options.view) {
      if (changes.everything || changes.gateways || changes.services.size > 0) this.#request(changes.everything);
      return;
    }
    this.onExportsChange(changes, changes.services.size > 0 || changes.gateways);
  }

  /** Export keys changed (the export store's watch, or the main etcd's): compare each with what it should be. */
  onExportsChange(changes: CatalogChanges, pending = false): void {
    if (changes.exportedCluster) this.#cluster = true;
    let work = pending || changes.exportedCluster;
    for (const key of changes.exported) {
      if (this.#dirty.has(key) || this.#plan(key) === undefined) continue;
      this.#dirty.add(key);
      work = true;
    }
    if (work || changes.everything) this.#request(changes.everything);
  }

  #markCluster(): void {
    this.#cluster = true;
    this.schedule();
  }

  /** Schedules a pass, of every service when `full`. */
  #request(full: boolean): void {
    if (full) this.#full = true;
    this.schedule();
  }

  /**
   * Runs a pass soon: at once when none started within `debounceMs`, else when that
   * window ends (the changes meanwhile go in one pass).
   */
  schedule(): void {
    if (this.#closed || this.#timer) return;
    const delayMs = Math.max(0, this.#lastPassAt + this.#options.debounceMs - performance.now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.reconcile().then(
        () => this.#retry.reset(),
        (error: Error) => {
          const retryMs = Math.round(this.#retry.next());
          this.#log.warn({ err: error.message, retryInMs: retryMs }, 'export reconcile failed; retrying');
          setTimeout(() => this.schedule(), retryMs).unref();
        },
      );
    }, delayMs);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    clearInterval(this.#fullTimer);
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

  get #view(): ExportsView {
    return this.#options.view ?? this.#catalog;
  }

  /**
   * The write that brings service `key`'s export in line with the catalog (and sets its
   * healthy-endpoints gauge when `gauge`), or undefined when etcd already holds it.
   */
  #plan(key: ServiceKey, gauge = false): (() => Promise<void>) | undefined {
    const spec = this.#catalog.services.get(key)?.value;
    const current = this.#view.exports.get(key);
    const labels = { namespace: spec?.namespace ?? current?.value.service.namespace ?? '', service: spec?.name ?? current?.value.service.name ?? '' };
    if (!spec?.exported) {
      if (gauge) this.#metrics.exportedHealthyEndpoints.remove(labels);
      if (!current) return undefined;
      const { namespace, name } = current.value.service;
      return async () => {
        // Lost to another controller's write: its echo makes the key dirty again if need be.
        if (!(await this.#store.deleteIfUnchanged(EtcdKeys.exportedService(namespace, name), current.modRevision))) return;
        this.#metrics.exportWrites.inc({ kind: 'unexport' });
        this.#log.info({ service: `${name}.${namespace}` }, 'service no longer exported');
      };
    }
    const healthy = this.healthyCounts(key);
    if (gauge) this.#metrics.exportedHealthyEndpoints.set(labels, healthy.reduce((sum, c) => sum + c.healthy, 0));
    if (current && isDeepStrictEqual(current.value.service, spec) && isDeepStrictEqual(current.value.healthy, healthy)) return undefined;
    const etcdKey = EtcdKeys.exportedService(spec.namespace, spec.name);
    const value: ExportedService = { schema: CATALOG_SCHEMA_VERSION, service: spec, healthy, exportedAt: current?.value.exportedAt ?? new Date().toISOString() };
    const encoded = encodeCatalogValue(ExportedService, etcdKey, value);
    return async () => {
      if (await this.#store.putIfUnchanged(etcdKey, encoded, current?.modRevision ?? '0')) this.#metrics.exportWrites.inc({ kind: 'service' });
    };
  }

  async #pass(): Promise<void> {
    this.#lastPassAt = performance.now();
    const full = this.#full;
    const cluster = this.#cluster || full;
    const keys = full ? new Set([...this.#catalog.services.keys(), ...this.#view.exports.keys()]) : new Set(this.#dirty);
    this.#full = false;
    this.#cluster = false;
    this.#dirty.clear();
    try {
      // Gauges and plans in one go, no await between: a scrape never sees half.
      if (full) this.#metrics.exportedHealthyEndpoints.reset();
      const writes: Array<() => Promise<void>> = [];
      for (const key of keys) {
        const write = this.#plan(key, true);
        if (write) writes.push(write);
      }
      this.#metrics.exportPassServices.observe({ kind: full ? 'full' : 'changed' }, keys.size);
      if (cluster) await this.#writeCluster();
      await runWithin(writes, EXPORT_WRITES_IN_FLIGHT);
      await this.#removeStrays();
    } catch (error) {
      // Whatever this pass was to look at, the retry looks at again.
      this.#full ||= full;
      this.#cluster ||= cluster;
      for (const key of keys) this.#dirty.add(key);
      throw error;
    }
  }

  async #writeCluster(): Promise<void> {
    const o = this.#options;
    const cluster = exportedClusterValue({ name: o.cluster, locality: o.locality, network: o.network, trustDomain: o.trustDomain }, await this.#probe.serving(this.#catalog.gateways));
    if (isDeepStrictEqual(this.#view.exportedCluster?.value, cluster)) return;
    const { schema: _schema, ...value } = cluster;
    await o.publishCluster(value);
    this.#metrics.exportWrites.inc({ kind: 'cluster' });
  }

  /** Only in the export store, which holds nothing but what the controllers write there. */
  async #removeStrays(): Promise<void> {
    for (const key of this.#options.view?.strays() ?? []) {
      await this.#store.delete(key);
      this.#metrics.exportWrites.inc({ kind: 'stray' });
      this.#log.warn({ key }, 'removed a key from the export store that no controller wrote');
    }
  }
}
