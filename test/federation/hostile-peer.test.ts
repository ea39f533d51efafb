import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { parse, stringify } from 'yaml';
import { EtcdKeys, LinkConfig, parseConfig } from '../../mesh/index.js';
import { FederationError, FederationErrorCodes, HeartbeatPublisher, connectPeerStore, ensureExportStoreAuth, publishExportedCluster } from '../../federation/index.js';
import { runGateway } from '../../gateway/index.js';
import { waitFor } from '../../testkit/index.js';
import { startExportStore } from './export-store-fixture.js';
import { causeway, exportedService, startCluster, startFederation, timings, waitForFreshImport } from './helpers.js';

const run = promisify(execFile);
const ETCDCTL = process.env.CAUSEWAY_ETCDCTL_BIN ?? 'etcdctl';
type Outcome = 'refused' | 'allowed' | 'failed';

test('a hostile peer with the credentials grant issues, through the gateway: everything outside exports/ and every write is refused; what etcd lets through (leases, compaction, member list) reaches nothing but exports and is repaired', async (t) => {
  const [a, b] = await Promise.all([startCluster(t, 'a'), startCluster(t, 'b')]);
  const exportStore = await startExportStore(t, 'a');
  await ensureExportStoreAuth(exportStore.root);
  const aConfig = parseConfig('cluster', {
    cluster: { name: 'a', locality: { region: 'region-a', zone: 'z1' } },
    etcd: { endpoints: a.etcd.endpoints },
    exportStore: exportStore.config,
    gateway: { host: '127.0.0.1', port: 0, drainTimeoutMs: 500 },
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
  });
  const gateway = await runGateway({ cluster: aConfig, id: 'gw-1', workers: 1 });
  t.teardown(() => gateway.stop());
  await publishExportedCluster(exportStore.root, { name: 'a', locality: { region: 'region-a', zone: 'z1' }, network: 'net-a', trustDomain: 'causeway.internal', gateways: [{ address: '127.0.0.1', port: gateway.port }] });
  const heartbeat = new HeartbeatPublisher({ cluster: 'a', store: exportStore.root, intervalMs: timings.heartbeatIntervalMs });
  await heartbeat.start();
  t.teardown(() => heartbeat.stop({ revoke: false }).catch(() => undefined));
  await exportStore.root.put(EtcdKeys.exportedService('default', 'reviews'), JSON.stringify(exportedService('default', 'reviews')));

  const dir = mkdtempSync(join(tmpdir(), 'cw-hostile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const aFile = join(dir, 'a.yaml');
  writeFileSync(aFile, stringify({ cluster: { name: 'a', locality: { region: 'region-a', zone: 'z1' } }, etcd: { endpoints: a.etcd.endpoints }, exportStore: exportStore.config }));
  const out = join(dir, 'b-at-a');
  const granted = await causeway(['federation', 'grant', '--peer', 'b', '--config', aFile, '--gateway', `127.0.0.1:${gateway.port}`, '--out', out, '--days', '1']);
  t.is(granted.code, 0, granted.stderr);
  const [link] = (parse(readFileSync(join(out, 'link.yaml'), 'utf8')) as unknown[]).map((l) => LinkConfig.parse(l));
  // The honest link of b, to see what the hostile calls do to it.
  const { federation } = await startFederation(t, b, [link!]);
  await waitForFreshImport(b, 'a', 'default', 'reviews', 'the honest link imports');

  // The hostile peer: the same credentials, through the same gateway, by the export store's SNI.
  const hostile = connectPeerStore(link!, 'causeway.internal');
  t.teardown(() => hostile.close());
  const table: Array<[string, Outcome, string]> = [];
  const attempt = async (what: string, call: () => Promise<unknown>): Promise<Outcome> => {
    try {
      const result = await call();
      table.push([what, 'allowed', typeof result === 'string' || typeof result === 'number' ? String(result).slice(0, 60) : '']);
      return 'allowed';
    } catch (error) {
      const refused = error instanceof FederationError && error.code === FederationErrorCodes.etcdPermissionDenied;
      table.push([what, refused ? 'refused' : 'failed', (error as Error).message.replace(/.*\((.*?), during.*/s, '$1').slice(0, 80)]);
      return refused ? 'refused' : 'failed';
    }
  };
  // etcdctl cannot send an SNI other than its endpoint's host, so the calls the store has
  // no method for go to the export store directly: the gateway passes TLS through, so the
  // export store sees the same login either way.
  const etcdctl = (args: string[]) => async () => {
    try {
      const { stdout } = await run(ETCDCTL, ['--endpoints', exportStore.etcd.clientUrl, '--cacert', link!.tls!.ca, '--cert', link!.tls!.cert, '--key', link!.tls!.key, '--command-timeout=5s', ...args], { env: { ...process.env, ETCDCTL_API: '3' } });
      return stdout.trim().split('\n')[0] ?? '';
    } catch (error) {
      const text = String((error as { stderr?: string }).stderr ?? (error as Error).message);
      throw /permission denied|not permitted|authentication/i.test(text) ? new FederationError(FederationErrorCodes.etcdPermissionDenied, text.trim()) : new Error(text.trim());
    }
  };

  const refusedEverywhere: Array<[string, () => Promise<unknown>]> = [
    ['get /causeway/v1/cluster (outside exports)', () => hostile.get(EtcdKeys.cluster)],
    ['list /causeway/v1/ (outside exports)', () => hostile.list('/causeway/v1/')],
    ['put outside exports', () => hostile.put('/causeway/v1/endpoints/default/reviews/evil', '{}')],
    ['put inside exports (a fake export)', () => hostile.put(EtcdKeys.exportedService('default', 'evil'), '{}')],
    ['put the heartbeat', () => hostile.put(EtcdKeys.heartbeat, '{}')],
    ['put the links report (exports/_links)', () => hostile.put(EtcdKeys.reportedLinks, '{}')],
    ['delete an export', () => hostile.delete(EtcdKeys.exportedService('default', 'reviews'))],
    ['txn: put + delete', () => hostile.commit([{ put: EtcdKeys.exportedCluster, value: '{}' }, { delete: EtcdKeys.heartbeat }])],
    ['user/role: grant itself readwrite on everything', () => hostile.grantPrefix({ user: 'causeway-peer-b', role: 'evil', prefix: '/', permission: 'readwrite' })],
    ['user/role: delete root', () => hostile.revokeUser({ user: 'root', role: 'root' })],
    ['auth: enable (bootstrap as itself)', () => hostile.enableAuth()],
  ];
  for (const [what, call] of refusedEverywhere) t.is(await attempt(what, call), 'refused', what);

  // A watch outside exports is canceled by etcd.
  const watched = await new Promise<string>((resolve) => {
    const w = hostile.watchPrefix('/causeway/v1/endpoints/', '1', { onBatch: () => resolve('events'), onCompacted: () => resolve('compacted'), onBroken: (e) => resolve(`broken: ${e.message}`) });
    setTimeout(() => {
      w.close();
      resolve('no answer');
    }, 5000).unref();
  });
  table.push(['watch /causeway/v1/endpoints/', /permission denied/.test(watched) ? 'refused' : 'failed', watched.slice(0, 80)]);
  t.regex(watched, /permission denied/);

  const beat = await hostile.get(EtcdKeys.heartbeat);
  t.truthy(beat, 'the peer reads the heartbeat (and its lease id)');
  const lease = beat!.lease;
  const leaseHex = BigInt(lease).toString(16);
  t.is(await attempt('lease revoke (the heartbeat lease)', () => hostile.revokeLease(lease)), 'refused');
  // What etcd does not check by key: recorded, and their effect shown harmless below.
  await attempt('lease grant', () => hostile.grantLease(60));
  const keptAlive = await attempt('lease keep-alive (the heartbeat lease)', () => hostile.keepAlive(lease));
  await attempt('lease list', etcdctl(['lease', 'list']));
  await attempt('lease timetolive --keys (the heartbeat lease)', etcdctl(['lease', 'timetolive', leaseHex, '--keys']));
  await attempt('member list', etcdctl(['member', 'list']));
  await attempt('snapshot save', etcdctl(['snapshot', 'save', join(dir, 'stolen.db')]));
  const compactAt = (await exportStore.root.list(EtcdKeys.exportsPrefix)).revision;
  const compacted = await attempt('compaction', etcdctl(['compaction', compactAt]));
  t.log(`\n${table.map(([what, outcome, detail]) => `${what.padEnd(52)} ${outcome.padEnd(8)} ${detail}`).join('\n')}`);

  // Nothing of the main etcd is reachable through any of this: the export store holds only exports.
  t.deepEqual((await exportStore.root.listAllKeys()).filter((k) => !k.startsWith(EtcdKeys.exportsPrefix)), []);
  t.truthy(await exportStore.root.get(EtcdKeys.exportedService('default', 'reviews')));
  // After a compaction (by anyone) the honest link still follows: a new export arrives.
  if (compacted === 'allowed') t.pass('compaction is allowed to a peer by etcd; the link re-lists when it needs to');
  await exportStore.root.put(EtcdKeys.exportedService('default', 'ratings'), JSON.stringify(exportedService('default', 'ratings')));
  await waitForFreshImport(b, 'a', 'default', 'ratings', 'the honest link follows after the peer compacted');

  // The exporter dies; the hostile peer keeps its heartbeat lease alive: the key stays, the
  // sequence stops advancing, and the honest link goes stale all the same.
  await heartbeat.stop({ revoke: false });
  const keeper = setInterval(() => void hostile.keepAlive(lease).catch(() => undefined), 300);
  t.teardown(() => clearInterval(keeper));
  await waitFor(() => federation.status().links[0]!.state === 'stale', { what: 'stale despite a kept-alive heartbeat lease', timeoutMs: timings.staleAfterMs + 10_000 });
  if (keptAlive === 'allowed') t.truthy(await exportStore.root.get(EtcdKeys.heartbeat), 'the heartbeat key is still there, kept alive by the peer');
  clearInterval(keeper);
});
