import test from 'ava';
import { CATALOG_SCHEMA_VERSION, EtcdKeys, parseConfig } from '../../mesh/index.js';
import { runMeshView } from '../../ui/index.js';
import { startCluster } from '../federation/helpers.js';
import { viewTimings, startThreeClusters } from './helpers.js';
import { openBrowser, screenshot } from './browser.js';

/** The state each link row of the page shows, by `from>to`. */
const LINK_STATES = `Object.fromEntries([...document.querySelectorAll('#links tr[data-link]')].map((r) => [r.dataset.link, r.querySelector('td.state').textContent]))`;

test('the page shows every cluster and link live: a dead peer turns stale (dashed, labelled) without a reload, and synced again', async (t) => {
  const { b, config } = await startThreeClusters(t);
  const view = await runMeshView({ config, port: 0, refreshMs: 250 });
  t.teardown(() => view.stop());
  const browser = await openBrowser(t);
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  const failedRequests: string[] = [];
  page.on('requestfailed', (r) => failedRequests.push(r.url()));
  page.on('pageerror', (e) => failedRequests.push(`page error: ${String(e)}`));
  await page.goto(view.url, { waitUntil: 'domcontentloaded', timeout: 60_000 });
  t.log(`mesh view at ${view.url}`);

  await page.waitForFunction(`(${LINK_STATES})['a>b'] === 'synced' && (${LINK_STATES})['a>c'] === 'synced'`, { timeout: 45_000, polling: 100 });
  const clusters = await page.evaluate(`[...document.querySelectorAll('#clusters tr[data-cluster]')].map((r) => r.dataset.cluster)`);
  t.deepEqual(clusters, ['a', 'b', 'c']);
  // The graph: one node per cluster, one edge per link, drawn by cytoscape served by causeway.
  const graph = await page.evaluate(`({ nodes: graph.nodes().map((n) => n.id()), edges: graph.edges('.link').map((e) => [e.id(), e.data('line'), e.data('label')]) })`) as { nodes: string[]; edges: Array<[string, string, string]> };
  t.deepEqual(graph.nodes.sort(), ['cluster:a', 'cluster:b', 'cluster:c']);
  t.deepEqual(graph.edges.map(([id, line]) => [id, line]).sort(), [['link:a>b', 'solid'], ['link:a>c', 'solid']]);
  t.is(await page.evaluate(`document.getElementById('connection').dataset.state`), 'live');

  // b reports its own link to c (as b's federation would): drawn between b and c, thin, long dashes, labelled with who said so.
  const report = { schema: CATALOG_SCHEMA_VERSION, cluster: 'b', reportedAt: new Date().toISOString(), links: [{ peer: 'c', state: 'synced', heartbeatAgeMs: 100, syncLagMs: 3, imports: 2, conflicts: 0 }] };
  await b.store.commit([{ put: EtcdKeys.reportedLinks, value: JSON.stringify(report) }]);
  await page.waitForFunction(`graph.getElementById('reported:b>c').nonempty()`, { timeout: 30_000, polling: 100 });
  const reportedEdge = await page.evaluate(`(() => { const e = graph.getElementById('reported:b>c'); return { label: e.data('label'), style: e.style('line-style'), source: e.source().id(), target: e.target().id() }; })()`) as Record<string, string>;
  t.like(reportedEdge, { style: 'dashed', source: 'cluster:b', target: 'cluster:c' });
  t.regex(reportedEdge.label ?? '', /^synced · reported by b, [\d.]+m?s ago$/);
  t.is(await page.evaluate(`document.querySelector('tr[data-reported-link="b>c"]').dataset.report`), 'fresh');
  await screenshot(t, page, 'synced');

  // No reload from here on: a marker on window would not survive one.
  await page.evaluate('window.__sameDocument = true');
  const killedAt = Date.now();
  await b.etcd.kill();
  await page.waitForFunction(`(${LINK_STATES})['a>b'] === 'stale'`, { timeout: 60_000, polling: 50 });
  const staleAfterMs = Date.now() - killedAt;
  t.log(`a>b shown stale ${staleAfterMs} ms after b's etcd died (staleAfter ${viewTimings.staleAfterMs} ms)`);
  t.true(staleAfterMs <= viewTimings.staleAfterMs + 2000, `stale shown after ${staleAfterMs} ms, more than staleAfter + 2 s`);
  const staleEdge = await page.evaluate(`(() => { const e = graph.getElementById('link:a>b'); return { line: e.data('line'), label: e.data('label'), color: e.style('line-color'), style: e.style('line-style') }; })()`) as Record<string, string>;
  t.is(staleEdge.style, 'dashed');
  t.regex(staleEdge.label ?? '', /^STALE/);
  t.is(staleEdge.color, 'rgb(224,138,0)');
  t.is(await page.evaluate(`getComputedStyle(document.querySelector('tr[data-link="a>b"] td.state')).color`), 'rgb(224, 138, 0)');
  t.is((await page.evaluate(LINK_STATES) as Record<string, string>)['a>c'], 'synced');
  t.regex(await page.$eval('#events', (e) => e.textContent ?? ''), /link a → b: \w+ → stale/);
  // b's report can no longer be read: it ages past staleAfter and says so.
  await page.waitForFunction(`document.querySelector('tr[data-reported-link="b>c"]')?.dataset.report === 'stale'`, { timeout: 30_000, polling: 100 });
  t.regex(await page.evaluate(`graph.getElementById('reported:b>c').data('label')`) as string, /^STALE REPORT · reported by b/);
  await screenshot(t, page, 'stale');

  await b.etcd.restart();
  await page.waitForFunction(`(${LINK_STATES})['a>b'] === 'synced'`, { timeout: 60_000, polling: 100 });
  t.is(await page.evaluate(`graph.getElementById('link:a>b').style('line-style')`), 'solid');
  t.true(await page.evaluate('window.__sameDocument === true'), 'the page was never reloaded');
  await screenshot(t, page, 'synced-again');
  t.deepEqual(failedRequests, [], 'every asset came from causeway itself');
});

test('ten clusters fit the graph: every node drawn inside it, none overlapping another', async (t) => {
  const a = await startCluster(t, 'a');
  // Nine configured peers that no federation reached yet: the view lists every one (state unknown).
  const peers = Array.from({ length: 9 }, (_, i) => `peer-${i + 1}`);
  const config = parseConfig('cluster', {
    cluster: { name: 'a', locality: { region: 'region-a', zone: 'z1' } },
    etcd: { endpoints: a.etcd.endpoints },
    links: peers.map((peer) => ({ peer, etcd: { endpoints: ['http://127.0.0.1:1'] } })),
  });
  const view = await runMeshView({ config, port: 0, refreshMs: 500 });
  t.teardown(() => view.stop());
  const browser = await openBrowser(t);
  const page = await browser.newPage();
  await page.setViewport({ width: 1280, height: 1000 });
  await page.goto(view.url, { waitUntil: 'domcontentloaded', timeout: 60_000 });
  await page.waitForFunction(`typeof graph !== 'undefined' && graph.nodes().length === 10`, { timeout: 45_000, polling: 100 });
  // Let the layout settle (it runs once, when the set of clusters changes).
  await page.waitForFunction(`graph.nodes().every((n) => Number.isFinite(n.renderedPosition('x')))`, { timeout: 10_000 });
  const boxes = (await page.evaluate(`(() => {
    const w = graph.width(), h = graph.height();
    return { w, h, nodes: graph.nodes().map((n) => ({ id: n.id(), ...n.renderedBoundingBox({ includeLabels: true }) })) };
  })()`)) as { w: number; h: number; nodes: Array<{ id: string; x1: number; x2: number; y1: number; y2: number }> };
  t.is(boxes.nodes.length, 10);
  for (const n of boxes.nodes) t.true(n.x1 >= 0 && n.y1 >= 0 && n.x2 <= boxes.w && n.y2 <= boxes.h, `${n.id} inside the ${boxes.w}×${boxes.h} graph: ${JSON.stringify(n)}`);
  for (const [i, m] of boxes.nodes.entries()) {
    for (const n of boxes.nodes.slice(i + 1)) t.false(m.x1 < n.x2 && n.x1 < m.x2 && m.y1 < n.y2 && n.y1 < m.y2, `${m.id} and ${n.id} overlap`);
  }
  const zoom = (await page.evaluate('graph.zoom()')) as number;
  t.true(zoom >= 0.6, `drawn at zoom ${zoom}: too small to read`);
  t.is(await page.evaluate(`document.querySelectorAll('#clusters tr[data-cluster]').length`), 10);
  await screenshot(t, page, 'ten-clusters');
});
