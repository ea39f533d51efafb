/**
 * Federation benchmark (`npm run bench:federation`), on real etcd servers on loopback, for
 * the path a link really takes — put in A's export store → through A's gateway (SNI
 * `exports.a.cw1.causeway.internal`, TLS passed through) → import visible in B's etcd —
 * and, for comparison, the direct path between two plain main etcds (the old measurement):
 *  1. put in A → import visible in B: p50/p99 at a steady 100 updates/s (goal p99 ≤ 100 ms);
 *  2. initial sync of 10,000 exported services: from Federation.start() to ready (goal ≤ 1 s).
 *
 * Via the gateway, A is what `federation init`, the controller and `federation grant` set
 * up: an export store (TLS, client-cert auth, auth enabled) that the bench's writer fills
 * as the controller would (CN=root, heartbeat by HeartbeatPublisher), A's gateway routing
 * the export-store SNI, and B's link in the gateways form with the credentials grant issues.
 * The goals are checked on the gateway path (the direct one when it runs alone).
 *
 * Writes bench/results/federation-<time>.{md,json} and prints the table and the ratios.
 * Options (env): BENCH_PATH (both | gateway | direct; default both), BENCH_SECONDS (10),
 * BENCH_RATE (100), BENCH_SERVICES (10000).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import {
  EtcdKeys,
  ExportedService,
  encodeCatalogValue,
  parseConfig,
  parseEtcdKey,
  setRootLogger,
  createRootLogger,
  type EtcdConnection,
  type FederationConfig,
  type LinkConfig,
} from '../mesh/index.js';
import { connectFederationStore, ensureExportStoreAuth, Federation, HeartbeatPublisher, publishExportedCluster } from '../federation/index.js';
import { runGateway } from '../gateway/index.js';
import type { EtcdStore } from '../store/index.js';
import { startEtcd, type EtcdServer } from '../testkit/index.js';
import { exportedService } from '../testkit/catalog.js';
import { grantPeerLink, startExportStoreServer } from '../testkit/export-store.js';

type PathName = 'direct' | 'gateway';
const PATHS: Record<string, PathName[]> = { both: ['direct', 'gateway'], direct: ['direct'], gateway: ['gateway'] };

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const pathOption = process.env.BENCH_PATH ?? 'both';
const paths = PATHS[pathOption];
if (!paths) throw new Error(`BENCH_PATH must be both, gateway or direct (got "${pathOption}")`);
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const rate = Number(process.env.BENCH_RATE ?? 100);
const serviceCount = Number(process.env.BENCH_SERVICES ?? 10_000);
const settings: FederationConfig = { heartbeatIntervalMs: 2000, staleAfterMs: 15_000, expireAfterMs: 300_000, initialSyncTimeoutMs: 60_000 };
const GOAL_P99_MS = 100;
const GOAL_SYNC_MS = 1000;

setRootLogger(createRootLogger({ level: process.env.CAUSEWAY_LOG_LEVEL ?? 'warn' }));

function putOp(ns: string, name: string, healthy: number) {
  const key = EtcdKeys.exportedService(ns, name);
  return { put: key, value: encodeCatalogValue(ExportedService, key, exportedService(ns, name, { healthy, exportedAt: '2026-01-01T00:00:00.000Z' })) };
}

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const connection = (etcd: EtcdServer): EtcdConnection => ({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });

/** Cluster A exporting (its writer plays A's controller, heartbeat running) and cluster B, linked to A by `link`. */
interface Clusters {
  /** Where A's exports are written: A's export store as CN=root, or (direct) A's main etcd. */
  readonly writer: EtcdStore;
  readonly b: EtcdStore;
  readonly bConnection: EtcdConnection;
  readonly link: LinkConfig;
}

/** Runs `fn` with A and B set up for `path`, then tears everything down in reverse order. */
async function withClusters<T>(path: PathName, fn: (clusters: Clusters) => Promise<T>): Promise<T> {
  const undo: Array<() => unknown> = [];
  try {
    const aEtcd = await startEtcd({ name: 'bench-a' });
    undo.push(() => aEtcd.destroy());
    const bEtcd = await startEtcd({ name: 'bench-b' });
    undo.push(() => bEtcd.destroy());
    let writer: EtcdStore;
    let link: LinkConfig;
    let gatewayPort = 15443;
    if (path === 'direct') {
      writer = connectFederationStore(connection(aEtcd));
      undo.push(() => writer.close());
      link = { peer: 'a', etcd: connection(aEtcd) };
    } else {
      const exportStore = await startExportStoreServer('a');
      undo.push(() => exportStore.destroy());
      await ensureExportStoreAuth(exportStore.root);
      const aConfig = parseConfig('cluster', {
        cluster: { name: 'a', locality: { region: 'r1', zone: 'z1' } },
        etcd: { endpoints: aEtcd.endpoints },
        exportStore: exportStore.config,
        gateway: { host: '127.0.0.1', port: 0, drainTimeoutMs: 500 },
        observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
      });
      const gateway = await runGateway({ cluster: aConfig, id: 'bench-gw', workers: 1 });
      undo.push(() => gateway.stop());
      gatewayPort = gateway.port;
      writer = exportStore.root;
      link = await grantPeerLink(exportStore, { peer: 'b', gateways: [`127.0.0.1:${gateway.port}`] });
    }
    await publishExportedCluster(writer, { name: 'a', locality: { region: 'r1', zone: 'z1' }, network: 'n1', trustDomain: 'causeway.internal', gateways: [{ address: '127.0.0.1', port: gatewayPort }] });
    const heartbeat = new HeartbeatPublisher({ cluster: 'a', store: writer, intervalMs: settings.heartbeatIntervalMs });
    await heartbeat.start();
    undo.push(() => heartbeat.stop({ revoke: false }));
    const b = connectFederationStore(connection(bEtcd));
    undo.push(() => b.close());
    return await fn({ writer, b, bConnection: connection(bEtcd), link });
  } finally {
    for (const step of undo.reverse()) await Promise.resolve(step()).catch((error: unknown) => console.error('teardown:', (error as Error).message));
  }
}

function federationInB(clusters: Clusters): Federation {
  return new Federation({ cluster: 'b', local: clusters.bConnection, links: [clusters.link], settings, registry: new Registry() });
}

interface Latency {
  p50: number;
  p99: number;
  max: number;
  n: number;
  missing: number;
}

function latencyAtRate(path: PathName): Promise<Latency> {
  return withClusters(path, async (clusters) => {
    const { writer, b } = clusters;
    const names = Array.from({ length: 50 }, (_, i) => `svc-${i}`);
    for (const name of names) await writer.commit([putOp('bench', name, 0)]);
    const federation = federationInB(clusters);
    await federation.start();
    await federation.whenReady();

    const startedAt = new Map<string, number>();
    const seenAt = new Map<string, number>();
    const watch = b.watchPrefix(EtcdKeys.peerImportsPrefix('a'), '1', {
      onBatch: (batch) => {
        for (const ev of batch.events) {
          if (ev.type !== 'put' || parseEtcdKey(ev.key).kind !== 'imported-service') continue; // not _status, _links
          const rev = (JSON.parse(ev.value.toString('utf8')) as { peerRevision: string }).peerRevision;
          if (!seenAt.has(rev)) seenAt.set(rev, performance.now());
        }
      },
      onCompacted: () => undefined,
      onBroken: (error) => console.error('bench watch broke:', error.message),
    });
    const total = seconds * rate;
    const t0 = performance.now();
    const puts: Promise<void>[] = [];
    for (let i = 0; i < total; i++) {
      const due = t0 + (i * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const start = performance.now();
      puts.push(
        writer.commit([putOp('bench', names[i % names.length]!, (i % 9) + 1)]).then((rev) => {
          startedAt.set(rev, start);
        }),
      );
    }
    await Promise.all(puts);
    const deadline = Date.now() + 10_000;
    while ([...startedAt.keys()].some((r) => !seenAt.has(r)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    watch.close();
    const latencies = [...startedAt].flatMap(([rev, start]) => (seenAt.has(rev) ? [seenAt.get(rev)! - start] : [])).sort((x, y) => x - y);
    const missing = startedAt.size - latencies.length;
    if (missing > 0) console.error(`${path}: ${missing} updates never became visible in B within 10 s`);
    await federation.stop();
    return { p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), max: latencies.at(-1) ?? NaN, n: latencies.length, missing };
  });
}

function initialSync(path: PathName): Promise<{ ms: number; imports: number }> {
  return withClusters(path, async (clusters) => {
    const ops = Array.from({ length: serviceCount }, (_, i) => putOp(`ns-${i % 100}`, `svc-${i}`, 3));
    for (let i = 0; i < ops.length; i += 128) await clusters.writer.commit(ops.slice(i, i + 128));
    const federation = federationInB(clusters);
    const t0 = performance.now();
    await federation.start();
    await federation.whenReady();
    const ms = performance.now() - t0;
    const imported = (await clusters.b.list(EtcdKeys.peerImportsPrefix('a'))).entries.filter((e) => parseEtcdKey(e.key).kind === 'imported-service').length;
    await federation.stop();
    return { ms, imports: imported };
  });
}

const loadavg = () => readFileSync('/proc/loadavg', 'utf8').trim();
const loadAtStart = loadavg();
const rows = [];
for (const path of paths) {
  const latency = await latencyAtRate(path);
  const sync = await initialSync(path);
  rows.push({
    path,
    p50Ms: Number(latency.p50.toFixed(1)),
    p99Ms: Number(latency.p99.toFixed(1)),
    maxMs: Number(latency.max.toFixed(1)),
    updates: latency.n,
    missing: latency.missing,
    initialSyncMs: Math.round(sync.ms),
    imports: sync.imports,
  });
}

const checked = rows.find((r) => r.path === 'gateway') ?? rows[0]!;
const goals = {
  p99: { goal: `p99 ≤ ${GOAL_P99_MS} ms (${checked.path})`, met: checked.p99Ms <= GOAL_P99_MS && checked.missing === 0 },
  initialSync: { goal: `≤ ${GOAL_SYNC_MS} ms for ${serviceCount} exports (${checked.path})`, met: checked.initialSyncMs <= GOAL_SYNC_MS && checked.imports === serviceCount },
};
const direct = rows.find((r) => r.path === 'direct');
const gateway = rows.find((r) => r.path === 'gateway');
const ratios =
  direct && gateway
    ? { p50GatewayVsDirect: Number((gateway.p50Ms / direct.p50Ms).toFixed(2)), p99GatewayVsDirect: Number((gateway.p99Ms / direct.p99Ms).toFixed(2)), initialSyncGatewayVsDirect: Number((gateway.initialSyncMs / direct.initialSyncMs).toFixed(2)) }
    : undefined;
const label: Record<PathName, string> = { direct: 'direct (A main etcd → B)', gateway: "via gateway (A export store → A gateway → B)" };
const table = [
  `| path | put → import p50 ms | p99 ms | max ms | updates | initial sync of ${serviceCount} ms | imports |`,
  '|---|---:|---:|---:|---:|---:|---:|',
  ...rows.map((r) => `| ${label[r.path]} | ${r.p50Ms} | ${r.p99Ms} | ${r.maxMs} | ${r.updates}${r.missing ? ` (${r.missing} missing)` : ''} | ${r.initialSyncMs} | ${r.imports} |`),
].join('\n');
const summary = [
  `put in A → import visible in B at ${rate} updates/s for ${seconds}s, ${checked.path}: p99 ${checked.p99Ms} ms (goal p99 ≤ ${GOAL_P99_MS} ms: ${goals.p99.met ? 'met' : 'MISSED'})`,
  `initial sync of ${serviceCount} exported services, ${checked.path}: ${checked.initialSyncMs} ms, ${checked.imports} imports written (goal ≤ ${GOAL_SYNC_MS} ms: ${goals.initialSync.met ? 'met' : 'MISSED'})`,
  ...(ratios ? [`via gateway / direct: p50 ${ratios.p50GatewayVsDirect}×, p99 ${ratios.p99GatewayVsDirect}×, initial sync ${ratios.initialSyncGatewayVsDirect}×`] : []),
];
const when = new Date().toISOString();
const options = { path: pathOption, seconds, rate, services: serviceCount, settings };
const load = { atStart: loadAtStart, atEnd: loadavg() };
const markdown = `# Federation benchmark ${when}\n\n${table}\n\n${summary.map((l) => `- ${l}`).join('\n')}\n\nSettings: ${JSON.stringify(options)}; load average at the start: ${load.atStart}, at the end: ${load.atEnd}\n`;
const dir = join(ROOT, 'bench', 'results');
mkdirSync(dir, { recursive: true });
const stamp = when.replace(/[:.]/g, '-');
writeFileSync(join(dir, `federation-${stamp}.md`), markdown);
writeFileSync(join(dir, `federation-${stamp}.json`), `${JSON.stringify({ when, options, rows, ratios, goals, load }, null, 2)}\n`);
process.stdout.write(`${table}\n\n${summary.join('\n')}\n\nload average: ${load.atStart} (start), ${load.atEnd} (end)\nwritten: bench/results/federation-${stamp}.{md,json}\n`);
process.exit(0);
