import type { ExecutionContext } from 'ava';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { waitFor } from '../../../testkit/ports.js';

/** One span as an OTLP/HTTP JSON body carries it. */
export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes: { key: string; value: { stringValue?: string; intValue?: string } }[];
  status?: { code?: number };
}

export interface ReceivedSpan {
  resource: Record<string, string | undefined>;
  span: OtlpSpan;
}

/** Attributes as a plain record (int values as their decimal strings, as OTLP/JSON sends them). */
export function attrs(list: OtlpSpan['attributes']): Record<string, string | undefined> {
  return Object.fromEntries(list.map((a) => [a.key, a.value.stringValue ?? a.value.intValue]));
}

/** A small OTLP/HTTP receiver (a plain node http server parsing the JSON, as a collector would): every span it got, every POST line. */
export async function startOtlpReceiver(): Promise<{ server: Server; url: string; spans: ReceivedSpan[]; posts: string[]; close(): Promise<void> }> {
  const spans: ReceivedSpan[] = [];
  const posts: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts.push(`${req.method} ${req.url} ${req.headers['content-type']}`);
      const body = JSON.parse(Buffer.concat(chunks).toString()) as { resourceSpans: { resource: { attributes: OtlpSpan['attributes'] }; scopeSpans: { spans: OtlpSpan[] }[] }[] };
      for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) for (const span of ss.spans) spans.push({ resource: attrs(rs.resource.attributes), span });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, posts, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/**
 * The three spans of one call's trace, found from its server span (`isServer` picks it):
 * the client span (the root: the app sent no traceparent), the hop span under it and the
 * server span under the hop — exactly three, each link asserted.
 */
export async function callTrace(t: ExecutionContext, spans: readonly ReceivedSpan[], isServer: (r: ReceivedSpan) => boolean): Promise<{ client: ReceivedSpan; hop: ReceivedSpan; server: ReceivedSpan }> {
  const server = await waitFor(() => spans.find((r) => r.span.kind === 2 && isServer(r)), { what: 'the server span', timeoutMs: 30_000 });
  const ofTrace = () => spans.filter((r) => r.span.traceId === server.span.traceId);
  await waitFor(() => ofTrace().length >= 3, { what: 'the three spans of the trace', timeoutMs: 30_000 });
  const all = ofTrace();
  t.is(all.length, 3);
  const client = all.find((r) => r.span.kind === 3 && r.span.parentSpanId === undefined)!;
  const hop = all.find((r) => r.span.kind === 3 && r.span.parentSpanId !== undefined)!;
  t.truthy(client, 'the client span is the root (the app sent no traceparent)');
  t.truthy(hop, 'the hop span');
  t.is(hop.span.parentSpanId, client.span.spanId);
  t.is(server.span.parentSpanId, hop.span.spanId);
  return { client, hop, server };
}
