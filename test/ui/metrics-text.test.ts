import test from 'ava';
import fc from 'fast-check';
import { Counter, Histogram, Registry } from 'prom-client';
import { parseMetricsText, quantileOfBuckets, UiErrorCodes } from '../../ui/index.js';

test('what prom-client writes, parseMetricsText reads back: every sample, label value and number', async (t) => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.tuple(fc.string({ maxLength: 12 }), fc.integer({ min: 0, max: 1_000_000 })), { minLength: 1, maxLength: 8 }),
      fc.array(fc.double({ min: 0, max: 100, noNaN: true }), { maxLength: 20 }),
      async (counters, observations) => {
        const registry = new Registry();
        const counter = new Counter({ name: 'causeway_sidecar_http_requests_total', help: 'h', labelNames: ['destination_service', 'code'], registers: [registry] });
        const histogram = new Histogram({ name: 'causeway_sidecar_http_request_duration_seconds', help: 'h', labelNames: ['direction'], buckets: [0.001, 0.1, 1, 10], registers: [registry] });
        // Label values with quotes, backslashes and newlines: the escapes the format defines.
        for (const [service, n] of counters) counter.inc({ destination_service: `${service}"\\\n`, code: '200' }, n);
        for (const o of observations) histogram.observe({ direction: 'outbound' }, o);
        const parsed = parseMetricsText(await registry.metrics());
        const json = await registry.getMetricsAsJSON();
        const expected = json.flatMap((m) => m.values.map((v) => ({ name: (v as { metricName?: string }).metricName ?? m.name, labels: Object.fromEntries(Object.entries(v.labels).map(([k, x]) => [k, String(x)])), value: v.value })));
        const key = (s: { name: string; labels: Record<string, string> }) => `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
        const byKey = new Map(parsed.map((s) => [key(s), s.value]));
        for (const e of expected) {
          if (byKey.get(key(e)) !== e.value) return false;
        }
        return parsed.length === expected.length;
      },
    ),
    { numRuns: 50 },
  );
  t.pass();
});

test('a malformed line fails the parse, naming the source and the line', (t) => {
  for (const [text, reason] of [
    ['ok 1\nbad{x="1" 2', /line 2: expected , or \} after label x/],
    ['m{x="unterminated} 1', /unterminated value of label x/],
    ['m{9="1"} 1', /bad label/],
    ['m 1 2 3', /unexpected/],
    ['m notanumber', /is not a sample value/],
    ['{x="1"} 1', /no metric name/],
  ] as const) {
    const error = t.throws(() => parseMetricsText(text, 'http://sidecar/metrics'));
    t.is((error as { code?: string }).code, UiErrorCodes.metricsText);
    t.regex(error.message, /^http:\/\/sidecar\/metrics line \d+/);
    t.regex(error.message, reason);
  }
  t.deepEqual(parseMetricsText('# HELP m h\n# TYPE m counter\n\nm{a="b"} +Inf 1700000000000\n'), [{ name: 'm', labels: { a: 'b' }, value: Infinity }]);
});

test('the p99 of bucket counts interpolates within the bucket, as Prometheus histogram_quantile does', (t) => {
  // 100 requests: 50 under 100 ms, all under 250 ms. Rank 99 falls in (0.1, 0.25]: 0.1 + 0.15 × 49/50.
  t.is(quantileOfBuckets(0.99, new Map([[0.1, 50], [0.25, 100], [Infinity, 100]]))?.toFixed(4), '0.2470');
  // Past the last finite bucket: its upper bound.
  t.is(quantileOfBuckets(0.99, new Map([[0.1, 10], [Infinity, 100]])), 0.1);
  t.is(quantileOfBuckets(0.99, new Map([[0.1, 0], [Infinity, 0]])), undefined);
});
