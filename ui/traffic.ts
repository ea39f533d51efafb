import { PrometheusClient } from './prometheus-client.js';

/**
 * Request rate, error ratio and p99 between clusters, per service, from the sidecars'
 * `causeway_sidecar_http_requests_total` and `…_http_request_duration_seconds`
 * (outbound side: the caller's view), as a Prometheus server computes them.
 */
export type TrafficHealth = 'ok' | 'degraded' | 'failing' | 'idle';

export interface TrafficFlow {
  readonly sourceCluster: string;
  readonly destinationCluster: string;
  readonly service: string;
  readonly requestsPerSecond: number;
  /** 5xx and failed requests over all requests, 0-1. */
  readonly errorRatio: number;
  readonly p99Ms: number | undefined;
  readonly health: TrafficHealth;
}

export interface TrafficView {
  /** `prometheus`: from `--prometheus`; `scrape`: from the sidecars' /metrics (`--scrape`, else the metrics ports the local catalog lists); `none`: not asked (`status --all` without `--prometheus`). */
  readonly source: 'prometheus' | 'scrape' | 'none';
  readonly prometheus: string | undefined;
  /** Why the numbers are missing or old: the query that failed and how. */
  readonly error: string | undefined;
  readonly flows: readonly TrafficFlow[];
}

/** At or above this share of 5xx the flow is degraded; at or above {@link FAILING_RATIO}, failing. */
export const DEGRADED_RATIO = 0.001;
export const FAILING_RATIO = 0.1;

export function trafficHealth(requestsPerSecond: number, errorRatio: number): TrafficHealth {
  if (requestsPerSecond <= 0) return 'idle';
  if (errorRatio >= FAILING_RATIO) return 'failing';
  if (errorRatio >= DEGRADED_RATIO) return 'degraded';
  return 'ok';
}

/** Where the view's traffic comes from: {@link PrometheusTraffic} or `ScrapedTraffic`. */
export interface TrafficSource {
  read(): Promise<TrafficView>;
}

export const NO_TRAFFIC: TrafficView = Object.freeze({ source: 'none', prometheus: undefined, error: undefined, flows: [] });

const BY = 'source_cluster, destination_cluster, destination_service';
const WINDOW = '1m';
export const TrafficQueries = {
  rate: `sum by (${BY}) (rate(causeway_sidecar_http_requests_total{direction="outbound"}[${WINDOW}]))`,
  errors: `sum by (${BY}) (rate(causeway_sidecar_http_requests_total{direction="outbound",code=~"5.."}[${WINDOW}]))`,
  // The duration histogram has no source_cluster label; each sidecar sits in one cluster,
  // so its request counter (same job and instance) lends it one.
  p99: `histogram_quantile(0.99, sum by (${BY}, le) (rate(causeway_sidecar_http_request_duration_seconds_bucket{direction="outbound"}[${WINDOW}]) * on (job, instance, destination_cluster, destination_service) group_left (source_cluster) max by (job, instance, ${BY}) (causeway_sidecar_http_requests_total{direction="outbound"})))`,
} as const;

/** Asks a Prometheus server (its base URL, e.g. http://127.0.0.1:9090) for the flows. */
export class PrometheusTraffic {
  readonly #client: PrometheusClient;

  constructor(url: string) {
    this.#client = new PrometheusClient(url);
  }

  /** The flows now; a failure becomes the view's `error`, never an exception. */
  async read(): Promise<TrafficView> {
    try {
      const [rate, errors, p99] = await Promise.all([this.#client.query(TrafficQueries.rate), this.#client.query(TrafficQueries.errors), this.#client.query(TrafficQueries.p99)]);
      const key = (m: Record<string, string>) => `${m.source_cluster ?? ''}|${m.destination_cluster ?? ''}|${m.destination_service ?? ''}`;
      const errorBy = new Map(errors.map((s) => [key(s.metric), s.value]));
      const p99By = new Map(p99.map((s) => [key(s.metric), s.value]));
      const flows = rate
        .filter((s) => s.metric.source_cluster && s.metric.destination_cluster)
        .map((s): TrafficFlow => {
          const k = key(s.metric);
          const errorRatio = s.value > 0 ? Math.min(1, (errorBy.get(k) ?? 0) / s.value) : 0;
          const p99s = p99By.get(k);
          return {
            sourceCluster: s.metric.source_cluster!,
            destinationCluster: s.metric.destination_cluster!,
            service: s.metric.destination_service ?? '',
            requestsPerSecond: s.value,
            errorRatio,
            p99Ms: p99s === undefined || !Number.isFinite(p99s) ? undefined : p99s * 1000,
            health: trafficHealth(s.value, errorRatio),
          };
        })
        .sort((a, b) => `${a.sourceCluster}${a.destinationCluster}${a.service}`.localeCompare(`${b.sourceCluster}${b.destinationCluster}${b.service}`));
      return { source: 'prometheus', prometheus: this.#client.origin, error: undefined, flows };
    } catch (error) {
      return { source: 'prometheus', prometheus: this.#client.origin, error: (error as Error).message, flows: [] };
    }
  }
}
