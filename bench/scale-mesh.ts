/**
 * A full-mesh federation of N clusters for `bench:scale`, every part real and on loopback:
 * per cluster a main etcd, an export store (TLS, client-cert auth, auth on — what
 * `federation init` and the controller set up), a `causeway controller` process and a
 * `causeway federation` process (each from its bundle, so its RSS is its own), and for
 * every ordered pair a grant (export-store user, role and client certificate, as
 * `federation grant` issues them).
 *
 * Links use the direct `etcd:` form, pointed at the peer's export store with the granted
 * certificate: the same TLS, RBAC and watch as a link through gateways, without N more
 * gateway processes, whose TLS passthrough hop `bench:federation` measures on its own and
 * which does not change the number of links or watches.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CATALOG_SCHEMA_VERSION, EtcdKeys, Gateway, encodeCatalogValue, type FederationConfig, type LinkConfig } from '../mesh/index.js';
import { connectFederationStore, ensureExportStoreAuth } from '../federation/index.js';
import type { EtcdStore } from '../store/index.js';
import { startEtcd, type EtcdServer } from '../testkit/etcd.js';
import { grantPeerLink, startExportStoreServer, type ExportStoreServer } from '../testkit/export-store.js';
import { createMeshPki, type MeshPki } from '../testkit/mesh-pki.js';
import { freePorts, waitFor } from '../testkit/ports.js';
import { descendantPids, startProcess, type ManagedProcess } from '../testkit/processes.js';
import { ensureCommandBundle } from '../scripts/bundles.mjs';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const BIN = join(ROOT, 'bin', 'causeway.js');
export const TRUST_DOMAIN = 'causeway.internal';

/**
 * Builds the controller and federation bundles when missing or stale: once, before the
 * first mesh, so that a long run does not depend on the build tools staying in place.
 */
export async function prepareBundles(): Promise<void> {
  await ensureCommandBundle('controller');
  await ensureCommandBundle('federation');
}

/** Teardown steps, run last-in first-out (also on Ctrl-C: see bench/scale.ts). */
export type Teardown = Array<() => unknown>;

/** A `causeway` process and where it serves `/healthz/ready` and `/metrics`. */
export interface ComponentProcess {
  readonly process: ManagedProcess;
  /** The process that runs the command (the launcher replaces itself; under an old Node it is its child). */
  pid(): number;
  readonly observabilityPort: number;
  /** Where its inspector opens on SIGUSR1 (`--inspect-port`), for a full GC before memory is read. */
  readonly inspectorPort: number;
}

export interface ScaleCluster {
  readonly name: string;
  readonly region: string;
  readonly etcd: EtcdServer;
  /** The bench's own client of the main etcd: writes the catalog, watches imports. */
  readonly store: EtcdStore;
  readonly exportStore: ExportStoreServer;
  readonly controller: ComponentProcess;
  readonly controllerGrpcPort: number;
  readonly federation: ComponentProcess;
  /** Links this cluster's federation holds, one per peer. */
  readonly links: number;
}

export interface ScaleMesh {
  readonly clusters: ScaleCluster[];
  readonly pki: MeshPki;
}

export const clusterName = (i: number) => `c${i}`;

function startComponent(command: 'controller' | 'federation', configFile: string, ports: { observability: number; inspector: number }, teardown: Teardown): ComponentProcess {
  const proc = startProcess(process.execPath, [BIN, command, '--config', configFile], {
    cwd: ROOT,
    name: `causeway ${command} (${configFile})`,
    env: { ...process.env, CAUSEWAY_LOG_LEVEL: process.env.CAUSEWAY_LOG_LEVEL ?? 'warn', NODE_OPTIONS: `--inspect-port=127.0.0.1:${ports.inspector}` },
  });
  teardown.push(() => proc.stop(10_000));
  const launcher = proc.child.pid!;
  return { process: proc, pid: () => descendantPids(launcher).at(-1) ?? launcher, observabilityPort: ports.observability, inspectorPort: ports.inspector };
}

/** Waits until `component` answers 200 on `/healthz/ready`; fails early with its output when it exits. */
export async function waitReady(component: ComponentProcess, timeoutMs: number): Promise<void> {
  await waitFor(
    async () => {
      if (component.process.child.exitCode !== null) throw new Error(`exited: ${component.process.output().slice(-2000)}`);
      const res = await fetch(`http://127.0.0.1:${component.observabilityPort}/healthz/ready`, { signal: AbortSignal.timeout(5000) });
      return res.status === 200;
    },
    { timeoutMs, intervalMs: 200, what: `${component.process.child.spawnargs.slice(2, 5).join(' ')} ready` },
  );
}

function writeConfig(dir: string, file: string, config: object): string {
  const path = join(dir, file);
  writeFileSync(path, `${JSON.stringify(config, null, 2)}\n`); // JSON is YAML
  return path;
}

/**
 * Starts `count` clusters, every one linked to every other, with empty catalogs, and waits
 * until every controller and federation is ready. Everything it starts is pushed onto `teardown`.
 */
export async function startScaleMesh(count: number, settings: FederationConfig, teardown: Teardown): Promise<ScaleMesh> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-bench-scale-'));
  teardown.push(() => rmSync(dir, { recursive: true, force: true }));
  const pki = await createMeshPki(join(dir, 'pki'), { trustDomain: TRUST_DOMAIN });
  const names = Array.from({ length: count }, (_, i) => clusterName(i));

  const servers = await Promise.all(
    names.map(async (name) => {
      const etcdStarting = startEtcd({ name: `scale-${name}` });
      const exportsStarting = startExportStoreServer(name);
      teardown.push(async () => (await etcdStarting.catch(() => undefined))?.destroy());
      teardown.push(async () => (await exportsStarting.catch(() => undefined))?.destroy());
      const [etcd, exportStore] = await Promise.all([etcdStarting, exportsStarting]);
      await ensureExportStoreAuth(exportStore.root);
      return { name, etcd, exportStore };
    }),
  );

  // Every ordered pair: the peer's login at this cluster's export store.
  const linksOf = new Map<string, LinkConfig[]>(names.map((n) => [n, []]));
  for (const server of servers) {
    for (const peer of names) {
      if (peer === server.name) continue;
      const granted = await grantPeerLink(server.exportStore, { peer, gateways: ['127.0.0.1:15443'] });
      linksOf.get(peer)!.push({ peer: server.name, etcd: { endpoints: server.exportStore.etcd.endpoints, tls: granted.tls, dialTimeoutMs: 5000 } });
    }
  }

  const clusters = await Promise.all(
    servers.map(async ({ name, etcd, exportStore }, i) => {
      const region = `region-${i}`;
      const store = connectFederationStore({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
      teardown.push(() => store.close());
      // A gateway registration, so `_cluster` and every import carry a gateway address as
      // in production (no gateway runs: the links are direct). It names the export store's
      // port because the controller lists only a registration whose port accepts a connection.
      const gatewayKey = EtcdKeys.gateway(`gw-${name}`);
      const port = Number(new URL(exportStore.etcd.clientUrl).port);
      await store.put(gatewayKey, encodeCatalogValue(Gateway, gatewayKey, { schema: CATALOG_SCHEMA_VERSION, id: `gw-${name}`, cluster: name, network: name, locality: { region, zone: `${region}-1` }, address: '127.0.0.1', port }));
      const { caDir } = await pki.cluster(name);
      const [grpcPort, controllerPort, federationPort, controllerInspector, federationInspector] = (await freePorts(5)) as [number, number, number, number, number];
      const base = {
        cluster: { name, locality: { region, zone: `${region}-1` }, network: name },
        trustDomain: TRUST_DOMAIN,
        etcd: { endpoints: etcd.endpoints, dialTimeoutMs: 5000 },
        exportStore: exportStore.config,
        federation: settings,
      };
      const clusterDir = mkdtempSync(join(dir, `${name}-`));
      const controllerFile = writeConfig(clusterDir, 'controller.yaml', {
        ...base,
        controller: { host: '127.0.0.1', grpcPort, caDir },
        observability: { host: '127.0.0.1', readyPort: controllerPort, metricsPort: controllerPort },
      });
      const links = linksOf.get(name)!;
      const federationFile = writeConfig(clusterDir, 'federation.yaml', { ...base, links, observability: { host: '127.0.0.1', readyPort: federationPort, metricsPort: federationPort } });
      const controller = startComponent('controller', controllerFile, { observability: controllerPort, inspector: controllerInspector }, teardown);
      const federation = startComponent('federation', federationFile, { observability: federationPort, inspector: federationInspector }, teardown);
      return { name, region, etcd, store, exportStore, controller, controllerGrpcPort: grpcPort, federation, links: links.length } satisfies ScaleCluster;
    }),
  );
  const readyTimeoutMs = 60_000 + count * 15_000;
  await Promise.all(clusters.flatMap((c) => [waitReady(c.controller, readyTimeoutMs), waitReady(c.federation, readyTimeoutMs)]));
  return { clusters, pki };
}
