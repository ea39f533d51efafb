import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import test, { type ExecutionContext } from 'ava';
import { Registry } from 'prom-client';
import { parseConfig } from '../../mesh/index.js';
import { MeshViewService, PrometheusTraffic, runMeshView, type MeshView } from '../../ui/index.js';
import { waitFor } from '../../testkit/index.js';
import { createMeshPki } from '../proxy/helpers/pki.js';
import { endpointTarget, get, service, snapshot, startEchoApp, startTestSidecar } from '../proxy/helpers/mesh.js';
import { StaticSnapshotSource } from '../../proxy/index.js';
import { openBrowser, screenshot } from './browser.js';
import { startThreeClusters } from './helpers.js';
import { startPrometheus } from './prometheus.js';

/** productpage's sidecar in a calling reviews' sidecar in b (an echo app behind it) under a gentle steady load. */
async function startCallingPair(t: ExecutionContext) {
  const pki = await createMeshPki();
  const app = await startEchoApp('reviews-b');
  t.teardown(() => app.close());
  const server = await startTestSidecar({ cluster: 'b', service: 'reviews', pki, ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] });
  t.teardown(() => server.close());
  const source = new StaticSnapshotSource();
  const client = await startTestSidecar({ cluster: 'a', service: 'productpage', pki, source, config: { sidecar: { maxAttempts: 1 } } });
  t.teardown(() => client.close());
  // An eleven-hour certificate ten hours into its life: one hour left, under 30 % of its
  // lifetime and under 6 h — the view's warning window (renewals at half-life have failed).
  const aged = await pki.issue('a', client.spiffeId, { seconds: 3600, ageSeconds: 10 * 3600 });
  client.sidecar.identity.set({ keyPem: aged.key, chainPem: aged.chain, trustBundlePem: [pki.rootPem] });
  source.push(snapshot('a', [service('reviews', [endpointTarget('b', server.sidecar.inboundPort, { identity: server.spiffeId })])]));
  await client.sidecar.settled();
  const reviews = client.sidecar.outbound.lookup('default', 'reviews');
  if (!reviews) throw new Error('no outbound listener for reviews.default');
  let running = true;
  const statuses = new Map<number, number>();
  const load = (async () => {
    while (running) {
      const r = await get(reviews.address, 9080, '/load').catch(() => ({ status: 0 }));
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  t.teardown(async () => {
    running = false;
    await load;
  });
  return { app, client, statuses, metricsUrl: `http://127.0.0.1:${client.sidecar.observability!.metricsPort}/metrics` };
}

/**
 * Real requests: productpage's sidecar in cluster a calls reviews' sidecar in cluster b
 * (snapshots pushed by hand, as the proxy tests do), a real Prometheus scrapes a's
 * sidecar, and the view reads the numbers from that Prometheus.
 */
test('traffic numbers appear on the page while load runs, a certificate near expiry is listed and announced, and the flow turns failing when the server answers 5xx', async (t) => {
  const { config } = await startThreeClusters(t);
  const { app, client, statuses, metricsUrl } = await startCallingPair(t);
  const prometheus = await startPrometheus(t, [{ target: new URL(metricsUrl).host, cluster: 'a' }]);
  const view = await runMeshView({ config, port: 0, refreshMs: 500, prometheus });
  t.teardown(() => view.stop());
  const browser = await openBrowser(t);
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  await page.goto(view.url, { waitUntil: 'domcontentloaded', timeout: 60_000 });

  const FLOW = `document.querySelector('#traffic tr[data-flow="a>b>reviews.default"]')`;
  await page.waitForFunction(`${FLOW} && Number(${FLOW}.children[3].textContent) > 0 && ${FLOW}.dataset.health === 'ok'`, { timeout: 90_000, polling: 200 });
  const row = (await page.evaluate(`[...${FLOW}.children].map((c) => c.textContent)`)) as string[];
  t.log(`traffic row: ${row.join(' | ')} (statuses so far ${JSON.stringify([...statuses])})`);
  t.true(Number(row[3]) > 0, 'requests per second');
  t.is(row[4], '0.00%');
  t.regex(row[5] ?? '', /^\d+\.\dms$/, 'p99');
  t.regex(String(await page.evaluate(`graph.getElementById('traffic:a>b').data('label')`)), /req\/s · 0\.0% 5xx/);
  await screenshot(t, page, 'traffic');

  // The client's aged certificate is inside the warning window: listed with its cluster and
  // announced once as an event.
  await page.waitForFunction(`document.querySelector('#certificates tr[data-identity="${client.spiffeId}"]')?.dataset.cluster === 'a'`, { timeout: 60_000, polling: 200 });
  const eventText = (await page.evaluate(`document.getElementById('events').textContent`)) as string;
  t.true(eventText.includes(`[a] certificate of ${client.spiffeId} at 127.0.0.1:`), eventText);
  t.regex(eventText, /expires in \d+m \(notAfter [^)]+\): its renewals are failing/);

  app.setStatus(503);
  await page.waitForFunction(`${FLOW}?.dataset.health === 'failing'`, { timeout: 90_000, polling: 200 });
  const failing = await new PrometheusTraffic(prometheus).read();
  const flow = failing.flows.find((f) => f.sourceCluster === 'a' && f.destinationCluster === 'b');
  t.truthy(flow);
  t.true(flow!.errorRatio >= 0.1, `error ratio ${flow!.errorRatio}`);
  t.is(await page.evaluate(`graph.getElementById('traffic:a>b').data('color')`), '#c62828');
  t.is(await page.evaluate(`graph.getElementById('cluster:b').data('health')`), 'failing', "b's border: the worst traffic into it");
  await screenshot(t, page, 'traffic-failing');
});

test('a Prometheus that is down or is not a Prometheus becomes the view\'s error, never an exception', async (t) => {
  const down = await new PrometheusTraffic('http://127.0.0.1:9/').read();
  t.is(down.source, 'prometheus');
  t.deepEqual(down.flows, []);
  t.regex(down.error ?? '', /did not answer/);
  // Something else answering on the URL (here a plain HTTP server) is reported as such.
  const other = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":"world"}'));
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  t.teardown(() => other.close());
  const notOne = await new PrometheusTraffic(`http://127.0.0.1:${(other.address() as AddressInfo).port}`).read();
  t.regex(notOne.error ?? '', /something other than a vector/);
  t.throws(() => new PrometheusTraffic('ftp://x'), { message: /--prometheus must be an http\(s\) URL/ });
});

test('without Prometheus, --scrape reads the sidecars\' /metrics directly: rates from successive reads, 5xx turns the flow failing', async (t) => {
  const [{ config }, { app, metricsUrl }] = await Promise.all([startThreeClusters(t), startCallingPair(t)]);
  const view = await runMeshView({ config, port: 0, refreshMs: 500, scrape: [metricsUrl, 'http://127.0.0.1:9/metrics'] });
  t.teardown(() => view.stop());
  const flowOf = async () => {
    const v = (await (await fetch(new URL('api/mesh', view.url))).json()) as MeshView;
    return { traffic: v.traffic, flow: v.traffic.flows.find((f) => f.sourceCluster === 'a' && f.destinationCluster === 'b' && f.service === 'reviews.default') };
  };
  const ok = await waitFor(async () => {
    const r = await flowOf().catch(() => undefined);
    return r?.flow && r.flow.requestsPerSecond > 0 ? r : undefined;
  }, { timeoutMs: 60_000, what: 'a scraped flow a → b' });
  t.is(ok.traffic.source, 'scrape');
  t.is(ok.flow!.health, 'ok');
  t.is(ok.flow!.errorRatio, 0);
  t.true((ok.flow!.p99Ms ?? 0) > 0, 'p99 from the histogram buckets');
  t.regex(ok.traffic.error ?? '', /127\.0\.0\.1:9\/metrics did not answer/, 'the dead target is named; the live one still counts');

  app.setStatus(503);
  const failing = await waitFor(async () => {
    const r = await flowOf();
    return r.flow?.health === 'failing' ? r.flow : undefined;
  }, { timeoutMs: 60_000, what: 'the scraped flow failing' });
  t.true(failing.errorRatio >= 0.1);
});

test('--prometheus and --scrape together are refused', (t) => {
  const config = parseConfig('cluster', { cluster: { name: 'a', locality: { region: 'r', zone: 'z' } }, etcd: { endpoints: ['http://127.0.0.1:1'] } });
  const error = t.throws(() => new MeshViewService({ config, store: undefined as never, registry: new Registry(), prometheus: 'http://127.0.0.1:9090', scrape: ['http://127.0.0.1:15090/metrics'] }));
  t.is((error as { code?: string }).code, 'CW_UI_INVALID_OPTION');
});
