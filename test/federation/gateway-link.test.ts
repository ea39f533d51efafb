import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { parse, stringify } from 'yaml';
import { EtcdKeys, LinkConfig, parseConfig, type ClusterConfig } from '../../mesh/index.js';
import { HeartbeatPublisher, ensureExportStoreAuth, publishExportedCluster, readClusterStatus, renderClusterStatus } from '../../federation/index.js';
import { runGateway, type RunningGateway } from '../../gateway/index.js';
import { waitFor } from '../../testkit/index.js';
import { startExportStore, type TestExportStore } from './export-store-fixture.js';
import { causeway, clusterConfig, exportedService, metricValue, readImport, readLinkStatus, startCluster, startFederation, timings, waitForFreshImport } from './helpers.js';

async function exportInto(store: TestExportStore, name: string): Promise<void> {
  const key = EtcdKeys.exportedService('default', name);
  await store.root.put(key, JSON.stringify(exportedService('default', name)));
}

test("a link through the peer's gateways imports its exports, and survives a gateway replaced, an export-store restart, a compaction; a revoked grant makes it unauthorized", async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  const exportStore = await startExportStore(t, 'a');
  await ensureExportStoreAuth(exportStore.root);
  const aConfig: ClusterConfig = parseConfig('cluster', {
    cluster: { name: 'a', locality: { region: 'region-a', zone: 'z1' } },
    etcd: { endpoints: a.etcd.endpoints },
    exportStore: exportStore.config,
    gateway: { host: '127.0.0.1', port: 0, drainTimeoutMs: 500 },
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
  });
  const gateways: RunningGateway[] = [];
  const startGateway = async (id: string, port = 0) => {
    const gateway = await runGateway({ cluster: aConfig, id, gateway: { port }, workers: 1 });
    t.teardown(() => gateway.stop());
    gateways.push(gateway);
    return gateway;
  };
  const [g1, g2] = [await startGateway('gw-1'), await startGateway('gw-2')];

  // a's controller's part: _cluster, the heartbeat and an export, in a's export store.
  await publishExportedCluster(exportStore.root, { name: 'a', locality: { region: 'region-a', zone: 'z1' }, network: 'net-a', trustDomain: 'causeway.internal', gateways: [{ address: '127.0.0.1', port: g1.port }] });
  const heartbeat = new HeartbeatPublisher({ cluster: 'a', store: exportStore.root, intervalMs: timings.heartbeatIntervalMs });
  await heartbeat.start();
  t.teardown(() => heartbeat.stop({ revoke: false }).catch(() => undefined));
  await exportInto(exportStore, 'reviews');

  // a grants b; the export-store CA is found next to exportStore.tls.ca.
  const dir = mkdtempSync(join(tmpdir(), 'cw-gateway-link-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const aFile = join(dir, 'a.yaml');
  writeFileSync(aFile, stringify({ cluster: { name: 'a', locality: { region: 'region-a', zone: 'z1' } }, etcd: { endpoints: a.etcd.endpoints }, exportStore: exportStore.config }));
  const out = join(dir, 'b-at-a');
  const granted = await causeway(['federation', 'grant', '--peer', 'b', '--config', aFile, '--gateway', `127.0.0.1:${g1.port}`, '--gateway', `127.0.0.1:${g2.port}`, '--out', out, '--days', '1']);
  t.is(granted.code, 0, granted.stderr);
  const links = (parse(readFileSync(join(out, 'link.yaml'), 'utf8')) as unknown[]).map((l) => LinkConfig.parse(l));
  t.deepEqual(links[0]!.gateways, [`127.0.0.1:${g1.port}`, `127.0.0.1:${g2.port}`]);

  const { federation, registry } = await startFederation(t, b, links);
  await federation.whenReady();
  await waitForFreshImport(b, 'a', 'default', 'reviews', 'import through the gateway');
  const state = (s: string) => metricValue(registry, 'causeway_federation_link_state', { peer: 'a', state: s });

  // The first gateway goes away: the link fails over to the second.
  await g1.stop();
  await exportInto(exportStore, 'ratings');
  await waitForFreshImport(b, 'a', 'default', 'ratings', 'import after the first gateway stopped', 30_000);

  // The export store restarts: the link resumes, and the heartbeat keeps it fresh.
  await exportStore.etcd.restart();
  await exportInto(exportStore, 'details');
  await waitForFreshImport(b, 'a', 'default', 'details', 'import after the export store restarted', 30_000);

  // A compaction while the link cannot follow: it resumes at a compacted revision and re-lists.
  await g2.stop();
  const g2Port = g2.port;
  await exportStore.root.delete(EtcdKeys.exportedService('default', 'ratings'));
  await exportInto(exportStore, 'details');
  const revision = (await exportStore.root.list(EtcdKeys.exportsPrefix)).revision;
  exportStore.etcd.etcdctl(['compaction', revision]);
  await startGateway('gw-2', g2Port);
  await waitFor(async () => (await readImport(b, 'a', 'default', 'ratings')) === undefined, { what: 'ratings import removed by the re-list', timeoutMs: 30_000 });
  t.true(((await metricValue(registry, 'causeway_federation_resyncs_total', { peer: 'a', reason: 'compacted' })) ?? 0) >= 1, 'a compacted re-list');
  await waitForFreshImport(b, 'a', 'default', 'reviews', 'fresh again after the compaction', 30_000);

  // a revokes b: the link says unauthorized — in its status, its metric and causeway status.
  const revoked = await causeway(['federation', 'revoke', '--peer', 'b', '--config', aFile]);
  t.is(revoked.code, 0, revoked.stderr);
  await waitFor(async () => (await state('unauthorized')) === 1, { what: 'link state unauthorized', timeoutMs: 20_000 });
  const live = federation.status().links[0]!;
  t.is(live.state, 'unauthorized');
  t.regex(live.message ?? '', new RegExp(`a refuses this cluster's credentials \\(through gateways 127\\.0\\.0\\.1:${g1.port}, 127\\.0\\.0\\.1:${g2Port}\\).*causeway federation grant --peer b`));
  await waitFor(async () => (await readLinkStatus(b, 'a'))?.state === 'unauthorized', { what: 'unauthorized in the stored link status' });
  const text = renderClusterStatus(await readClusterStatus(b.store, clusterConfig(b, [a])));
  t.regex(text, /a\s+unauthorized/);
  t.regex(text, /a: a refuses this cluster's credentials/);
  t.log(text);
});
