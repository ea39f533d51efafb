import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { stringify } from 'yaml';
import { parseConfig } from '../../mesh/index.js';
import { runMeshView, type MeshView } from '../../ui/index.js';
import { waitFor } from '../../testkit/index.js';
import { causeway, linkTo, publishPeer, startCluster, startFederation } from '../federation/helpers.js';
import { viewTimings } from './helpers.js';

const reported = (view: MeshView, from: string, to: string) => view.reportedLinks.find((l) => l.cluster === from && l.peer === to);

test('from east, the links between west and south show as their holders report them; a dead south turns west → south stale and south\'s own report stale, within staleAfter and a margin', async (t) => {
  const [east, west, south] = await Promise.all(['east', 'west', 'south'].map((name) => startCluster(t, name)));
  const all = [east!, west!, south!];
  await Promise.all(all.map((c) => publishPeer(t, c)));
  // A full mesh: every cluster runs a real federation linked to the two others.
  const federations = await Promise.all(all.map((c) => startFederation(t, c, all.filter((p) => p !== c).map((p) => linkTo(p)), viewTimings)));
  const southFederation = federations[2]!.federation;

  const dir = mkdtempSync(join(tmpdir(), 'cw-peer-links-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'east.yaml');
  const eastConfig = {
    cluster: { name: 'east', locality: { region: 'region-east', zone: 'z1' } },
    etcd: { endpoints: east!.etcd.endpoints },
    links: [west!, south!].map((p) => ({ peer: p.name, etcd: { endpoints: p.etcd.endpoints } })),
    federation: viewTimings,
  };
  writeFileSync(file, stringify(eastConfig));
  const running = await runMeshView({ config: parseConfig('cluster', eastConfig), port: 0, refreshMs: 250 });
  t.teardown(() => running.stop());
  const mesh = async () => (await (await fetch(new URL('api/mesh', running.url))).json()) as MeshView;

  const view = await waitFor(async () => {
    const v = await mesh().catch(() => undefined);
    return v && reported(v, 'west', 'south')?.state === 'synced' && reported(v, 'south', 'west')?.state === 'synced' ? v : undefined;
  }, { timeoutMs: 45_000, what: 'west → south and south → west reported synced in /api/mesh' });
  t.like(reported(view, 'west', 'south'), { reportedBy: 'west', staleReport: false, towardsLocal: false });
  t.like(reported(view, 'south', 'west'), { reportedBy: 'south', staleReport: false, towardsLocal: false });
  t.like(reported(view, 'west', 'east'), { reportedBy: 'west', towardsLocal: true }, "west's side of its link into east, labelled");
  t.false(view.reportedLinks.some((l) => l.cluster === 'east'), "east's own links come from east's data only");
  t.deepEqual(view.links.map((l) => `${l.cluster}>${l.peer}`), ['east>south', 'east>west']);
  t.true(reported(view, 'west', 'south')!.reportAgeMs < viewTimings.staleAfterMs);

  // status --all, as a real command: the same model as JSON, and one line per reporter as text.
  const json = await causeway(['status', '--all', '--json', '-c', file]);
  t.is(json.code, 0, json.stderr);
  const fromCli = JSON.parse(json.stdout) as MeshView;
  t.like(reported(fromCli, 'west', 'south'), { reportedBy: 'west', state: 'synced' });
  t.like(reported(fromCli, 'south', 'west'), { reportedBy: 'south', state: 'synced' });
  const text = await causeway(['status', '--all', '-c', file]);
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /links reported by peers/);
  t.regex(text.stdout, /^\s+west reports: west → east synced.*; west → south synced/m);
  t.regex(text.stdout, /^\s+south\s+west\s+synced\s.*by south, [\d.]+m?s ago/m);

  // south's federation stops: its last report says its links are down.
  await southFederation.stop();
  await waitFor(async () => reported(await mesh(), 'south', 'west')?.state === 'down', { timeoutMs: 20_000, what: "south's last report: south → west down" });

  // south's etcd dies: west's link to it goes stale, west reports so, and south's own report (east can no longer read it) ages past staleAfter.
  await south!.etcd.kill();
  const startedMs = Date.now();
  const stale = await waitFor(async () => {
    const v = await mesh();
    const ws = reported(v, 'west', 'south');
    return ws && (ws.state === 'stale' || ws.state === 'down' || ws.state === 'expired') && reported(v, 'south', 'west')?.staleReport ? v : undefined;
  }, { timeoutMs: viewTimings.staleAfterMs + 30_000, what: 'west → south stale in the report, south’s report stale' });
  t.log(`west → south shown ${reported(stale, 'west', 'south')!.state} after ${Date.now() - startedMs} ms (staleAfter ${viewTimings.staleAfterMs} ms)`);
  t.like(reported(stale, 'west', 'south'), { reportedBy: 'west', staleReport: false }, "west's report itself is current");
  t.like(reported(stale, 'west', 'east'), { state: 'synced' });
  t.true(
    stale.events.some((e) => e.kind === 'link-state' && e.cluster === 'west' && e.severity === 'warning' && /^link west → south: synced → (stale|down|expired) \(reported by west\)$/.test(e.message)),
    JSON.stringify(stale.events),
  );
  const staleText = await causeway(['status', '--all', '-c', file]);
  t.regex(staleText.stdout, /south reports: .* — a stale report, [\d.]+m?s old/);
  t.regex(staleText.stdout, /^\s+south\s+west\s+down \(stale report\)/m);
});
