import { EXPIRY_QUERY, ISSUED_QUERY, certificateExpiry, type CertificateSource, type ServedCertificates } from './certificate-expiries.js';
import type { ScrapedTraffic } from './scraped-traffic.js';

/**
 * The certificates the sidecars serve, from the same scrapes as {@link ScrapedTraffic}
 * (no second request per sidecar): read it after the traffic of the same refresh.
 */
export class ScrapedCertificates implements CertificateSource {
  readonly #traffic: ScrapedTraffic;
  readonly #cluster: string;

  /** `cluster`: the cluster the scraped sidecars are in (the local one for catalog targets). */
  constructor(traffic: ScrapedTraffic, cluster: string) {
    this.#traffic = traffic;
    this.#cluster = cluster;
  }

  readServed(now = Date.now()): Promise<ServedCertificates> {
    const served = [...this.#traffic.latestSamples()].flatMap(([url, samples]) => {
      const issuedAt = new Map(samples.filter((s) => s.name === ISSUED_QUERY && s.labels.identity).map((s) => [s.labels.identity!, s.value]));
      return samples
        .filter((s) => s.name === EXPIRY_QUERY && s.labels.identity && Number.isFinite(s.value))
        .map((s) => certificateExpiry({ cluster: this.#cluster, identity: s.labels.identity!, instance: url.host }, s.value, now, issuedAt.get(s.labels.identity!)));
    });
    return Promise.resolve({ source: 'scrape', error: undefined, served });
  }
}
