import test from 'ava';
import { request as httpRequest } from 'node:http';
import { productpageSpec, reviewsSpec, startMesh, startWorkload, targetsOf, type MeshWorkload, type MeshWorld } from './helpers/clusters.js';
import { captureLog, get, metricValue, spiffe } from './helpers/mesh.js';
import { attrs, callTrace, startOtlpReceiver } from './helpers/otlp.js';
import { Registry } from 'prom-client';
import { pino } from 'pino';
import { SidecarMetrics } from '../../proxy/metrics.js';
import { OtlpExporter, parseTraceparent, type FinishedSpan } from '../../proxy/tracing.js';
import { freePort } from '../../testkit/ports.js';
import { waitFor } from '../../testkit/ports.js';

// One cross-cluster call, east → west's gateway → west, with both sidecars exporting
// spans to a small OTLP/HTTP receiver (a plain node http server parsing the JSON, as a
// collector would): the trace must come out whole.

test('one call east → gateway → west leaves one trace: client span, gateway hop, server span, linked, with both identities and clusters', async (t) => {
  const receiver = await startOtlpReceiver();
  t.teardown(() => receiver.close());
  const world: MeshWorld = await startMesh([
    { name: 'east', region: 'eu', zone: 'eu-1' },
    { name: 'west', region: 'eu', zone: 'eu-2' },
  ]);
  const workloads: MeshWorkload[] = [];
  t.teardown(async () => {
    for (const w of workloads) await w.close().catch(() => undefined);
    await world.close();
  });
  for (const name of ['east', 'west']) await world.cluster(name).admin.applyService(productpageSpec);
  await world.cluster('west').admin.applyService(reviewsSpec);
  const tracing = { otlpEndpoint: receiver.url, sampling: 1, exportIntervalMs: 100 };
  const server = await startWorkload(world, 'west', { service: 'reviews', config: { sidecar: { tracing } } });
  workloads.push(server);
  const clientLog = captureLog();
  const client = await startWorkload(world, 'east', { service: 'productpage', app: false, log: clientLog.log, config: { sidecar: { tracing, accessLog: true } } });
  workloads.push(client);
  await waitFor(() => targetsOf(client.sidecar, 'reviews').some((x) => x.kind === 'gateway' && x.healthy), { what: "west's reviews through west's gateway", timeoutMs: 30_000 });
  await client.sidecar.settled();

  const res = await get(client.sidecar.outbound.lookup('default', 'reviews')!.address, 9080, '/traced', { agent: false });
  t.is(res.status, 200);

  const { client: clientSpan, hop, server: server1 } = await callTrace(t, receiver.spans, (r) => attrs(r.span.attributes)['url.path'] === '/traced');
  const traceId = server1.span.traceId;
  t.true(receiver.posts.every((p) => p === 'POST /v1/traces application/json'));
  t.regex(traceId, /^[0-9a-f]{32}$/);
  // The access log names the trace the sidecar started.
  t.is((await waitFor(() => clientLog.access().find((l) => l.path === '/traced'), { what: 'the access-log line', timeoutMs: 20_000 })).trace_id, traceId);

  const c = attrs(clientSpan.span.attributes);
  t.is(c['causeway.source.principal'], spiffe('default', 'productpage'));
  t.is(c['causeway.destination.cluster'], 'west');
  t.is(c['http.response.status_code'], '200');
  t.is(clientSpan.resource['causeway.cluster'], 'east');
  t.is(clientSpan.resource['service.name'], 'productpage.default');
  const h = attrs(hop.span.attributes);
  t.is(hop.span.name, 'gateway west');
  t.is(h['causeway.hop'], 'gateway');
  t.is(h['causeway.destination.cluster'], 'west');
  t.is(h['causeway.destination.principal'], spiffe('default', 'reviews'));
  t.truthy(h['server.address']);
  const s = attrs(server1.span.attributes);
  t.is(s['causeway.source.principal'], spiffe('default', 'productpage'));
  t.is(s['causeway.source.cluster'], 'east');
  t.is(s['causeway.destination.principal'], spiffe('default', 'reviews'));
  t.is(s['causeway.destination.cluster'], 'west');
  t.is(server1.resource['causeway.cluster'], 'west');
  // Time nests: the server span inside the client span.
  t.true(BigInt(clientSpan.span.startTimeUnixNano) <= BigInt(server1.span.startTimeUnixNano));
  t.true(BigInt(server1.span.endTimeUnixNano) <= BigInt(clientSpan.span.endTimeUnixNano));

  // A caller's own traceparent is continued: same trace id, its span the client span's parent.
  const callerTrace = '0af7651916cd43dd8448eb211c80319c';
  const callerSpan = 'b7ad6b7169203331';
  const res2 = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: client.sidecar.outbound.lookup('default', 'reviews')!.address, port: 9080, path: '/continued', agent: false, headers: { traceparent: `00-${callerTrace}-${callerSpan}-01` } }, (r) => {
      r.resume();
      r.once('end', () => resolve(r.statusCode ?? 0));
    });
    req.once('error', reject);
    req.end();
  });
  t.is(res2, 200);
  const continued = await waitFor(() => receiver.spans.find((r) => r.span.traceId === callerTrace && r.span.parentSpanId === callerSpan), { what: 'the continued client span', timeoutMs: 20_000 });
  t.is(continued.span.kind, 3);
  await waitFor(() => receiver.spans.some((r) => r.span.traceId === callerTrace && r.span.kind === 2), { what: 'the continued server span', timeoutMs: 20_000 });
  t.is(await metricValue(client.sidecar, 'causeway_sidecar_spans_dropped_total'), 0);
});

test('the export queue is bounded: past it spans are dropped and counted, and a collector that is down costs only the batch', async (t) => {
  const registry = new Registry();
  const metrics = new SidecarMetrics(registry);
  const down = await freePort();
  const exporter = new OtlpExporter({ endpoint: `http://127.0.0.1:${down}`, serviceName: 's', resource: {}, maxQueue: 5, maxBatch: 512, intervalMs: 60_000, metrics, log: pino({ level: 'silent' }) });
  const span: FinishedSpan = { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), parentSpanId: undefined, name: 'x', kind: 2, start: 0, end: 1, attributes: {}, error: false };
  for (let i = 0; i < 8; i++) exporter.add(span);
  await exporter.close();
  const dropped = await registry.getSingleMetric('causeway_sidecar_spans_dropped_total')!.get();
  const by = Object.fromEntries(dropped.values.map((v) => [String(v.labels.reason), v.value]));
  t.deepEqual(by, { queue_full: 3, export_error: 5 });
});

test('traceparent: valid headers parse, invalid ones (bad version, zero ids, wrong lengths) start a new trace', (t) => {
  t.deepEqual(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'), { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', sampled: true });
  t.is(parseTraceparent('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00')?.sampled, false);
  for (const bad of [undefined, '', 'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`, `00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`, '00-4bf92f35-00f067aa0ba902b7-01', '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01']) {
    t.is(parseTraceparent(bad), undefined, String(bad));
  }
});
