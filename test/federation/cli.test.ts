import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { EtcdKeys } from '../../mesh/index.js';
import { stringify } from 'yaml';
import { freePort, waitFor } from '../../testkit/index.js';
import { causeway, exportService, exportedService, publishPeer, startCauseway, startCluster, timings, type TestCluster } from './helpers.js';

function writeConfig(local: TestCluster, peers: TestCluster[], port: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'cw-federation-cli-'));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(
    file,
    stringify({
      cluster: { name: local.name, locality: { region: 'r-a', zone: 'z1' } },
      etcd: { endpoints: local.etcd.endpoints },
      links: peers.map((p) => ({ peer: p.name, etcd: { endpoints: p.etcd.endpoints } })),
      // Expiry far away, so the status can be caught while stale however slow the machine.
      // initialSyncTimeoutMs far above a busy host's sync time: ready here must mean synced.
      federation: { ...timings, expireAfterMs: 120_000, initialSyncTimeoutMs: 30_000 },
      observability: { host: '127.0.0.1', readyPort: port, metricsPort: port },
    }),
  );
  return file;
}

test('causeway federation serves readiness and metrics, and causeway status tells the truth when the peer dies', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  await publishPeer(t, b);
  await exportService(b, exportedService('default', 'reviews'));
  const port = await freePort();
  const config = writeConfig(a, [b], port);
  t.teardown(() => rmSync(join(config, '..'), { recursive: true, force: true }));

  const proc = startCauseway(['federation', '--config', config, '--heartbeat']);
  t.teardown(() => proc.kill());
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/healthz/ready`)).status === 200, { timeoutMs: 45_000, what: 'ready' });
  t.regex(readFileSync(`/proc/${proc.child.pid}/cmdline`, 'utf8'), /\/dist\/federation\.mjs\0federation\0/, 'runs from its bundle');
  // Ready means the initial sync is done, and the first scrape after it says so (the gauge
  // once lagged until the next heartbeat tick and this read 'syncing').
  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  t.regex(metrics, /causeway_federation_link_state\{[^}]*peer="b"[^}]*state="synced"[^}]*\} 1/);
  t.regex(metrics, /causeway_federation_sync_lag_seconds_bucket/);
  // --heartbeat: this cluster tells its own peers it is alive, and how to reach it.
  t.truthy(await a.store.get(EtcdKeys.heartbeat));
  t.regex((await a.store.get(EtcdKeys.exportedCluster))?.value.toString() ?? '', /"name":"a"/);

  const synced = await waitFor(async () => {
    const r = await causeway(['status', '--json', '--config', config]);
    const s = JSON.parse(r.stdout) as { links: Array<{ peer: string; state: string; imports: number; connected: boolean }> };
    return s.links[0]?.state === 'synced' && s.links[0].imports === 1 ? s : undefined;
  }, { timeoutMs: 45_000, what: 'status synced' });
  t.like(synced.links[0], { peer: 'b', connected: true });

  await b.etcd.kill();
  const down = await waitFor(async () => {
    const r = await causeway(['status', '--config', config]);
    return /b\s+stale\s+no/.test(r.stdout) ? r.stdout : undefined;
  }, { timeoutMs: 45_000, what: 'human status shows b stale and disconnected' });
  t.regex(down, /no heartbeat from b/);

  proc.child.kill('SIGTERM');
  t.is(await proc.exited, 0);
  // With the federation gone, status still reports what it last knew — and that it stopped.
  const after = await waitFor(async () => {
    const r = await causeway(['status', '--json', '--config', config]);
    return JSON.parse(r.stdout) as { links: Array<{ connected: boolean; message?: string }> };
  }, { timeoutMs: 45_000, what: 'status after stop' });
  t.false(after.links[0]!.connected);
  t.regex(after.links[0]!.message ?? '', /federation stopped/);
});
