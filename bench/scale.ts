/**
 * Federation scale benchmark (`npm run bench:scale`): full-mesh federations of 2, 5 and 10
 * clusters on this machine, every part real (bench/scale-mesh.ts: per cluster a main etcd,
 * an export store with TLS and RBAC, a controller process and a federation process; a
 * granted link for every ordered pair). Each cluster gets 1,000 exported services × 10
 * endpoints, written into its etcd in the registry's format (testkit/bulk-catalog.ts).
 * Per mesh size it measures:
 *  1. convergence: from the first catalog write until every cluster holds every peer's
 *     services as imports (goal ≤ 30 s);
 *  2. endpoint put → import visible in every peer, p50/p99 at a steady rate spread over
 *     the clusters (goal p99 ≤ 100 ms), and the federation's share of it (export written
 *     in the export store → visible in every peer);
 *  3. controller and federation RSS per cluster (/proc) with an empty and a full mesh, and
 *     the federation's memory per imported service (RSS and V8 heap delta ÷ imports;
 *     goal ≤ 2 kB);
 *  4. etcd database size and watchers of every main etcd and export store;
 *  5. at the largest size: discovery snapshot size and push time to simulated nodes
 *     after one endpoint change (bench/discovery-nodes.ts).
 *
 * Writes bench/results/scale-<time>.json and prints markdown tables.
 * Options (env): BENCH_STEPS (2,5,10), BENCH_SERVICES (1000), BENCH_ENDPOINTS (10),
 * BENCH_RATE (100 updates/s), BENCH_SECONDS (20), BENCH_NODES (100), BENCH_ROUNDS (5).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EtcdKeys, createRootLogger, setRootLogger, type FederationConfig } from '../mesh/index.js';
import { startDiscoveryNodes } from './discovery-nodes.js';
import { NAMESPACE, endpointEntry, serviceName, writeCatalog, type CatalogShape } from '../testkit/bulk-catalog.js';
import { TRUST_DOMAIN, prepareBundles, startScaleMesh, type ScaleCluster, type ScaleMesh, type Teardown } from './scale-mesh.js';
import { etcdFigures, memoryAfterGc, residentBytes, type EtcdFigures } from './scale-probes.js';
import { ServiceWatch, type ServicePut } from './scale-watch.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

function positiveInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  const value = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer (got "${raw}")`);
  return value;
}
const steps = (process.env.BENCH_STEPS ?? '2,5,10').split(',').map((s) => Number(s.trim()));
if (steps.some((n) => !Number.isInteger(n) || n < 2)) throw new Error(`BENCH_STEPS must list cluster counts of at least 2, e.g. 2,5,10 (got "${process.env.BENCH_STEPS}")`);
const services = positiveInteger('BENCH_SERVICES', 1000);
const endpointsPerService = positiveInteger('BENCH_ENDPOINTS', 10);
const rate = positiveInteger('BENCH_RATE', 100);
const seconds = positiveInteger('BENCH_SECONDS', 20);
const nodeCount = positiveInteger('BENCH_NODES', 100);
const rounds = positiveInteger('BENCH_ROUNDS', 5);
const settings: FederationConfig = { heartbeatIntervalMs: 2000, staleAfterMs: 15_000, expireAfterMs: 300_000, initialSyncTimeoutMs: 60_000 };
const GOALS = { convergenceMs: 30_000, p99Ms: 100, bytesPerImport: 2048 };
const CONVERGENCE_TIMEOUT_MS = 300_000;

setRootLogger(createRootLogger({ level: process.env.CAUSEWAY_LOG_LEVEL ?? 'warn' }));

const teardown: Teardown = [];
let tearingDown: Promise<void> | undefined;
function runTeardown(): Promise<void> {
  tearingDown ??= (async () => {
    for (const step of teardown.splice(0).reverse()) await Promise.resolve().then(step).catch((error: unknown) => console.error('teardown:', (error as Error).message));
  })();
  return tearingDown;
}
process.on('unhandledRejection', (error) => {
  console.error('bench failed:', error);
  void runTeardown().then(() => process.exit(1));
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    console.error(`\n${signal}: tearing down`);
    void runTeardown().then(() => process.exit(130));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const loadavg = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}
const mean = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
const shapeOf = (c: ScaleCluster): CatalogShape => ({ cluster: c.name, region: c.region, trustDomain: TRUST_DOMAIN, services, endpointsPerService });

interface Memory {
  controllerRss: number;
  /** As it runs, garbage included. */
  federationRss: number;
  /** After a full garbage collection: what it retains. */
  federationRssAfterGc: number;
  federationHeapAfterGc: number;
}

async function memoryOf(c: ScaleCluster): Promise<Memory> {
  const federationRss = residentBytes(c.federation.pid());
  const afterGc = await memoryAfterGc(c.federation.pid(), c.federation.inspectorPort).catch((error: unknown) => {
    process.stderr.write(`  ${c.name}: no figures after a full GC: ${(error as Error).message}\n`);
    return { rssBytes: NaN, heapUsedBytes: NaN };
  });
  return { controllerRss: residentBytes(c.controller.pid()), federationRss, federationRssAfterGc: afterGc.rssBytes, federationHeapAfterGc: afterGc.heapUsedBytes };
}

/** Per cluster: the bench's watch on its imports (and counts of what it holds) and on its export store's exports. */
class MeshWatch {
  readonly #imports: ServiceWatch[] = [];
  readonly #exports: ServiceWatch[] = [];
  /** cluster → `<peer>/<service>` imported. */
  readonly held = new Map<string, Set<string>>();
  /** cluster → services its controller wrote into its export store. */
  readonly exported = new Map<string, Set<string>>();
  onImport: (cluster: string, put: ServicePut) => void = () => undefined;
  onExport: (put: ServicePut) => void = () => undefined;

  async start(mesh: ScaleMesh): Promise<void> {
    for (const c of mesh.clusters) {
      const held = new Set<string>();
      this.held.set(c.name, held);
      this.#imports.push(
        new ServiceWatch(c.store, EtcdKeys.importsPrefix, undefined, (put) => {
          held.add(`${put.from}/${put.service}`);
          this.onImport(c.name, put);
        }),
      );
      const exported = new Set<string>();
      this.exported.set(c.name, exported);
      this.#exports.push(
        new ServiceWatch(c.exportStore.root, EtcdKeys.exportsPrefix, c.name, (put) => {
          exported.add(put.service);
          this.onExport(put);
        }),
      );
    }
    await Promise.all([...this.#imports, ...this.#exports].map((w) => w.start()));
  }

  set parseValues(on: boolean) {
    for (const w of [...this.#imports, ...this.#exports]) w.parseValues = on;
  }

  close(): void {
    for (const w of [...this.#imports, ...this.#exports]) w.close();
  }
}

/**
 * From the first catalog write until every cluster imports every peer's services, with
 * the stages on the way: catalogs written (the bench), every export store full (the
 * controllers), every cluster's imports full (the federations).
 */
async function convergence(mesh: ScaleMesh, watch: MeshWatch): Promise<{ ms: number; catalogWriteMs: number; exportsPublishedMs: number; converged: boolean; imports: number }> {
  const expected = (mesh.clusters.length - 1) * services;
  const t0 = performance.now();
  let exportsPublishedMs = NaN;
  const exportsDone = () => [...watch.exported.values()].every((exported) => exported.size >= services);
  const importsDone = () => [...watch.held.values()].every((held) => held.size >= expected);
  const exportsWatch = setInterval(() => {
    if (!exportsDone()) return;
    exportsPublishedMs = performance.now() - t0;
    clearInterval(exportsWatch);
  }, 20);
  let catalogWriteMs: number;
  try {
    await Promise.all(mesh.clusters.map(async (c) => writeCatalog(c.store, shapeOf(c), await c.store.grantLease(3600))));
    catalogWriteMs = performance.now() - t0;
    const deadline = Date.now() + CONVERGENCE_TIMEOUT_MS;
    while (!importsDone() && Date.now() < deadline) await sleep(20);
  } finally {
    clearInterval(exportsWatch);
  }
  const imports = Math.min(...[...watch.held.values()].map((h) => h.size));
  return { ms: performance.now() - t0, catalogWriteMs, exportsPublishedMs, converged: importsDone(), imports };
}

interface Latency {
  updates: number;
  missing: number;
  endToEnd: { p50: number; p99: number; max: number };
  federationHop: { p50: number; p99: number; max: number };
}

/**
 * Endpoint health flips at `rate`/s, round-robin over the clusters, each on a service of
 * its own: endpoint k of a service goes unhealthy at its k-th flip, so the healthy total a
 * peer's import shows (≤ the expected one) proves the flip arrived, also when two coalesce.
 */
async function latencyAtRate(mesh: ScaleMesh, watch: MeshWatch): Promise<Latency> {
  const n = mesh.clusters.length;
  const total = rate * seconds;
  if (Math.ceil(total / (n * services)) > endpointsPerService) throw new Error(`BENCH_RATE × BENCH_SECONDS flips more endpoints than ${n} clusters × ${services} services × ${endpointsPerService} have`);
  interface Pending {
    readonly expected: number;
    readonly startedAt: number;
    exportedAt: number | undefined;
    readonly seenBy: Set<string>;
  }
  const pending = new Map<string, Pending[]>();
  const endToEnd: number[] = [];
  const hop: number[] = [];
  watch.onExport = (put) => {
    for (const p of pending.get(`${put.from}/${put.service}`) ?? []) if (put.healthy! <= p.expected) p.exportedAt ??= performance.now();
  };
  watch.onImport = (cluster, put) => {
    const key = `${put.from}/${put.service}`;
    const list = pending.get(key);
    if (!list) return;
    const now = performance.now();
    for (const p of [...list]) {
      if (put.healthy! > p.expected) continue;
      p.seenBy.add(cluster);
      if (p.seenBy.size < n - 1) continue;
      endToEnd.push(now - p.startedAt);
      if (p.exportedAt !== undefined) hop.push(now - p.exportedAt);
      list.splice(list.indexOf(p), 1);
      if (list.length === 0) pending.delete(key);
    }
  };
  watch.parseValues = true;
  const leases = await Promise.all(mesh.clusters.map((c) => c.store.grantLease(3600)));
  const flips = new Map<string, number>();
  const puts: Promise<void>[] = [];
  let failedPuts: string | undefined;
  const t0 = performance.now();
  for (let u = 0; u < total; u++) {
    const wait = t0 + (u * 1000) / rate - performance.now();
    if (wait > 0) await sleep(wait);
    const ci = u % n;
    const c = mesh.clusters[ci]!;
    const s = Math.floor(u / n) % services;
    const key = `${c.name}/${serviceName(s)}`;
    const k = flips.get(key) ?? 0;
    flips.set(key, k + 1);
    const list = pending.get(key) ?? [];
    pending.set(key, list);
    list.push({ expected: endpointsPerService - k - 1, startedAt: performance.now(), exportedAt: undefined, seenBy: new Set() });
    const entry = endpointEntry(shapeOf(c), s, k, 'unhealthy');
    // Caught at once: a put that fails (etcd gone at Ctrl-C) must not end the process before the teardown.
    puts.push(c.store.put(entry.key, entry.value, { lease: leases[ci]! }).catch((error: unknown) => void (failedPuts = `${(error as Error).message}`)));
  }
  await Promise.all(puts);
  if (failedPuts) console.error(`${n} clusters: some endpoint updates failed, last: ${failedPuts}`);
  const deadline = Date.now() + 15_000;
  while (pending.size > 0 && Date.now() < deadline) await sleep(20);
  watch.parseValues = false;
  const missing = [...pending.values()].reduce((sum, list) => sum + list.length, 0);
  if (missing > 0) console.error(`${n} clusters: ${missing} of ${total} updates not visible in every peer within 15 s`);
  const figures = (values: number[]) => {
    const sorted = values.sort((a, b) => a - b);
    return { p50: round1(quantile(sorted, 0.5)), p99: round1(quantile(sorted, 0.99)), max: round1(sorted.at(-1) ?? NaN) };
  };
  return { updates: endToEnd.length, missing, endToEnd: figures(endToEnd), federationHop: figures(hop) };
}

interface Discovery {
  nodes: number;
  snapshotJsonBytes: number;
  snapshotWireBytes: number;
  connectMs: number;
  pushAllAcksMs: { p50: number; max: number; rounds: number };
}

/** `nodeCount` discovery streams on the first cluster's controller; `rounds` endpoint changes, each timed until every node acked it. */
async function discoveryPush(mesh: ScaleMesh): Promise<Discovery> {
  const c = mesh.clusters[0]!;
  const node = await mesh.pki.workload(c.name, 'bench/node');
  const connectStarted = Date.now();
  const nodes = startDiscoveryNodes({ address: `127.0.0.1:${c.controllerGrpcPort}`, nodes: nodeCount, trustDomain: TRUST_DOMAIN, cluster: c.name, region: c.region, key: node.privateKeyPem, certChain: node.certChainPem, trustBundle: node.trustBundlePem });
  teardown.push(() => nodes.close());
  try {
    const ready = await nodes.next(300_000);
    if (ready.type !== 'ready') throw new Error('discovery nodes sent an ack before all were connected');
    const connectMs = Date.now() - connectStarted;
    const lease = await c.store.grantLease(3600);
    const times: number[] = [];
    let sizes = { snapshotJsonBytes: ready.jsonBytes, snapshotWireBytes: ready.wireBytes };
    for (let r = 0; r < rounds; r++) {
      // Round 2k takes the last endpoint of the last service out, 2k+1 puts it back.
      const entry = endpointEntry(shapeOf(c), services - 1, endpointsPerService - 1, r % 2 === 0 ? 'unhealthy' : 'healthy');
      const t0 = Date.now();
      await c.store.put(entry.key, entry.value, { lease });
      const message = await nodes.next(60_000);
      if (message.type !== 'acked') throw new Error('unexpected message from the discovery nodes');
      times.push(Math.max(...message.ackTimes) - t0);
      sizes = { snapshotJsonBytes: message.jsonBytes, snapshotWireBytes: message.wireBytes };
      await sleep(200);
    }
    times.sort((a, b) => a - b);
    return { nodes: nodeCount, ...sizes, connectMs, pushAllAcksMs: { p50: quantile(times, 0.5), max: times.at(-1)!, rounds } };
  } finally {
    nodes.close();
  }
}

const round1 = (x: number) => Math.round(x * 10) / 10;
const kB = (bytes: number) => round1(bytes / 1024);
const MB = (bytes: number) => round1(bytes / 1024 / 1024);

interface ClusterFigures {
  cluster: string;
  empty: Memory;
  full: Memory;
  etcd: EtcdFigures;
  exportStore: EtcdFigures;
}

async function runStep(n: number) {
  const stepTeardown = teardown.length;
  const startedAt = performance.now();
  try {
    process.stderr.write(`— ${n} clusters: starting ${2 * n} etcds and ${2 * n} processes…\n`);
    const mesh = await startScaleMesh(n, settings, teardown);
    const setupMs = performance.now() - startedAt;
    const watch = new MeshWatch();
    teardown.push(() => watch.close());
    await watch.start(mesh);
    await sleep(2000); // let start-up allocations settle before the empty-mesh figures
    const empty = await Promise.all(mesh.clusters.map(memoryOf));

    process.stderr.write(`  ready after ${Math.round(setupMs)} ms; writing ${n} × ${services} services × ${endpointsPerService} endpoints…\n`);
    const converged = await convergence(mesh, watch);
    process.stderr.write(`  converged: ${converged.converged} in ${Math.round(converged.ms)} ms; timing ${rate} updates/s for ${seconds} s…\n`);
    await sleep(3000);
    const full = await Promise.all(mesh.clusters.map(memoryOf));
    const latency = await latencyAtRate(mesh, watch);
    const etcd = await Promise.all(mesh.clusters.map((c) => etcdFigures(c.etcd.clientUrl)));
    const exportStores = await Promise.all(mesh.clusters.map((c) => etcdFigures(c.exportStore.etcd.clientUrl, c.exportStore.config.tls)));
    const perCluster: ClusterFigures[] = mesh.clusters.map((c, i) => ({ cluster: c.name, empty: empty[i]!, full: full[i]!, etcd: etcd[i]!, exportStore: exportStores[i]! }));
    const importsPerCluster = (n - 1) * services;
    const perImport = (pick: (m: Memory) => number) => mean(perCluster.map((c) => (pick(c.full) - pick(c.empty)) / importsPerCluster));
    const discovery = n === Math.max(...steps) ? (process.stderr.write(`  ${nodeCount} discovery nodes on ${mesh.clusters[0]!.name}…\n`), await discoveryPush(mesh)) : undefined;
    return {
      clusters: n,
      links: n * (n - 1),
      setupMs: Math.round(setupMs),
      convergence: { ms: Math.round(converged.ms), catalogWriteMs: Math.round(converged.catalogWriteMs), exportsPublishedMs: Math.round(converged.exportsPublishedMs), converged: converged.converged, importsPerCluster: converged.imports },
      latency,
      memory: {
        federationRssBytesPerImport: Math.round(perImport((m) => m.federationRss)),
        federationRssAfterGcBytesPerImport: Math.round(perImport((m) => m.federationRssAfterGc)),
        federationHeapAfterGcBytesPerImport: Math.round(perImport((m) => m.federationHeapAfterGc)),
        meanControllerRssFull: Math.round(mean(perCluster.map((c) => c.full.controllerRss))),
        meanFederationRssEmpty: Math.round(mean(perCluster.map((c) => c.empty.federationRss))),
        meanFederationRssFull: Math.round(mean(perCluster.map((c) => c.full.federationRss))),
      },
      // The bench holds one watch on every main etcd (imports) and export store (exports): not counted.
      watchers: { perEtcd: mean(etcd.map((e) => e.watchers)) - 1, perExportStore: mean(exportStores.map((e) => e.watchers)) - 1 },
      perCluster,
      discovery,
    };
  } finally {
    process.stderr.write(`  tearing down ${n} clusters…\n`);
    for (const step of teardown.splice(stepTeardown).reverse()) await Promise.resolve().then(step).catch((error: unknown) => console.error('teardown:', (error as Error).message));
  }
}

type Step = Awaited<ReturnType<typeof runStep>>;

function report(results: Step[], load: { atStart: string; atEnd: string }) {
  const last = results.at(-1)!;
  const met = (ok: boolean) => (ok ? 'met' : '**not met**');
  const goals = {
    convergence: { goal: `≤ ${GOALS.convergenceMs / 1000} s`, value: last.convergence.ms, met: last.convergence.converged && last.convergence.ms <= GOALS.convergenceMs },
    p99: { goal: `p99 ≤ ${GOALS.p99Ms} ms`, value: last.latency.endToEnd.p99, met: last.latency.missing === 0 && last.latency.endToEnd.p99 <= GOALS.p99Ms },
    p99FederationHop: { goal: `p99 ≤ ${GOALS.p99Ms} ms`, value: last.latency.federationHop.p99, met: last.latency.missing === 0 && last.latency.federationHop.p99 <= GOALS.p99Ms },
    memoryPerImport: { goal: `≤ ${GOALS.bytesPerImport} B`, value: last.memory.federationRssBytesPerImport, met: last.memory.federationRssBytesPerImport <= GOALS.bytesPerImport },
    retainedHeapPerImport: { goal: `≤ ${GOALS.bytesPerImport} B`, value: last.memory.federationHeapAfterGcBytesPerImport, met: last.memory.federationHeapAfterGcBytesPerImport <= GOALS.bytesPerImport },
  };
  const lines = [
    `# Federation scale, ${last.clusters} clusters (full mesh, ${last.links} links), ${services} services × ${endpointsPerService} endpoints each`,
    '',
    '| figure | value | goal |',
    '|---|---:|---|',
    `| convergence from an empty mesh (first catalog write → every cluster imports every peer's ${services} services) | ${(last.convergence.ms / 1000).toFixed(1)} s${last.convergence.converged ? '' : ' (did not converge)'} (catalog writes done at ${(last.convergence.catalogWriteMs / 1000).toFixed(1)} s, every export store full at ${(last.convergence.exportsPublishedMs / 1000).toFixed(1)} s) | ${goals.convergence.goal}: ${met(goals.convergence.met)} |`,
    `| endpoint put → import visible in every peer, ${rate}/s for ${seconds} s | p50 ${last.latency.endToEnd.p50} ms, p99 ${last.latency.endToEnd.p99} ms, max ${last.latency.endToEnd.max} ms (${last.latency.updates} updates${last.latency.missing ? `, ${last.latency.missing} missing` : ''}) | ${goals.p99.goal}: ${met(goals.p99.met)} |`,
    `| of which export written → visible in every peer (federation hop) | p50 ${last.latency.federationHop.p50} ms, p99 ${last.latency.federationHop.p99} ms, max ${last.latency.federationHop.max} ms | ${goals.p99FederationHop.goal}: ${met(goals.p99FederationHop.met)} |`,
    `| federation memory per imported service: RSS delta empty → full ÷ ${last.convergence.importsPerCluster} imports, as it runs | ${last.memory.federationRssBytesPerImport} B | ${goals.memoryPerImport.goal}: ${met(goals.memoryPerImport.met)} |`,
    `| the same after a full GC: V8 heap retained (RSS) | ${last.memory.federationHeapAfterGcBytesPerImport} B (${last.memory.federationRssAfterGcBytesPerImport} B) | ${goals.retainedHeapPerImport.goal}: ${met(goals.retainedHeapPerImport.met)} |`,
    ...(last.discovery
      ? [
          `| discovery snapshot (${last.discovery.nodes} nodes on ${last.perCluster[0]!.cluster}) | ${kB(last.discovery.snapshotJsonBytes)} kB JSON, ${kB(last.discovery.snapshotWireBytes)} kB on the wire | |`,
          `| one endpoint change → all ${last.discovery.nodes} nodes acked | p50 ${last.discovery.pushAllAcksMs.p50} ms, max ${last.discovery.pushAllAcksMs.max} ms (${last.discovery.pushAllAcksMs.rounds} rounds; nodes connected in ${(last.discovery.connectMs / 1000).toFixed(1)} s) | |`,
        ]
      : []),
    '',
    '| cluster | controller RSS MB | federation RSS MB (empty → full) | after a full GC: federation heap MB (empty → full) | etcd db MB | export store db MB | etcd watchers | export store watchers |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...last.perCluster.map((c) => `| ${c.cluster} | ${MB(c.full.controllerRss)} | ${MB(c.empty.federationRss)} → ${MB(c.full.federationRss)} | ${MB(c.empty.federationHeapAfterGc)} → ${MB(c.full.federationHeapAfterGc)} | ${MB(c.etcd.dbBytes)} | ${MB(c.exportStore.dbBytes)} | ${c.etcd.watchers - 1} | ${c.exportStore.watchers - 1} |`),
    '',
    '## Growth',
    '',
    '| clusters | links | convergence s | put → visible p99 ms (federation hop) | federation RSS MB per cluster | federation B per import: RSS (heap after GC) | controller RSS MB | etcd db MB | export store db MB | watchers per export store | start-up s |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...results.map(
      (r) =>
        `| ${r.clusters} | ${r.links} | ${(r.convergence.ms / 1000).toFixed(1)}${r.convergence.converged ? '' : ' (not converged)'} | ${r.latency.endToEnd.p99} (${r.latency.federationHop.p99}) | ${MB(r.memory.meanFederationRssFull)} | ${r.memory.federationRssBytesPerImport} (${r.memory.federationHeapAfterGcBytesPerImport}) | ${MB(r.memory.meanControllerRssFull)} | ${MB(mean(r.perCluster.map((c) => c.etcd.dbBytes)))} | ${MB(mean(r.perCluster.map((c) => c.exportStore.dbBytes)))} | ${r.watchers.perExportStore} | ${(r.setupMs / 1000).toFixed(1)} |`,
    ),
    '',
    `Machine: ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GB, shared; load average at the start ${load.atStart}, at the end ${load.atEnd}. Watchers exclude the bench's own.`,
  ];
  return { markdown: `${lines.join('\n')}\n`, goals };
}

async function main(): Promise<void> {
  const loadAtStart = loadavg();
  await prepareBundles();
  const results: Step[] = [];
  let failed: { clusters: number; error: string } | undefined;
  for (const n of steps) {
    try {
      results.push(await runStep(n));
    } catch (error) {
      // What the smaller meshes measured is still worth writing down, with why the next one stopped.
      failed = { clusters: n, error: (error as Error).message };
      process.stderr.write(`${n} clusters failed: ${(error as Error).stack ?? String(error)}\n`);
      break;
    }
  }
  if (results.length === 0) throw new Error(`the first mesh (${steps[0]} clusters) failed: ${failed?.error}`);
  const load = { atStart: loadAtStart, atEnd: loadavg() };
  const reported = report(results, load);
  const markdown = failed ? `${reported.markdown}\n**The ${failed.clusters}-cluster mesh failed**: ${failed.error}\n` : reported.markdown;
  const goals = reported.goals;
  const when = new Date().toISOString();
  const dir = join(ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `scale-${when.replace(/[:.]/g, '-')}.json`);
  const options = { steps, services, endpointsPerService, rate, seconds, nodes: nodeCount, rounds, settings, namespace: NAMESPACE };
  writeFileSync(file, `${JSON.stringify({ when, options, load, machine: { cores: cpus().length, memoryBytes: totalmem() }, goals, results, failed }, null, 2)}\n`);
  process.stdout.write(`${markdown}\nwritten: ${file}\n`);
  if (failed) process.exitCode = 1;
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  async (error: unknown) => {
    process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
    await runTeardown();
    process.exit(1);
  },
);
