import { Endpoint, EtcdKeys, decodeCatalogValue } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';
import { UiError, UiErrorCodes } from './errors.js';

/** Where the sidecars' /metrics are, asked anew on every read. */
export interface ScrapeTargets {
  /** `given`: `--scrape` URLs; `catalog`: the metrics ports the local catalog's endpoints list. */
  readonly kind: 'given' | 'catalog';
  list(): Promise<readonly URL[]>;
}

/** The `--scrape` URLs (`ui.scrape`), checked once. */
export class GivenScrapeTargets implements ScrapeTargets {
  readonly kind = 'given';
  readonly #urls: readonly URL[];

  constructor(urls: readonly string[]) {
    this.#urls = urls.map((t) => {
      let url: URL;
      try {
        url = new URL(t);
      } catch (error) {
        throw new UiError(UiErrorCodes.invalidOption, `--scrape must be an http(s) URL of a /metrics endpoint, e.g. http://127.0.0.1:15090/metrics (got "${t}")`, { cause: error });
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UiError(UiErrorCodes.invalidOption, `--scrape must be an http(s) URL (got "${t}")`);
      return url;
    });
  }

  list(): Promise<readonly URL[]> {
    return Promise.resolve(this.#urls);
  }
}

/**
 * The local cluster's registered sidecars that list a `metricsPort`
 * (`http://<address>:<metricsPort>/metrics`), read from `/endpoints/` each time so
 * sidecars that come and go are followed. Records failing validation are skipped; records
 * of older sidecars (no port) are simply not scraped.
 */
export class CatalogScrapeTargets implements ScrapeTargets {
  readonly kind = 'catalog';
  readonly #store: EtcdStore;

  constructor(store: EtcdStore) {
    this.#store = store;
  }

  async list(): Promise<readonly URL[]> {
    const { entries } = await this.#store.list(EtcdKeys.endpointsPrefix);
    const urls = new Map<string, URL>();
    for (const entry of entries) {
      const decoded = decodeCatalogValue(Endpoint, entry.key, entry.value);
      if (!decoded.ok || decoded.value.metricsPort === undefined) continue;
      const { address, metricsPort } = decoded.value;
      const url = new URL(`http://${address.includes(':') ? `[${address}]` : address}:${metricsPort}/metrics`);
      urls.set(url.href, url);
    }
    return [...urls.values()].sort((a, b) => a.href.localeCompare(b.href));
  }
}
