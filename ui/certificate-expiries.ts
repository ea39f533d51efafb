import { PrometheusClient } from './prometheus-client.js';

/**
 * Workload certificates that expire soon, from the sidecars'
 * `causeway_sidecar_certificate_expiry_timestamp_seconds` (notAfter of the certificate
 * being served) and `…_issued_timestamp_seconds` (when its lifetime began). A sidecar renews at
 * half-life ± 10 % (24 h certificates by default), so one with less than
 * {@link EXPIRY_WARNING_SECONDS} left — or, for a certificate whose lifetime is known, less
 * than {@link RENEWAL_OVERDUE_SHARE} of it, if that is sooner — is one whose renewals fail
 * (a 30 s certificate of a test topology is not "expiring" for its whole life).
 */
export const EXPIRY_WARNING_SECONDS = 6 * 3600;
/** The share of a certificate's lifetime left when its renewal is overdue by at least a tenth of that lifetime. */
export const RENEWAL_OVERDUE_SHARE = 0.3;
export const EXPIRY_QUERY = 'causeway_sidecar_certificate_expiry_timestamp_seconds';
export const ISSUED_QUERY = 'causeway_sidecar_certificate_issued_timestamp_seconds';

export interface CertificateExpiry {
  /** The scrape target's `cluster` label (deploy/prometheus: give each target one), else `unknown`. */
  readonly cluster: string;
  readonly identity: string;
  /** The scrape target (host:port of the sidecar's /metrics). */
  readonly instance: string;
  readonly notAfter: string;
  /** Negative once expired. */
  readonly secondsLeft: number;
  /** notAfter − issued, when the sidecar exports when its lifetime began (older sidecars do not). */
  readonly lifetimeSeconds?: number | undefined;
}

export interface CertificatesView {
  /** `prometheus`: from `--prometheus`; `scrape`: from the sidecars' /metrics the view scrapes; `none`: not asked. */
  readonly source: 'prometheus' | 'scrape' | 'none';
  readonly error: string | undefined;
  /** Certificates with less than the warning window left, soonest first. */
  readonly expiring: readonly CertificateExpiry[];
}

export const NO_CERTIFICATES: CertificatesView = Object.freeze({ source: 'none', error: undefined, expiring: [] });

/** Every certificate the sidecars serve now (not only the expiring ones): what renewals are told from. */
export interface ServedCertificates {
  readonly source: 'prometheus' | 'scrape';
  readonly error: string | undefined;
  readonly served: readonly CertificateExpiry[];
}

/** Where the served certificates come from: {@link PrometheusCertificates} or `ScrapedCertificates`. */
export interface CertificateSource {
  readServed(now?: number): Promise<ServedCertificates>;
}

/** One certificate of one expiry sample (`notAfter`, and when its lifetime began if known, in Unix seconds). */
export function certificateExpiry(labels: { cluster: string; identity: string; instance: string }, notAfterSeconds: number, now: number, issuedSeconds?: number): CertificateExpiry {
  const lifetime = issuedSeconds !== undefined && Number.isFinite(issuedSeconds) && issuedSeconds < notAfterSeconds ? notAfterSeconds - issuedSeconds : undefined;
  return { ...labels, notAfter: new Date(notAfterSeconds * 1000).toISOString(), secondsLeft: Math.round(notAfterSeconds - now / 1000), ...(lifetime === undefined ? {} : { lifetimeSeconds: lifetime }) };
}

/** How little time left makes `c` expiring: `warningSeconds`, or less for a short-lived certificate. */
function warningWindow(c: CertificateExpiry, warningSeconds: number): number {
  return c.lifetimeSeconds === undefined ? warningSeconds : Math.min(warningSeconds, c.lifetimeSeconds * RENEWAL_OVERDUE_SHARE);
}

/** The served certificates inside their warning window, soonest first. */
export function expiringCertificates(served: ServedCertificates, warningSeconds = EXPIRY_WARNING_SECONDS): CertificatesView {
  const expiring = served.served.filter((c) => c.secondsLeft < warningWindow(c, warningSeconds)).sort((a, b) => a.secondsLeft - b.secondsLeft);
  return { source: served.source, error: served.error, expiring };
}

export class PrometheusCertificates implements CertificateSource {
  readonly #client: PrometheusClient;
  readonly #warningSeconds: number;

  constructor(url: string, options: { warningSeconds?: number } = {}) {
    this.#client = new PrometheusClient(url);
    this.#warningSeconds = options.warningSeconds ?? EXPIRY_WARNING_SECONDS;
  }

  /** Every served certificate now; a failure becomes the `error`, never an exception. */
  async readServed(now = Date.now()): Promise<ServedCertificates> {
    try {
      const [samples, issued] = await Promise.all([this.#client.query(EXPIRY_QUERY), this.#client.query(ISSUED_QUERY)]);
      const issuedAt = new Map(issued.map((s) => [`${s.metric.instance}|${s.metric.identity}`, s.value]));
      const served = samples.map((s) =>
        certificateExpiry({ cluster: s.metric.cluster ?? 'unknown', identity: s.metric.identity ?? 'unknown', instance: s.metric.instance ?? 'unknown' }, s.value, now, issuedAt.get(`${s.metric.instance}|${s.metric.identity}`)),
      );
      return { source: 'prometheus', error: undefined, served };
    } catch (error) {
      return { source: 'prometheus', error: (error as Error).message, served: [] };
    }
  }

  /** The expiring certificates now; a failure becomes the view's `error`, never an exception. */
  async read(now = Date.now()): Promise<CertificatesView> {
    return expiringCertificates(await this.readServed(now), this.#warningSeconds);
  }
}
