/**
 * Controller snapshot-push benchmark (`npm run bench:controller`), on a real etcd and real
 * gRPC over mTLS on loopback: 10,000 endpoints (100 services × 100), 100 subscribed
 * nodes, each with its own TLS connection, in a child process (so the controller keeps
 * its own core). Each round changes one endpoint in etcd and measures the time from that
 * etcd write to every node's ack of the snapshot carrying it: p50/p99 over the rounds,
 * plus per-node ack latency. The nodes ack on receipt (they model the transport and the
 * controller, not a sidecar's parsing); the cost of decoding and validating one
 * snapshot with the DiscoveryClient's schema is reported separately.
 *
 * Options (env): BENCH_ENDPOINTS (10000), BENCH_NODES (100), BENCH_ROUNDS (40),
 * BENCH_DEBOUNCE_MS (the controller's pushDebounceMs; default 100, the config default).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { SnapshotDecoder } from '../api-client/index.js';
import { CatalogAdmin, Controller } from '../controller/index.js';
import { Etcd3Store } from '../store/index.js';
import type { SnapshotBuilder } from '../controller/snapshot-builder.js';
import { CATALOG_SCHEMA_VERSION, EtcdKeys, createRootLogger, parseConfig, setRootLogger } from '../mesh/index.js';
import { startDiscoveryNodes } from './discovery-nodes.js';
import { startEtcd } from '../testkit/etcd.js';
import { createMeshPki } from '../testkit/mesh-pki.js';

const TD = 'causeway.internal';
setRootLogger(createRootLogger({ level: process.env.CAUSEWAY_LOG_LEVEL ?? 'warn' }));

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
}

async function main(): Promise<void> {
  const endpointCount = Number(process.env.BENCH_ENDPOINTS ?? 10_000);
  const nodeCount = Number(process.env.BENCH_NODES ?? 100);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 40);
  const debounceMs = Number(process.env.BENCH_DEBOUNCE_MS ?? 100);
  const services = Math.max(1, Math.round(endpointCount / 100));
  const perService = Math.ceil(endpointCount / services);

  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-ctrl-'));
  const etcd = await startEtcd({ name: 'bench-east' });
  const cleanups: Array<() => unknown> = [() => etcd.destroy(), () => rmSync(dir, { recursive: true, force: true })];
  try {
    const pki = await createMeshPki(join(dir, 'pki'), { trustDomain: TD });
    const east = await pki.cluster('east');
    const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
    cleanups.unshift(() => store.close());
    const admin = new CatalogAdmin(store);

    const started = Date.now();
    const lease = await store.grantLease(3600);
    const endpointValue = (svc: number, i: number, health: string) =>
      JSON.stringify({
        schema: CATALOG_SCHEMA_VERSION,
        id: `ep-${i}`,
        service: `svc-${svc}`,
        namespace: 'bench',
        cluster: 'east',
        address: `10.${svc % 250}.${Math.floor(i / 250)}.${i % 250}`,
        inboundPort: 15006,
        labels: { version: i % 2 ? 'v1' : 'v2' },
        locality: { region: 'eu', zone: `eu-${i % 3}` },
        identity: `spiffe://${TD}/ns/bench/sa/svc-${svc}`,
        health,
      });
    for (let s = 0; s < services; s++) {
      await admin.applyService({ name: `svc-${s}`, namespace: 'bench', ports: [{ name: 'http', port: 8080 }], serviceAccounts: [`spiffe://${TD}/ns/bench/sa/svc-${s}`] });
      const entries = Array.from({ length: perService }, (_, i) => ({ key: EtcdKeys.endpoint('bench', `svc-${s}`, `ep-${i}`), value: endpointValue(s, i, 'healthy') }));
      await store.putMany(entries, { lease });
    }
    process.stdout.write(`catalog: ${services} services × ${perService} endpoints written in ${Date.now() - started} ms\n`);

    const config = parseConfig('cluster', {
      cluster: { name: 'east', locality: { region: 'eu', zone: 'eu-1' } },
      trustDomain: TD,
      etcd: { endpoints: etcd.endpoints },
      controller: { host: '127.0.0.1', grpcPort: 0, pushDebounceMs: debounceMs },
    });
    const controller = new Controller({ config, intermediate: east.ca, observability: false });
    const loadStarted = Date.now();
    await controller.start();
    cleanups.unshift(() => controller.stop());
    process.stdout.write(`controller: catalog of ${controller.catalogView!.endpointCount()} endpoints loaded and serving in ${Date.now() - loadStarted} ms\n`);

    const node = await pki.workload('east', 'bench/node');
    const nodes = startDiscoveryNodes({
      address: `127.0.0.1:${controller.grpcPort}`,
      nodes: nodeCount,
      trustDomain: TD,
      cluster: 'east',
      region: 'eu',
      key: node.privateKeyPem,
      certChain: node.certChainPem,
      trustBundle: node.trustBundlePem,
    });
    cleanups.unshift(() => nodes.close());
    const nextMessage = (timeoutMs: number) => nodes.next(timeoutMs);
    const connectStarted = Date.now();
    if ((await nextMessage(120_000)).type !== 'ready') throw new Error('nodes not ready');
    process.stdout.write(`nodes: ${nodeCount} connected and holding the first snapshot ${Date.now() - connectStarted} ms after start\n`);

    const allAcks: number[] = [];
    const watchLag: number[] = [];
    let changeSeenAt = 0;
    controller.catalogView!.on('change', () => {
      if (changeSeenAt === 0) changeSeenAt = Date.now();
    });
    const perNode: number[] = [];
    let wire = 0;
    const cpuBefore = process.cpuUsage();
    for (let r = 0; r < rounds; r++) {
      // Round 2k takes an endpoint out, round 2k+1 puts it back: every round changes the snapshot.
      const s = Math.floor(r / 2) % services;
      const i = Math.floor(r / 2) % perService;
      const t0 = Date.now();
      changeSeenAt = 0;
      await store.put(EtcdKeys.endpoint('bench', `svc-${s}`, `ep-${i}`), endpointValue(s, i, r % 2 === 0 ? 'unhealthy' : 'healthy'), { lease });
      const message = await nextMessage(30_000);
      if (message.type !== 'acked') throw new Error('unexpected message');
      wire = message.wireBytes;
      allAcks.push(Math.max(...message.ackTimes) - t0);
      watchLag.push(changeSeenAt - t0);
      for (const at of message.ackTimes) perNode.push(at - t0);
      await new Promise((res) => setTimeout(res, 50));
    }
    const cpu = process.cpuUsage(cpuBefore);
    const cpuPerChangeMs = (cpu.user + cpu.system) / 1000 / rounds;
    allAcks.sort((a, b) => a - b);
    watchLag.sort((a, b) => a - b);
    perNode.sort((a, b) => a - b);

    // What a sidecar pays per push: gunzip + JSON.parse + schema validation (DiscoveryClient's
    // SnapshotDecoder re-validates only the services that changed since its last snapshot).
    const builder = (controller as unknown as { builder: SnapshotBuilder }).builder;
    const built = builder.snapshot('eu');
    const gz = await built.gzip();
    const decoder = new SnapshotDecoder();
    let decodeStarted = performance.now();
    if (!decoder.decode(gunzipSync(gz).toString('utf8')).ok) throw new Error('snapshot did not decode');
    const coldDecodeMs = performance.now() - decodeStarted;
    await store.put(EtcdKeys.endpoint('bench', 'svc-0', 'ep-0'), endpointValue(0, 0, 'unhealthy'), { lease });
    await nextMessage(30_000);
    const nextGz = await builder.snapshot('eu').gzip();
    decodeStarted = performance.now();
    if (!decoder.decode(gunzipSync(nextGz).toString('utf8')).ok) throw new Error('snapshot did not decode');
    const warmDecodeMs = performance.now() - decodeStarted;
    const buildHistogram = await controller.metrics.snapshotBuildSeconds.get();
    const builds = buildHistogram.values.find((v) => v.metricName?.endsWith('_count'))?.value ?? 0;
    const buildSum = buildHistogram.values.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0;

    process.stdout.write(
      [
        '',
        `snapshot push, ${controller.catalogView!.endpointCount()} endpoints, ${nodeCount} nodes, debounce ${debounceMs} ms, ${rounds} rounds:`,
        `  etcd change → all ${nodeCount} acks:  p50 ${quantile(allAcks, 0.5)} ms   p99 ${quantile(allAcks, 0.99)} ms   max ${allAcks[allAcks.length - 1]} ms`,
        `  of which etcd write + watch delivery to the controller: p50 ${quantile(watchLag, 0.5)} ms   p99 ${quantile(watchLag, 0.99)} ms`,
        `  etcd change → one node's ack:   p50 ${quantile(perNode, 0.5)} ms   p99 ${quantile(perNode, 0.99)} ms`,
        `  controller process CPU per change (watch, build, gzip, 100 TLS pushes, acks): ${cpuPerChangeMs.toFixed(0)} ms (load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores)`,
        `  snapshot: ${(built.json.length / 1e6).toFixed(2)} MB JSON, ${(wire / 1e3).toFixed(0)} kB gzipped on the wire (built once per version, shared by all nodes)`,
        `  snapshot build: mean ${((buildSum / Math.max(1, builds)) * 1000).toFixed(1)} ms over ${builds} builds (one service re-serialised per change)`,
        `  node side, gunzip + JSON.parse + validate: first snapshot ${coldDecodeMs.toFixed(0)} ms, next (one service changed) ${warmDecodeMs.toFixed(0)} ms`,
        '',
      ].join('\n'),
    );
  } finally {
    for (const c of cleanups) await c();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
