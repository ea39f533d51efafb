import type { ClusterConfig } from '../mesh/index.js';
import { logger } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';
import { UiErrorCodes } from './errors.js';
import { EventLog, certificateEvents, certificateRenewals, meshEvents } from './mesh-events.js';
import { NO_CERTIFICATES, expiringCertificates, type CertificateSource, type CertificatesView, type ServedCertificates } from './certificate-expiries.js';
import { readMeshCatalog, type MeshCatalogView, type MeshView } from './mesh-view.js';
import type { UiMetrics } from './metrics.js';
import { NO_TRAFFIC, type TrafficSource, type TrafficView } from './traffic.js';

export interface MeshViewFeedOptions {
  readonly store: EtcdStore;
  readonly config: ClusterConfig;
  readonly traffic?: TrafficSource;
  /** Read after `traffic` in each refresh (scraped certificates come from the traffic's scrapes). */
  readonly certificates?: CertificateSource;
  /** How often the local etcd (and Prometheus) are read. */
  readonly refreshMs?: number;
  readonly metrics?: UiMetrics;
}

type Listener = (view: MeshView) => void;

/**
 * Reads the view every `refreshMs` and tells listeners each new one. Polling, not a watch:
 * ages (heartbeat, status) change with time alone, and one read a second of a few
 * prefixes is cheap for etcd. A failed read keeps the last view, marked with the error.
 */
export class MeshViewFeed {
  readonly #o: MeshViewFeedOptions;
  readonly #log = logger('mesh-view-feed');
  readonly #events = new EventLog();
  readonly #listeners = new Set<Listener>();
  #catalog: MeshCatalogView | undefined;
  #traffic: TrafficView = NO_TRAFFIC;
  #certificates: CertificatesView | undefined;
  #served: ServedCertificates | undefined;
  #view: MeshView | undefined;
  #timer: NodeJS.Timeout | undefined;
  #reading: Promise<void> | undefined;
  #stopped = false;

  constructor(options: MeshViewFeedOptions) {
    this.#o = options;
  }

  /** The newest view; undefined until the first read succeeded. */
  get view(): MeshView | undefined {
    return this.#view;
  }

  /** Resolves after the first read, whether it succeeded or not (readiness tells which). */
  async start(): Promise<void> {
    await this.refresh();
    this.#schedule();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#reading;
  }

  onView(listener: Listener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => void this.refresh().finally(() => this.#schedule()), this.#o.refreshMs ?? 1000);
    this.#timer.unref();
  }

  /** Reads once now (one read at a time). */
  refresh(): Promise<void> {
    this.#reading ??= this.#read().finally(() => (this.#reading = undefined));
    return this.#reading;
  }

  async #read(): Promise<void> {
    let error: string | undefined;
    const [catalog, [traffic, served]] = await Promise.all([
      readMeshCatalog(this.#o.store, this.#o.config).catch((e: unknown) => {
        error = `cannot read ${this.#o.config.cluster.name}'s etcd (${this.#o.config.etcd.endpoints.join(', ')}): ${(e as Error).message}`;
        this.#log.warn({ code: UiErrorCodes.catalogUnavailable, err: e }, 'mesh view read failed; serving the last one');
        return undefined;
      }),
      this.#readMetrics(),
    ]);
    const certificates = served ? expiringCertificates(served) : NO_CERTIFICATES;
    this.#o.metrics?.viewReads.inc({ result: catalog ? 'ok' : 'error' });
    this.#traffic = traffic;
    const at = new Date().toISOString();
    const certificateChanges = [...certificateEvents(this.#certificates, certificates, at), ...(served ? certificateRenewals(this.#served, served, at) : [])];
    this.#certificates = certificates;
    if (served && !served.error) this.#served = served;
    const events = [...(catalog ? meshEvents(this.#catalog, catalog) : []), ...certificateChanges];
    for (const e of events) this.#log.info({ cluster: e.cluster, kind: e.kind }, e.message);
    this.#events.add(events);
    if (catalog) this.#catalog = catalog;
    if (!this.#catalog || this.#stopped) return;
    this.#view = { ...this.#catalog, traffic: this.#traffic, certificates, events: this.#events.list, error };
    for (const listener of this.#listeners) listener(this.#view);
  }

  async #readMetrics(): Promise<[TrafficView, ServedCertificates | undefined]> {
    const traffic = await (this.#o.traffic?.read() ?? NO_TRAFFIC);
    return [traffic, await this.#o.certificates?.readServed()];
  }
}
