import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Logger } from '../mesh/index.js';
import type { SidecarTuning } from './config.js';
import type { SidecarMetrics } from './metrics.js';

/**
 * The sidecar's spans (proxy/README.md "Tracing"): W3C trace context carried on by every
 * hop, one span per hop, exported as OTLP/HTTP JSON in batches from a bounded queue that
 * drops (and counts) rather than ever holding a request up. Off unless
 * `sidecar.tracing` is set; off, no path builds anything for it.
 */

export type TracingSettings = NonNullable<SidecarTuning['tracing']>;

/** A span's place in a trace: W3C `traceparent` fields. */
export interface TraceContext {
  readonly traceId: string;
  readonly spanId: string;
  readonly sampled: boolean;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-|$)/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** Parses a W3C `traceparent` (version 00 and later ones' first four fields); undefined when absent or invalid. */
export function parseTraceparent(value: string | undefined): TraceContext | undefined {
  if (value === undefined) return undefined;
  const m = TRACEPARENT.exec(value.trim());
  if (!m || m[1] === 'ff' || m[2] === ZERO_TRACE || m[3] === ZERO_SPAN) return undefined;
  return { traceId: m[2]!, spanId: m[3]!, sampled: (parseInt(m[4]!, 16) & 1) === 1 };
}

export function formatTraceparent(traceId: string, spanId: string, sampled: boolean): string {
  return `00-${traceId}-${spanId}-${sampled ? '01' : '00'}`;
}

export function newSpanId(): string {
  return randomBytes(8).toString('hex');
}

function newTraceId(): string {
  return randomBytes(16).toString('hex');
}

export const SpanKind = { internal: 1, server: 2, client: 3 } as const;

/** One finished span, as OTLP/JSON has it (ids in hex, times in Unix nanoseconds as strings). */
export interface FinishedSpan {
  readonly traceId: string;
  readonly spanId: string;
  readonly parentSpanId: string | undefined;
  readonly name: string;
  readonly kind: number;
  /** performance.now() values. */
  readonly start: number;
  readonly end: number;
  readonly attributes: Readonly<Record<string, string | number | undefined>>;
  readonly error: boolean;
}

/**
 * The spans of one request through this sidecar: its own span (`spanId`), and on the
 * outbound side the hop to the target (`hopSpanId`, whose id the upstream gets as the
 * parent: the gateway never terminates TLS and cannot read headers, so the caller's
 * sidecar records the gateway hop for it).
 */
export interface RequestTrace {
  readonly traceId: string;
  readonly parentSpanId: string | undefined;
  readonly spanId: string;
  readonly hopSpanId: string;
  readonly sampled: boolean;
  /** The `traceparent` to send on, and its header line (with its CRLF). */
  readonly traceparent: string;
  readonly header: string;
}

const TRACE_HEADERS: ReadonlySet<string> = new Set(['traceparent']);

/** Headers the path replaces when it carries a trace on. */
export function traceHeaders(): ReadonlySet<string> {
  return TRACE_HEADERS;
}

export class Tracer {
  readonly #settings: TracingSettings;
  readonly #exporter: OtlpExporter | undefined;

  constructor(settings: TracingSettings, exporter: OtlpExporter | undefined) {
    this.#settings = settings;
    this.#exporter = exporter;
  }

  /**
   * The trace of one request: the caller's (`traceparent` it sent; its sampling decision
   * stands) or a new one sampled with `sampling`. `outbound` requests get a hop span and
   * send its id on; inbound ones send their own span's id to the app.
   */
  start(traceparent: string | undefined, outbound: boolean): RequestTrace {
    const parent = parseTraceparent(traceparent);
    const traceId = parent?.traceId ?? newTraceId();
    const sampled = parent ? parent.sampled : Math.random() < this.#settings.sampling;
    const spanId = newSpanId();
    const hopSpanId = outbound ? newSpanId() : spanId;
    const sent = formatTraceparent(traceId, hopSpanId, sampled);
    return { traceId, parentSpanId: parent?.spanId, spanId, hopSpanId, sampled, traceparent: sent, header: `traceparent: ${sent}\r\n` };
  }

  record(span: FinishedSpan): void {
    this.#exporter?.add(span);
  }

  close(): Promise<void> {
    return this.#exporter?.close() ?? Promise.resolve();
  }
}

interface OtlpExporterOptions {
  readonly endpoint: string;
  readonly serviceName: string;
  readonly resource: Readonly<Record<string, string>>;
  readonly maxQueue: number;
  readonly maxBatch: number;
  readonly intervalMs: number;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
}

/**
 * OTLP/HTTP JSON export (`POST <endpoint>/v1/traces`): spans queue up to `maxQueue`
 * (more are dropped and counted), leave in batches of `maxBatch` every `intervalMs` or as
 * soon as a batch is full, one request at a time. A collector that is down or slow costs
 * dropped spans, never a request's time.
 */
export class OtlpExporter {
  readonly #options: OtlpExporterOptions;
  readonly #url: URL;
  #queue: FinishedSpan[] = [];
  #sending: Promise<void> | undefined;
  readonly #timer: NodeJS.Timeout;

  constructor(options: OtlpExporterOptions) {
    this.#options = options;
    this.#url = new URL('v1/traces', options.endpoint.endsWith('/') ? options.endpoint : `${options.endpoint}/`);
    this.#timer = setInterval(() => this.#flush(), options.intervalMs).unref();
  }

  add(span: FinishedSpan): void {
    if (this.#queue.length >= this.#options.maxQueue) {
      this.#options.metrics.spansDropped.inc({ reason: 'queue_full' });
      return;
    }
    this.#queue.push(span);
    if (this.#queue.length >= this.#options.maxBatch && !this.#sending) this.#flush();
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#sending;
    if (this.#queue.length > 0) await this.#send(this.#queue.splice(0));
  }

  #flush(): void {
    if (this.#sending || this.#queue.length === 0) return;
    const batch = this.#queue.splice(0, this.#options.maxBatch);
    this.#sending = this.#send(batch).finally(() => {
      this.#sending = undefined;
      if (this.#queue.length >= this.#options.maxBatch) this.#flush();
    });
  }

  #send(batch: FinishedSpan[]): Promise<void> {
    const body = JSON.stringify(otlpTraces(batch, this.#options.serviceName, this.#options.resource));
    const send = this.#url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve) => {
      const failed = (reason: string, detail: unknown) => {
        this.#options.metrics.spansDropped.inc({ reason }, batch.length);
        this.#options.log.debug({ err: detail, endpoint: this.#url.href, spans: batch.length }, 'OTLP export failed; spans dropped');
        resolve();
      };
      const req = send(this.#url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: 10_000 }, (res) => {
        res.resume();
        res.once('end', () => {
          if ((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300) {
            this.#options.metrics.spansExported.inc(batch.length);
            resolve();
          } else failed('rejected', `HTTP ${res.statusCode}`);
        });
        res.once('error', (error) => failed('export_error', error));
      });
      req.once('timeout', () => req.destroy(new Error('no answer within 10 s')));
      req.once('error', (error) => failed('export_error', error));
      req.end(body);
    });
  }
}

/** The OTLP/JSON `ExportTraceServiceRequest` of a batch (opentelemetry-proto's JSON mapping: hex ids, string nanos). */
export function otlpTraces(spans: readonly FinishedSpan[], serviceName: string, resource: Readonly<Record<string, string>>): unknown {
  const origin = performance.timeOrigin;
  const nanos = (t: number) => (BigInt(Math.round((origin + t) * 1000)) * 1000n).toString();
  const attributes = (record: Readonly<Record<string, string | number | undefined>>) =>
    Object.entries(record)
      .filter(([, v]) => v !== undefined)
      .map(([key, v]) => ({ key, value: typeof v === 'number' ? { intValue: String(v) } : { stringValue: v } }));
  return {
    resourceSpans: [
      {
        resource: { attributes: attributes({ 'service.name': serviceName, ...resource }) },
        scopeSpans: [
          {
            scope: { name: 'causeway-sidecar' },
            spans: spans.map((s) => ({
              traceId: s.traceId,
              spanId: s.spanId,
              ...(s.parentSpanId ? { parentSpanId: s.parentSpanId } : {}),
              name: s.name,
              kind: s.kind,
              startTimeUnixNano: nanos(s.start),
              endTimeUnixNano: nanos(s.end),
              attributes: attributes(s.attributes),
              status: { code: s.error ? 2 : 0 },
            })),
          },
        ],
      },
    ],
  };
}

/** The tracer a sidecar's config asks for: none when `sidecar.tracing` is absent. */
export function tracerFor(tuning: SidecarTuning, workload: { service: string; namespace: string; cluster: string }, metrics: SidecarMetrics, log: Logger): Tracer | undefined {
  const settings = tuning.tracing;
  if (!settings) return undefined;
  const exporter = settings.otlpEndpoint
    ? new OtlpExporter({
        endpoint: settings.otlpEndpoint,
        serviceName: settings.serviceName ?? `${workload.service}.${workload.namespace}`,
        resource: { 'causeway.cluster': workload.cluster },
        maxQueue: settings.maxQueuedSpans,
        maxBatch: 512,
        intervalMs: settings.exportIntervalMs,
        metrics,
        log: log.child({ module: 'tracing' }),
      })
    : undefined;
  return new Tracer(settings, exporter);
}
