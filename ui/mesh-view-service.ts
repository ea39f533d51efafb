import type { Registry } from 'prom-client';
import type { ClusterConfig } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';
import { MeshViewFeed } from './mesh-view-feed.js';
import { UiMetrics } from './metrics.js';
import { PrometheusTraffic } from './traffic.js';
import { ScrapedTraffic } from './scraped-traffic.js';
import { CatalogScrapeTargets, GivenScrapeTargets } from './scrape-targets.js';
import { UiError, UiErrorCodes } from './errors.js';
import { PrometheusCertificates } from './certificate-expiries.js';
import { ScrapedCertificates } from './scraped-certificates.js';
import { ViewServer } from './view-server.js';

export interface MeshViewServiceOptions {
  readonly config: ClusterConfig;
  /** A client of the local etcd; the caller owns it (the controller shares its own). */
  readonly store: EtcdStore;
  readonly registry: Registry;
  readonly host?: string;
  readonly port?: number;
  readonly allowRemote?: boolean;
  readonly socketPath?: string;
  /** A Prometheus server's base URL for the traffic numbers and certificate expiries. */
  readonly prometheus?: string;
  /** Or the sidecars' /metrics URLs, scraped directly (traffic only). Neither given: the metrics ports the local catalog lists are scraped. */
  readonly scrape?: readonly string[];
  readonly refreshMs?: number;
}

/**
 * The feed and the server together: what `causeway ui` runs alone and a controller with
 * a `ui:` section runs inside itself. Settings not given come from the config's `ui:`.
 */
export class MeshViewService {
  readonly #feed: MeshViewFeed;
  readonly #server: ViewServer;

  constructor(options: MeshViewServiceOptions) {
    const ui = options.config.ui;
    const prometheus = options.prometheus ?? ui?.prometheus;
    const scrape = options.scrape ?? ui?.scrape ?? [];
    if (prometheus !== undefined && scrape.length > 0) throw new UiError(UiErrorCodes.invalidOption, 'give --prometheus (ui.prometheus) or --scrape (ui.scrape), not both: the traffic numbers come from one of them');
    const metrics = new UiMetrics(options.registry);
    const scraped = prometheus === undefined ? new ScrapedTraffic(scrape.length > 0 ? new GivenScrapeTargets(scrape) : new CatalogScrapeTargets(options.store)) : undefined;
    this.#feed = new MeshViewFeed({
      store: options.store,
      config: options.config,
      metrics,
      refreshMs: options.refreshMs ?? ui?.refreshMs ?? 1000,
      ...(scraped
        ? { traffic: scraped, certificates: new ScrapedCertificates(scraped, scrape.length > 0 ? 'unknown' : options.config.cluster.name) }
        : { traffic: new PrometheusTraffic(prometheus!), certificates: new PrometheusCertificates(prometheus!) }),
    });
    const host = options.host ?? ui?.host;
    const port = options.port ?? ui?.port;
    const socketPath = options.socketPath;
    this.#server = new ViewServer({
      feed: this.#feed,
      registry: options.registry,
      metrics,
      allowRemote: options.allowRemote ?? ui?.allowRemote ?? false,
      ...(host !== undefined ? { host } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(socketPath !== undefined ? { socketPath } : {}),
    });
  }

  get url(): string {
    return this.#server.url;
  }

  get port(): number {
    return this.#server.port;
  }

  /** Binds the listener; nothing is read yet (a bad port fails before anything else starts). */
  listen(): Promise<void> {
    return this.#server.start();
  }

  /** Starts reading the local etcd (the first read in the background: the page says "not yet" until it lands). */
  startReading(): void {
    void this.#feed.start();
  }

  async stop(): Promise<void> {
    await this.#server.stop();
    await this.#feed.stop();
  }
}
