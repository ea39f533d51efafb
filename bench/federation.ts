/**
 * Federation benchmark (`npm run bench:federation`), on real etcd servers on loopback:
 *  1. put in A → import visible in B: p50/p99 at a steady 100 updates/s (goal p99 ≤ 100 ms);
 *  2. initial sync of 10,000 exported services: from Federation.start() to ready (goal ≤ 3 s).
 * Options (env): BENCH_SECONDS (default 10), BENCH_RATE (100), BENCH_SERVICES (10000).
 */
import { Registry } from 'prom-client';
import {
  EtcdKeys,
  ExportedService,
  encodeCatalogValue,
  setRootLogger,
  createRootLogger,
  type EtcdConnection,
  type FederationConfig,
} from '../mesh/index.js';
import { connectFederationStore, Federation, HeartbeatPublisher, publishExportedCluster } from '../federation/index.js';
import type { EtcdStore } from '../store/index.js';
import { startEtcd, type EtcdServer } from '../testkit/index.js';
import { exportedService } from '../testkit/catalog.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const rate = Number(process.env.BENCH_RATE ?? 100);
const serviceCount = Number(process.env.BENCH_SERVICES ?? 10_000);
const settings: FederationConfig = { heartbeatIntervalMs: 2000, staleAfterMs: 15_000, expireAfterMs: 300_000, initialSyncTimeoutMs: 60_000 };

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

interface Cluster {
  etcd: EtcdServer;
  store: EtcdStore;
}

async function cluster(name: string): Promise<Cluster> {
  const etcd = await startEtcd({ name: `bench-${name}` });
  return { etcd, store: connectFederationStore(connection(etcd)) };
}

/** Runs `fn` with cluster A (exporting, heartbeating) and cluster B (fresh), then tears both down. */
async function withTwoClusters<T>(fn: (a: Cluster, b: Cluster) => Promise<T>): Promise<T> {
  const a = await cluster('a');
  const b = await cluster('b');
  const heartbeat = new HeartbeatPublisher({ cluster: 'a', store: a.store, intervalMs: settings.heartbeatIntervalMs });
  try {
    await publishExportedCluster(a.store, { name: 'a', locality: { region: 'r1', zone: 'z1' }, network: 'n1', trustDomain: 'causeway.internal', gateways: [{ address: '127.0.0.1', port: 15443 }] });
    await heartbeat.start();
    return await fn(a, b);
  } finally {
    await heartbeat.stop({ revoke: false });
    a.store.close();
    b.store.close();
    await a.etcd.destroy();
    await b.etcd.destroy();
  }
}

function federationInB(a: Cluster, b: Cluster): Federation {
  return new Federation({ cluster: 'b', local: connection(b.etcd), links: [{ peer: 'a', etcd: connection(a.etcd) }], settings, registry: new Registry() });
}

function latencyAtRate(): Promise<{ p50: number; p99: number; max: number; n: number }> {
  return withTwoClusters(async (a, b) => {
    const names = Array.from({ length: 50 }, (_, i) => `svc-${i}`);
    for (const name of names) await a.store.commit([putOp('bench', name, 0)]);
    const federation = federationInB(a, b);
    await federation.start();
    await federation.whenReady();

    const startedAt = new Map<string, number>();
    const seenAt = new Map<string, number>();
    const watch = b.store.watchPrefix(EtcdKeys.peerImportsPrefix('a'), '1', {
      onBatch: (batch) => {
        for (const ev of batch.events) {
          if (ev.type !== 'put' || ev.key.endsWith('/_status')) continue;
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
        a.store.commit([putOp('bench', names[i % names.length]!, (i % 9) + 1)]).then((rev) => {
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
    if (missing > 0) console.error(`${missing} updates never became visible in B within 10 s`);
    await federation.stop();
    return { p50: quantile(latencies, 0.5), p99: quantile(latencies, 0.99), max: latencies.at(-1) ?? NaN, n: latencies.length };
  });
}

function initialSync(): Promise<{ ms: number; imports: number }> {
  return withTwoClusters(async (a, b) => {
    const ops = Array.from({ length: serviceCount }, (_, i) => putOp(`ns-${i % 100}`, `svc-${i}`, 3));
    for (let i = 0; i < ops.length; i += 128) await a.store.commit(ops.slice(i, i + 128));
    const federation = federationInB(a, b);
    const t0 = performance.now();
    await federation.start();
    await federation.whenReady();
    const ms = performance.now() - t0;
    const imported = (await b.store.list(EtcdKeys.peerImportsPrefix('a'))).entries.length - 1;
    await federation.stop();
    return { ms, imports: imported };
  });
}

const latency = await latencyAtRate();
console.log(
  `put in A → import visible in B at ${rate} updates/s for ${seconds}s (n=${latency.n}): p50 ${latency.p50.toFixed(1)} ms, p99 ${latency.p99.toFixed(1)} ms, max ${latency.max.toFixed(1)} ms (goal p99 ≤ 100 ms: ${latency.p99 <= 100 ? 'met' : 'MISSED'})`,
);
const sync = await initialSync();
console.log(
  `initial sync of ${serviceCount} exported services: ${sync.ms.toFixed(0)} ms, ${sync.imports} imports written (goal ≤ 3000 ms: ${sync.ms <= 3000 && sync.imports === serviceCount ? 'met' : 'MISSED'})`,
);
process.exit(0);
