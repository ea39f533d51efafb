import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { splitCertificates } from '../../../ca/index.js';
import { CatalogAdmin, Controller } from '../../../controller/index.js';
import { Federation } from '../../../federation/index.js';
import { Etcd3Store } from '../../../store/index.js';
import { runGateway, type RunningGateway } from '../../../gateway/index.js';
import { logger, parseConfig, type ClusterConfig, type Logger } from '../../../mesh/index.js';
import { DiscoverySnapshotSource, parseSidecarConfig, registrationPart, Sidecar, WorkloadIdentity, type SidecarConfigInput } from '../../../proxy/index.js';
import type { SnapshotTarget } from '../../../mesh/index.js';
import { startEtcd, type EtcdServer } from '../../../testkit/etcd.js';
import { createMeshPki, type MeshPki } from '../../../testkit/mesh-pki.js';
import type { ExecutionContext } from 'ava';
import { waitFor } from '../../../testkit/ports.js';
import { spiffe, startEchoApp } from './mesh.js';

export const TD = 'causeway.internal';

/** One cluster of a loopback mesh: real etcd, controller (with CA and federation links), gateway. */
export interface MeshCluster {
  readonly name: string;
  readonly region: string;
  readonly etcd: EtcdServer;
  readonly admin: CatalogAdmin;
  config: ClusterConfig;
  controller: Controller;
  gateway: RunningGateway | undefined;
  startController(): Promise<void>;
  stopController(): Promise<void>;
  startGateway(): Promise<void>;
  stopGateway(): Promise<void>;
}

export interface MeshWorld {
  readonly pki: MeshPki;
  readonly dir: string;
  readonly clusters: Map<string, MeshCluster>;
  cluster(name: string): MeshCluster;
  close(): Promise<void>;
}

const federationTimings = { heartbeatIntervalMs: 250, staleAfterMs: 2000, expireAfterMs: 20_000, initialSyncTimeoutMs: 3000 };

/** Starts etcds first (links need every peer's endpoint), then controllers, federation and gateways. */
export async function startMesh(specs: { name: string; region: string; zone: string }[]): Promise<MeshWorld> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-proxy-mesh-'));
  const pki = await createMeshPki(join(dir, 'pki'), { trustDomain: TD });
  const etcds = new Map<string, EtcdServer>();
  try {
    for (const s of specs) etcds.set(s.name, await startEtcd({ name: s.name }));
  } catch (error) {
    // A live etcd left behind keeps the test worker from exiting.
    await Promise.all([...etcds.values()].map((e) => e.destroy()));
    throw error;
  }
  const closers: (() => Promise<void>)[] = [];
  const clusters = new Map<string, MeshCluster>();
  for (const s of specs) {
    const etcd = etcds.get(s.name)!;
    const intermediate = await pki.cluster(s.name);
    let grpcPort = 0;
    let gatewayPort = 0;
    const makeConfig = () =>
      parseConfig('cluster', {
        cluster: { name: s.name, locality: { region: s.region, zone: s.zone } },
        trustDomain: TD,
        etcd: { endpoints: etcd.endpoints },
        links: specs.filter((p) => p.name !== s.name).map((p) => ({ peer: p.name, etcd: { endpoints: etcds.get(p.name)!.endpoints } })),
        federation: federationTimings,
        controller: { host: '127.0.0.1', grpcPort, endpointLeaseTtlSeconds: 3, pushDebounceMs: 20 },
        gateway: { host: '127.0.0.1', port: gatewayPort, advertiseAddress: '127.0.0.1', connectTimeoutMs: 500, drainTimeoutMs: 200 },
        observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
      });
    const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
    closers.push(async () => store.close());
    const cluster: MeshCluster = {
      name: s.name,
      region: s.region,
      etcd,
      admin: new CatalogAdmin(store),
      config: makeConfig(),
      controller: undefined as unknown as Controller,
      gateway: undefined,
      async startController() {
        cluster.config = makeConfig();
        const federation = new Federation(Federation.optionsFrom(cluster.config));
        cluster.controller = new Controller({
          config: cluster.config,
          intermediate: intermediate.ca,
          observability: false,
          healthChecks: { intervalMs: 200, timeoutMs: 300 },
          components: [{ name: 'federation', start: () => federation.start(), stop: () => federation.stop(), readiness: () => federation.readiness() }],
        });
        await cluster.controller.start();
        grpcPort = cluster.controller.grpcPort;
        cluster.config = makeConfig();
      },
      async stopController() {
        await cluster.controller.stop();
      },
      async startGateway() {
        cluster.gateway = await runGateway({ cluster: makeConfig(), id: `gw-${s.name}`, observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 } });
        gatewayPort = cluster.gateway.port;
      },
      async stopGateway() {
        await cluster.gateway?.stop();
        cluster.gateway = undefined;
      },
    };
    clusters.set(s.name, cluster);
  }
  for (const c of clusters.values()) {
    await c.startController();
    await c.startGateway();
  }
  return {
    pki,
    dir,
    clusters,
    cluster: (name) => clusters.get(name)!,
    async close() {
      for (const c of clusters.values()) {
        await c.stopGateway().catch(() => undefined);
        await c.stopController().catch(() => undefined);
      }
      for (const close of closers) await close().catch(() => undefined);
      for (const e of etcds.values()) await e.destroy();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let workloadCounter = 0;

export interface MeshWorkload {
  readonly sidecar: Sidecar;
  readonly app: Awaited<ReturnType<typeof startEchoApp>> | undefined;
  readonly spiffeId: string;
  close(): Promise<void>;
  /** Like a crash: no deregistration (the lease expires), app and sidecar gone. */
  kill(): Promise<void>;
}

/**
 * A workload in `cluster`: an HTTP echo app (unless `app: false`) and its sidecar, wired
 * to the cluster's real controller (discovery stream + registration with an app probe).
 * The certificate comes from the cluster's intermediate directly; the bootstrap through
 * the CA service has its own test.
 */
export async function startWorkload(world: MeshWorld, clusterName: string, options: { service: string; sa?: string; ports?: SidecarConfigInput['ports']; app?: boolean; config?: Partial<SidecarConfigInput>; log?: Logger; serveObservability?: boolean }): Promise<MeshWorkload> {
  const cluster = world.cluster(clusterName);
  const sa = options.sa ?? options.service;
  const app = options.app === false ? undefined : await startEchoApp(`${options.service}-${clusterName}`);
  const n = ++workloadCounter;
  const stateDir = join(world.dir, 'workloads', `${clusterName}-${options.service}-${n}`);
  const config = parseSidecarConfig({
    cluster: clusterName,
    locality: cluster.config.cluster.locality,
    trustDomain: TD,
    meshDomain: TD,
    namespace: 'default',
    service: options.service,
    serviceAccount: sa,
    ports: options.ports ?? (app ? [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] : []),
    controller: { address: `127.0.0.1:${cluster.controller.grpcPort}` },
    advertiseAddress: '127.0.0.1',
    inboundPort: 0,
    dnsPort: 0,
    stateDir,
    ...(app ? { probe: { http: { port: app.port, path: '/healthz' } } } : {}),
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
    ...options.config,
    sidecar: { inboundHost: '127.0.0.1', outboundRange: 'auto', dns: { outside: 'refuse' }, probeIntervalMs: 300, ...options.config?.sidecar },
  });
  const identity = new WorkloadIdentity();
  const cert = await world.pki.workload(clusterName, `default/${sa}`);
  identity.set({ keyPem: cert.privateKeyPem, chainPem: splitCertificates(cert.certChainPem), trustBundlePem: splitCertificates(cert.trustBundlePem) });
  const log = logger('sidecar', { workload: options.service, cluster: clusterName });
  const snapshots = new DiscoverySnapshotSource(config, identity, log, `${options.service}-${n}`);
  const registration = registrationPart(config, identity, log, `${options.service}-${clusterName}-${n}`);
  const sidecar = new Sidecar({ config, identity, snapshots, parts: [registration], serveObservability: options.serveObservability ?? false, ...(options.log ? { log: options.log } : {}) });
  await sidecar.start();
  return {
    sidecar,
    app,
    spiffeId: identity.spiffeId!,
    async close() {
      await sidecar.close();
      await app?.close();
    },
    async kill() {
      registration.client()?.abandon();
      await app?.close();
      await sidecar.close();
    },
  };
}

export const reviewsSpec = { name: 'reviews', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'reviews')], exported: true };
export const productpageSpec = { ...reviewsSpec, name: 'productpage', serviceAccounts: [spiffe('default', 'productpage')], exported: false };

export function targetsOf(sidecar: Sidecar, svc: string): SnapshotTarget[] {
  return sidecar.snapshot?.services.find((s) => s.name === svc)?.targets ?? [];
}

/**
 * A `productpage` client in east and a `reviews` workload in each of `servers` (both
 * services applied in every cluster that needs them; the workloads close when the test
 * ends). Resolves once east's sidecar has a healthy target for each server cluster.
 */
export async function startReviewsCaller(t: ExecutionContext, world: MeshWorld, servers: string[]): Promise<MeshWorkload> {
  for (const name of world.clusters.keys()) await world.cluster(name).admin.applyService(productpageSpec);
  for (const name of servers) await world.cluster(name).admin.applyService(reviewsSpec);
  const workloads: MeshWorkload[] = [];
  t.teardown(async () => {
    for (const w of workloads) await w.close().catch(() => undefined);
  });
  for (const name of servers) workloads.push(await startWorkload(world, name, { service: 'reviews' }));
  const client = await startWorkload(world, 'east', { service: 'productpage', app: false });
  workloads.push(client);
  await waitFor(() => targetsOf(client.sidecar, 'reviews').filter((x) => x.healthy).length >= servers.length, { what: `reviews imported from ${servers.join(' and ')}`, timeoutMs: 20_000 });
  await client.sidecar.settled();
  return client;
}
