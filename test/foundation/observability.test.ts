import test from 'ava';
import { Counter } from 'prom-client';
import { createMetricsRegistry, startObservabilityServer } from '../../mesh/index.js';

test('readiness means something and metrics are served', async (t) => {
  const registry = createMetricsRegistry('test', { defaultMetrics: false });
  const counter = new Counter({ name: 'causeway_test_events_total', help: 'events', registers: [registry] });
  counter.inc(3);
  let ready = false;
  const server = await startObservabilityServer({
    readyPort: 0,
    metricsPort: 0,
    registry,
    readiness: () => (ready ? { ready: true, reasons: [] } : { ready: false, reasons: ['catalog not loaded'] }),
  });
  t.teardown(() => server.close());
  const notReady = await fetch(`http://127.0.0.1:${server.readyPort}/healthz/ready`);
  t.is(notReady.status, 503);
  t.deepEqual(await notReady.json(), { ready: false, reasons: ['catalog not loaded'] });
  ready = true;
  t.is((await fetch(`http://127.0.0.1:${server.readyPort}/healthz/ready`)).status, 200);
  const metrics = await (await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`)).text();
  t.regex(metrics, /causeway_test_events_total\{component="test"\} 3/);
  t.regex(metrics, /causeway_ready\{component="test"\} 1/, 'readiness is a metric too, for alerts');
  t.is((await fetch(`http://127.0.0.1:${server.readyPort}/metrics`)).status, 404, 'separate ports serve separate things');
});
