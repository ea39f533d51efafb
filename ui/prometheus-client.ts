import { UiError, UiErrorCodes } from './errors.js';

export interface PrometheusSample {
  readonly metric: Record<string, string>;
  readonly value: number;
}

function samplesOf(body: unknown, query: string): PrometheusSample[] {
  const b = body as { status?: unknown; data?: { resultType?: unknown; result?: unknown } } | null;
  if (b?.status !== 'success' || b.data?.resultType !== 'vector' || !Array.isArray(b.data.result)) {
    throw new UiError(UiErrorCodes.prometheusAnswer, `Prometheus answered "${query}" with something other than a vector; is the URL a Prometheus server's?`);
  }
  return b.data.result.flatMap((r: unknown) => {
    const row = r as { metric?: unknown; value?: unknown };
    if (typeof row.metric !== 'object' || row.metric === null || !Array.isArray(row.value)) return [];
    const value = Number(row.value[1]);
    return Number.isFinite(value) ? [{ metric: row.metric as Record<string, string>, value }] : [];
  });
}

/** Instant queries against a Prometheus server's HTTP API (its base URL, e.g. http://127.0.0.1:9090). */
export class PrometheusClient {
  readonly #url: URL;
  readonly #timeoutMs: number;

  constructor(url: string, options: { timeoutMs?: number } = {}) {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch (error) {
      throw new UiError(UiErrorCodes.invalidOption, `--prometheus must be an http(s) URL such as http://127.0.0.1:9090 (got "${url}")`, { cause: error });
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new UiError(UiErrorCodes.invalidOption, `--prometheus must be an http(s) URL (got "${url}")`);
    this.#url = parsed;
    this.#timeoutMs = options.timeoutMs ?? 5000;
  }

  get origin(): string {
    return this.#url.origin;
  }

  async query(query: string): Promise<PrometheusSample[]> {
    const url = new URL('api/v1/query', this.#url.href.endsWith('/') ? this.#url : `${this.#url.href}/`);
    url.searchParams.set('query', query);
    let response: Response;
    try {
      response = await fetch(url, { signal: AbortSignal.timeout(this.#timeoutMs) });
    } catch (error) {
      throw new UiError(UiErrorCodes.prometheusUnreachable, `Prometheus at ${this.origin} did not answer: ${(error as Error).message}`, { cause: error, retryable: true });
    }
    if (!response.ok) throw new UiError(UiErrorCodes.prometheusAnswer, `Prometheus at ${this.origin} answered HTTP ${response.status} to "${query}"`);
    return samplesOf(await response.json().catch(() => null), query);
  }
}
