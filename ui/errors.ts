import { CausewayError } from '../mesh/index.js';

/** Stable codes of the mesh view's errors (for logs, metrics and callers to match on). */
export const UiErrorCodes = {
  /** A `causeway ui` option is wrong (the message names it and what it needs). */
  invalidOption: 'CW_UI_INVALID_OPTION',
  /** `--host` is not a loopback address and `--allow-remote` was not given. */
  remoteBindRefused: 'CW_UI_REMOTE_BIND_REFUSED',
  /** The local etcd could not be read for the view; the last view stays served. */
  catalogUnavailable: 'CW_UI_CATALOG_UNAVAILABLE',
  prometheusUnreachable: 'CW_UI_PROMETHEUS_UNREACHABLE',
  /** Prometheus answered, but not with what a query of its HTTP API returns. */
  prometheusAnswer: 'CW_UI_PROMETHEUS_ANSWER',
  /** A scraped /metrics endpoint served something that is not the Prometheus text format. */
  metricsText: 'CW_UI_METRICS_TEXT',
  /** A scraped /metrics endpoint did not answer. */
  scrapeFailed: 'CW_UI_SCRAPE_FAILED',
} as const;

export class UiError extends CausewayError {}
