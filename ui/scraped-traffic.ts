import { UiError, UiErrorCodes } from './errors.js';
import type { ScrapeTargets } from './scrape-targets.js';
import { EXPIRY_QUERY, ISSUED_QUERY } from './certificate-expiries.js';
import { parseMetricsText, type MetricSample } from './metrics-text.js';
import { trafficHealth, type TrafficFlow, type TrafficView } from './traffic.js';

const REQUESTS = 'causeway_sidecar_http_requests_total';
const BUCKETS = 'causeway_sidecar_http_request_duration_seconds_bucket';
const KEPT = new Set([REQUESTS, BUCKETS, EXPIRY_QUERY, ISSUED_QUERY]);

interface Scrape {
  readonly atMs: number;
  readonly samples: readonly MetricSample[];
}

interface FlowTally {
  source: string;
  destination: string;
  service: string;
  requests: number;
  errors: number;
  /** Cumulative bucket increases by `le`. */
  buckets: Map<number, number>;
}

/** The 0.99 quantile of cumulative bucket counts, interpolated as Prometheus' histogram_quantile does. */
export function quantileOfBuckets(q: number, buckets: ReadonlyMap<number, number>): number | undefined {
  const sorted = [...buckets.entries()].sort(([a], [b]) => a - b);
  const total = sorted.at(-1)?.[1] ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const [le, count] of sorted) {
    if (count >= rank) {
      if (le === Infinity) return lowerLe;
      return lowerLe + (le - lowerLe) * ((rank - lowerCount) / Math.max(count - lowerCount, Number.EPSILON));
    }
    lowerLe = le;
    lowerCount = count;
  }
  return lowerLe;
}

/** At most this many /metrics are fetched at once. */
const SCRAPE_CONCURRENCY = 8;
/** A /metrics body larger than this is refused (a sidecar's is a few tens of kB). */
const MAX_METRICS_BYTES = 4 * 1024 * 1024;

/**
 * Traffic without a Prometheus server: scrapes the sidecars' /metrics (the `--scrape`
 * URLs, or the metrics ports the local catalog lists) on each read, a few at a time, and
 * takes rates from the difference with the oldest read of the last `windowMs` — so the
 * first read of a target has no numbers yet. A target that fails is named in the view's
 * `error`; the others still count.
 */
export class ScrapedTraffic {
  readonly #targets: ScrapeTargets;
  readonly #timeoutMs: number;
  readonly #windowMs: number;
  /** Per target, its scrapes of the last `windowMs`, oldest first. */
  readonly #history = new Map<string, Scrape[]>();

  /**
   * `windowMs` (default 10 s): rates are taken against the oldest scrape in that window,
   * so a sidecar sending one request every few seconds shows a steady rate rather than
   * one flapping between a burst and idle from one read to the next.
   */
  constructor(targets: ScrapeTargets, options: { timeoutMs?: number; windowMs?: number } = {}) {
    this.#targets = targets;
    this.#timeoutMs = options.timeoutMs ?? 3000;
    this.#windowMs = options.windowMs ?? 10_000;
  }

  async #scrape(url: URL): Promise<Scrape> {
    let text: string;
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(this.#timeoutMs) });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      if (Number(response.headers.get('content-length') ?? 0) > MAX_METRICS_BYTES) throw new Error(`body larger than ${MAX_METRICS_BYTES} bytes`);
      text = await response.text();
      if (text.length > MAX_METRICS_BYTES) throw new Error(`body larger than ${MAX_METRICS_BYTES} bytes`);
    } catch (error) {
      throw new UiError(UiErrorCodes.scrapeFailed, `${url.href} did not answer: ${(error as Error).message}`, { cause: error, retryable: true });
    }
    // Only what flows and certificates are made of is kept (the window holds several scrapes per target).
    return { atMs: Date.now(), samples: parseMetricsText(text, url.href).filter((s) => KEPT.has(s.name)) };
  }

  /** The samples of each target's latest successful scrape (targets that failed the last read are left out). */
  latestSamples(): ReadonlyMap<URL, readonly MetricSample[]> {
    return new Map([...this.#history.entries()].flatMap(([href, scrapes]) => (scrapes.length > 0 ? [[new URL(href), scrapes.at(-1)!.samples] as const] : [])));
  }

  async read(): Promise<TrafficView> {
    const errors: string[] = [];
    const flows = new Map<string, FlowTally & { seconds: number }>();
    let targets: readonly URL[];
    try {
      targets = await this.#targets.list();
    } catch (error) {
      return { source: 'scrape', prometheus: undefined, error: `cannot list the sidecars' metrics ports in the local catalog: ${(error as Error).message}`, flows: [] };
    }
    const listed = new Set(targets.map((u) => u.href));
    for (const href of this.#history.keys()) if (!listed.has(href)) this.#history.delete(href);
    await eachAtMost(SCRAPE_CONCURRENCY, targets, async (url) => {
      let now: Scrape;
      try {
        now = await this.#scrape(url);
      } catch (error) {
        errors.push((error as Error).message);
        this.#history.delete(url.href);
        return;
      }
      const kept = (this.#history.get(url.href) ?? []).filter((s) => now.atMs - s.atMs <= this.#windowMs);
      const before = kept[0];
      this.#history.set(url.href, [...kept, now]);
      if (!before) return;
      const seconds = (now.atMs - before.atMs) / 1000;
      for (const tally of tallies(before.samples, now.samples)) {
        const key = `${tally.source}|${tally.destination}|${tally.service}`;
        const sum = flows.get(key);
        if (!sum) flows.set(key, { ...tally, seconds });
        else {
          sum.requests += tally.requests;
          sum.errors += tally.errors;
          for (const [le, n] of tally.buckets) sum.buckets.set(le, (sum.buckets.get(le) ?? 0) + n);
        }
      }
    });
    const list = [...flows.values()]
      .filter((f) => f.seconds > 0)
      .map((f): TrafficFlow => {
        const requestsPerSecond = f.requests / f.seconds;
        const errorRatio = f.requests > 0 ? f.errors / f.requests : 0;
        const p99 = quantileOfBuckets(0.99, f.buckets);
        return { sourceCluster: f.source, destinationCluster: f.destination, service: f.service, requestsPerSecond, errorRatio, p99Ms: p99 === undefined ? undefined : p99 * 1000, health: trafficHealth(requestsPerSecond, errorRatio) };
      })
      .sort((a, b) => `${a.sourceCluster}${a.destinationCluster}${a.service}`.localeCompare(`${b.sourceCluster}${b.destinationCluster}${b.service}`));
    const none = targets.length === 0 && this.#targets.kind === 'catalog' ? 'no sidecar registered in the local catalog lists a metrics port (is observability.metricsPort set?); or give --prometheus or --scrape URL' : undefined;
    return { source: 'scrape', prometheus: undefined, error: errors.length > 0 ? errors.join('; ') : none, flows: list };
  }
}

/** Runs `work` on every item, at most `limit` at a time. */
async function eachAtMost<T>(limit: number, items: readonly T[], work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Per flow of one target: request and 5xx increases and bucket increases between two scrapes (a counter reset counts from 0). */
function tallies(before: readonly MetricSample[], now: readonly MetricSample[]): FlowTally[] {
  const id = (s: MetricSample) => `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
  const old = new Map(before.map((s) => [id(s), s.value]));
  const increase = (s: MetricSample) => {
    const was = old.get(id(s)) ?? 0;
    return s.value >= was ? s.value - was : s.value;
  };
  const byDestination = new Map<string, FlowTally>();
  for (const s of now) {
    if (s.name !== REQUESTS || s.labels.direction !== 'outbound' || !s.labels.source_cluster || !s.labels.destination_cluster) continue;
    const key = `${s.labels.destination_cluster}|${s.labels.destination_service ?? ''}`;
    let t = byDestination.get(key);
    if (!t) byDestination.set(key, (t = { source: s.labels.source_cluster, destination: s.labels.destination_cluster, service: s.labels.destination_service ?? '', requests: 0, errors: 0, buckets: new Map() }));
    const n = increase(s);
    t.requests += n;
    if (/^5\d\d$/.test(s.labels.code ?? '')) t.errors += n;
  }
  for (const s of now) {
    if (s.name !== BUCKETS || s.labels.direction !== 'outbound') continue;
    const t = byDestination.get(`${s.labels.destination_cluster ?? ''}|${s.labels.destination_service ?? ''}`);
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    if (!t || Number.isNaN(le)) continue;
    t.buckets.set(le, (t.buckets.get(le) ?? 0) + increase(s));
  }
  return [...byDestination.values()];
}
