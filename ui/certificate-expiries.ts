import { PrometheusClient } from './prometheus-client.js';

/**
 * Workload certificates that expire soon, from the sidecars'
 * `causeway_sidecar_certificate_expiry_timestamp_seconds` (notAfter of the certificate
 * being served). A sidecar renews at half-life (24 h certificates by default), so one
 * with less than {@link EXPIRY_WARNING_SECONDS} left is one whose renewals fail.
 */
export const EXPIRY_WARNING_SECONDS = 6 * 3600;
export const EXPIRY_QUERY = 'causeway_sidecar_certificate_expiry_timestamp_seconds';

export interface CertificateExpiry {
  /** The scrape target's `cluster` label (deploy/prometheus: give each target one), else `unknown`. */
  readonly cluster: string;
  readonly identity: string;
  /** The scrape target (host:port of the sidecar's /metrics). */
  readonly instance: string;
  readonly notAfter: string;
  /** Negative once expired. */
  readonly secondsLeft: number;
}

export interface CertificatesView {
  readonly source: 'prometheus' | 'none';
  readonly error: string | undefined;
  /** Certificates with less than the warning window left, soonest first. */
  readonly expiring: readonly CertificateExpiry[];
}

export const NO_CERTIFICATES: CertificatesView = Object.freeze({ source: 'none', error: undefined, expiring: [] });

export class PrometheusCertificates {
  readonly #client: PrometheusClient;
  readonly #warningSeconds: number;

  constructor(url: string, options: { warningSeconds?: number } = {}) {
    this.#client = new PrometheusClient(url);
    this.#warningSeconds = options.warningSeconds ?? EXPIRY_WARNING_SECONDS;
  }

  /** The expiring certificates now; a failure becomes the view's `error`, never an exception. */
  async read(now = Date.now()): Promise<CertificatesView> {
    try {
      const samples = await this.#client.query(EXPIRY_QUERY);
      const expiring = samples
        .map((s): CertificateExpiry => ({
          cluster: s.metric.cluster ?? 'unknown',
          identity: s.metric.identity ?? 'unknown',
          instance: s.metric.instance ?? 'unknown',
          notAfter: new Date(s.value * 1000).toISOString(),
          secondsLeft: Math.round(s.value - now / 1000),
        }))
        .filter((c) => c.secondsLeft < this.#warningSeconds)
        .sort((a, b) => a.secondsLeft - b.secondsLeft);
      return { source: 'prometheus', error: undefined, expiring };
    } catch (error) {
      return { source: 'prometheus', error: (error as Error).message, expiring: [] };
    }
  }
}
