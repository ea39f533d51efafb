import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { stringify } from 'yaml';
import { createMetricsRegistry, parseConfig } from '../../mesh/index.js';
import { connectFederationStore } from '../../federation/index.js';
import { MeshViewFeed, UiErrorCodes, UiMetrics, ViewServer, forwardLoopbackToSocket, isLoopbackHost, runMeshView, type MeshView } from '../../ui/index.js';
import { waitFor } from '../../testkit/index.js';
import { causeway, startCauseway, startCluster } from '../federation/helpers.js';
import { startThreeClusters, viewTimings } from './helpers.js';

async function mesh(url: string): Promise<MeshView> {
  const response = await fetch(new URL('api/mesh', url));
  if (response.status !== 200) throw new Error(`/api/mesh answered ${response.status}`);
  return (await response.json()) as MeshView;
}

const linkState = (view: MeshView, peer: string) => view.links.find((l) => l.peer === peer)?.state;

/** Reads server-sent events from `url` until `until` holds for one, and returns that one. */
async function nextEvent(url: string, until: (view: MeshView) => boolean, timeoutMs = 30_000): Promise<MeshView> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const response = await fetch(new URL('api/events', url), { signal: controller.signal });
    if (response.headers.get('content-type')?.startsWith('text/event-stream') !== true) throw new Error(`not an event stream: ${response.headers.get('content-type')}`);
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of response.body!) {
      buffer += decoder.decode(chunk as Uint8Array, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = /^event: mesh\ndata: (.*)$/ms.exec(block)?.[1];
        if (data === undefined) continue;
        const view = JSON.parse(data) as MeshView;
        if (until(view)) return view;
      }
    }
    throw new Error('event stream ended');
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

test('the view and its API show every cluster, link and service a sees; a dead peer turns stale and back, with events; read-only', async (t) => {
  const { b, config } = await startThreeClusters(t);
  const running = await runMeshView({ config, port: 0, refreshMs: 250 });
  t.teardown(() => running.stop());
  t.regex(running.url, /^http:\/\/127\.0\.0\.1:\d+\/$/, 'loopback by default');

  const view = await waitFor(async () => {
    const v = await mesh(running.url).catch(() => undefined);
    return v && linkState(v, 'b') === 'synced' && linkState(v, 'c') === 'synced' && v.services.length === 3 ? v : undefined;
  }, { timeoutMs: 30_000, what: 'both links synced in /api/mesh' });
  t.is(view.seenFrom, 'a');
  t.deepEqual(view.clusters.map((c) => c.name), ['a', 'b', 'c']);
  t.like(view.clusters[0], { local: true, locality: 'region-a/z1', linkState: 'local', controllers: 0, controllerReady: false });
  t.like(view.clusters[1], { name: 'b', local: false, locality: 'region-b/z1', network: 'net-b', linkState: 'synced' });
  t.deepEqual(view.clusters[1]!.gateways, [{ address: '127.0.0.1', port: 15443, source: 'peer-export', live: true }]);
  for (const link of view.links) {
    t.is(link.cluster, 'a');
    t.true(link.connected);
    t.not(link.heartbeatAgeMs, undefined, `${link.peer} has a heartbeat`);
    t.regex(link.appliedRevision ?? '', /^\d+$/);
  }
  t.is(view.links.find((l) => l.peer === 'c')?.imports, 2);

  const byName = new Map(view.services.map((s) => [s.service, s]));
  t.deepEqual(byName.get('productpage.default')?.locations, [{ cluster: 'a', source: 'local', exported: true, healthy: 1, total: 2, stale: false }]);
  t.deepEqual(byName.get('productpage.default')?.subsets, ['v1', 'v2']);
  t.deepEqual(byName.get('productpage.default')?.split, [{ subset: 'v1', weight: 90 }, { subset: 'v2', weight: 10 }]);
  t.deepEqual(byName.get('reviews.default')?.locations.map((l) => [l.cluster, l.source, l.healthy]), [['b', 'imported', 2], ['c', 'imported', 1]]);
  t.deepEqual(byName.get('ratings.default')?.locations.map((l) => l.cluster), ['c']);
  t.is(view.traffic.source, 'scrape', 'no --prometheus: the metrics ports the catalog lists');
  t.regex(view.traffic.error ?? '', /no sidecar registered in the local catalog lists a metrics port/);
  t.is(view.error, undefined);

  // The stream pushes the view at once, then every change: b's etcd dies → stale, with events.
  t.is(linkState(await nextEvent(running.url, () => true), 'b'), 'synced');
  const staleSeen = nextEvent(running.url, (v) => linkState(v, 'b') === 'stale', 30_000);
  await b.etcd.kill();
  const stale = await staleSeen;
  t.truthy(stale.links.find((l) => l.peer === 'c'));
  await waitFor(async () => linkState(await mesh(running.url), 'c') === 'synced', { timeoutMs: 15_000, what: 'the other link still synced' });
  t.true(stale.clusters.find((c) => c.name === 'b')!.gateways.every((g) => !g.live));
  const events = await waitFor(async () => {
    const v = await mesh(running.url);
    return v.events.some((e) => e.kind === 'failover') ? v.events : undefined;
  }, { timeoutMs: 15_000, what: 'failover event' });
  t.true(events.some((e) => e.kind === 'link-state' && e.cluster === 'a' && /a → b: \w+ → stale/.test(e.message) && e.severity === 'critical'), JSON.stringify(events));
  t.true(events.some((e) => e.kind === 'failover' && e.cluster === 'b' && /reviews\.default .* traffic moves to c/.test(e.message)), JSON.stringify(events));

  await b.etcd.restart();
  const back = await nextEvent(running.url, (v) => linkState(v, 'b') === 'synced', 45_000);
  t.true(back.events.some((e) => /a → b: stale → (syncing|synced)/.test(e.message) || /a → b: .* → synced/.test(e.message)));

  // Read-only, and nothing secret in what it serves.
  for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
    for (const path of ['', 'api/mesh', 'api/events']) {
      const r = await fetch(new URL(path, running.url), { method });
      t.is(r.status, 405, `${method} /${path}`);
      t.is(r.headers.get('allow'), 'GET, HEAD');
    }
  }
  // DNS rebinding: a request naming another host gets nothing.
  const rebound = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest(new URL('api/mesh', running.url), { headers: { host: 'evil.example:80' } }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
  t.is(rebound.status, 421);
  t.notRegex(rebound.body, /seenFrom/);
  t.is((await fetch(new URL('api/mesh', running.url.replace('127.0.0.1', 'localhost')))).status, 200, 'localhost is loopback too');
  const page = await fetch(running.url);
  t.is(page.status, 200);
  t.regex(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
  const html = await page.text();
  t.regex(html, /\/assets\/cytoscape\.min\.js/);
  t.notRegex(html, /https?:\/\//, 'nothing fetched from elsewhere');
  t.is((await fetch(new URL('assets/cytoscape.min.js', running.url))).status, 200);
  t.is((await fetch(new URL('nope', running.url))).status, 404);
  t.notRegex(JSON.stringify(await mesh(running.url)), /BEGIN|PRIVATE|token|password/i);
  t.is((await fetch(new URL('healthz/ready', running.url))).status, 200);
  const metrics = await (await fetch(new URL('metrics', running.url))).text();
  t.regex(metrics, /causeway_ui_events_sent_total\{component="ui"\} [1-9]/);
  t.regex(metrics, /causeway_ui_view_reads_total\{result="ok",component="ui"\} [1-9]/);
  t.regex(metrics, /causeway_ui_clients\{component="ui"\} 0/);
});

test('the view is served on loopback only unless --allow-remote says otherwise', async (t) => {
  for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) t.true(isLoopbackHost(host), host);
  for (const host of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.10', 'example.com']) t.false(isLoopbackHost(host), host);
  const config = parseConfig('cluster', { cluster: { name: 'a', locality: { region: 'r', zone: 'z' } }, etcd: { endpoints: ['http://127.0.0.1:1'] } });
  const store = connectFederationStore({ endpoints: ['http://127.0.0.1:1'], dialTimeoutMs: 500 });
  t.teardown(() => store.close());
  const registry = createMetricsRegistry('ui', { defaultMetrics: false });
  const feed = new MeshViewFeed({ store, config });
  const error = t.throws(() => new ViewServer({ feed, registry, metrics: new UiMetrics(registry), host: '0.0.0.0', port: 0 }));
  t.is((error as { code?: string }).code, UiErrorCodes.remoteBindRefused);
  t.regex(error.message, /--allow-remote/);
  const remote = new ViewServer({ feed, registry, metrics: new UiMetrics(createMetricsRegistry('ui', { defaultMetrics: false })), host: '0.0.0.0', port: 0, allowRemote: true });
  await remote.start();
  t.teardown(() => remote.stop());
  t.is(remote.url, `http://127.0.0.1:${remote.port}/`);

  const dir = mkdtempSync(join(tmpdir(), 'cw-ui-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'cluster.yaml'), stringify({ cluster: { name: 'a', locality: { region: 'r', zone: 'z' } }, etcd: { endpoints: ['http://127.0.0.1:1'] } }));
  const refused = await causeway(['ui', '-c', join(dir, 'cluster.yaml'), '--host', '0.0.0.0', '--port', '0']);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /CW_UI_REMOTE_BIND_REFUSED|not a loopback address.*--allow-remote/s);
});

test('causeway status --all prints every cluster a sees, its links and services, as text and JSON', async (t) => {
  const { config } = await startThreeClusters(t);
  const dir = mkdtempSync(join(tmpdir(), 'cw-ui-status-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, stringify({ cluster: { name: 'a', locality: { region: 'region-a', zone: 'z1' } }, etcd: { endpoints: config.etcd.endpoints }, links: config.links.map((l) => ({ peer: l.peer, etcd: { endpoints: l.etcd!.endpoints } })), federation: viewTimings }));

  const json = await waitFor(async () => {
    const r = await causeway(['status', '--all', '--json', '-c', file]);
    if (r.code !== 0) throw new Error(r.stderr);
    const v = JSON.parse(r.stdout) as MeshView;
    return v.links.every((l) => l.state === 'synced') && v.services.length === 3 ? v : undefined;
  }, { timeoutMs: 45_000, what: 'status --all --json with both links synced' });
  t.deepEqual(json.clusters.map((c) => `${c.name}:${c.linkState}`), ['a:local', 'b:synced', 'c:synced']);

  const text = await causeway(['status', '--all', '-c', file]);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /the mesh as a sees it/);
  t.regex(text.stdout, /^\s+b\s+region-b\/z1\s+net-b\s+link synced/m);
  t.regex(text.stdout, /^\s+a\s+c\s+synced\s/m);
  t.regex(text.stdout, /productpage\.default\s+a\s+1\/2\s+local, exported\s+v1,v2\s+v1=90,v2=10/);
  t.regex(text.stdout, /reviews\.default\s+b\s+2\/2\s+imported/);
  t.regex(text.stdout, /no --prometheus given/);

  const misuse = await causeway(['status', '--prometheus', 'http://127.0.0.1:9', '-c', file]);
  t.is(misuse.code, 2, 'a usage error');
  t.regex(misuse.stderr, /--prometheus goes with --all/);
});

test('causeway ui --socket serves on a Unix socket (0600) that a loopback port forward reaches, as the demo uses it', async (t) => {
  const a = await startCluster(t, 'a');
  const dir = mkdtempSync(join(tmpdir(), 'cw-ui-socket-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, stringify({ cluster: { name: 'a', locality: { region: 'r', zone: 'z' } }, etcd: { endpoints: a.etcd.endpoints } }));
  const socketPath = join(dir, 'view.sock');
  writeFileSync(socketPath, 'not a socket');
  const refused = await causeway(['ui', '-c', file, '--socket', socketPath]);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /exists and is not a socket/);
  rmSync(socketPath);

  const proc = startCauseway(['ui', '-c', file, '--socket', socketPath]);
  t.teardown(() => proc.kill());
  await waitFor(() => existsSync(socketPath) && statSync(socketPath).isSocket(), { timeoutMs: 60_000, what: 'the socket' });
  t.is(statSync(socketPath).mode & 0o777, 0o600);
  const forward = await forwardLoopbackToSocket({ socketPath, port: 0 });
  t.teardown(() => forward.close());
  t.regex(forward.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const view = await waitFor(async () => {
    const r = await fetch(new URL('api/mesh', forward.url));
    return r.status === 200 ? ((await r.json()) as MeshView) : undefined;
  }, { timeoutMs: 30_000, what: '/api/mesh through the forward' });
  t.is(view.seenFrom, 'a');
  t.deepEqual(view.links, []);
  t.is((await fetch(forward.url, { method: 'POST' })).status, 405);
  proc.child.kill('SIGTERM');
  t.is(await proc.exited, 0);
});
