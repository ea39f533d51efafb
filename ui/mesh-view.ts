import {
  ControllerRegistration,
  Endpoint,
  EtcdKeys,
  Gateway,
  ImportedService,
  ServiceSpec,
  TrafficPolicy,
  decodeCatalogValue,
  parseEtcdKey,
  type ClusterConfig,
  type HealthyCount,
} from '../mesh/index.js';
import { readClusterStatus, type LinkStatusView, type ReportedLinkView } from '../federation/index.js';
import type { EtcdStore } from '../store/index.js';
import type { MeshEvent } from './mesh-events.js';
import type { TrafficView } from './traffic.js';
import type { CertificatesView } from './certificate-expiries.js';

/**
 * The whole mesh as one cluster sees it (ui/README.md "The model"): what `causeway ui`
 * serves at /api/mesh and `causeway status --all` prints. Read from the local etcd only —
 * its own catalog plus what its federation mirrored from each peer — so it holds names,
 * addresses, counts and states, never a key, token or certificate.
 */
export const MESH_VIEW_SCHEMA = 1;

export interface GatewayView {
  readonly address: string;
  readonly port: number;
  /** `registration`: a leased key of the local cluster (gone when the gateway dies); `peer-export`: the peer's `_cluster`, which leaves out gateways that refuse connects. */
  readonly source: 'registration' | 'peer-export';
  readonly live: boolean;
}

export interface ClusterView {
  readonly name: string;
  /** `region/zone`, or `unknown` for a peer this cluster has imported nothing from yet. */
  readonly locality: string;
  readonly network: string;
  /** The cluster whose etcd this view was read from. */
  readonly local: boolean;
  /** Controllers holding a live registration (local cluster only; undefined for peers, whose controllers are not visible from here). */
  readonly controllers: number | undefined;
  readonly controllerReady: boolean | undefined;
  readonly gateways: readonly GatewayView[];
  /** The state of the local cluster's link to this peer (`local` for the local cluster; `unlinked` for a cluster known only from peers' reports). */
  readonly linkState: string;
}

export interface LinkView extends LinkStatusView {
  /** The cluster that holds the link (it reads `peer`'s exports). */
  readonly cluster: string;
}

export interface ServiceLocation {
  readonly cluster: string;
  /** `local`: served in the local cluster (exported or not); `imported`: mirrored from the peer. */
  readonly source: 'local' | 'imported';
  readonly exported: boolean;
  readonly healthy: number;
  readonly total: number;
  readonly stale: boolean;
  readonly conflict: string | undefined;
}

export interface ServiceView {
  /** `<name>.<namespace>`. */
  readonly service: string;
  readonly locations: readonly ServiceLocation[];
  readonly subsets: readonly string[];
  /** The traffic policy's weighted split, when one is set in the local cluster. */
  readonly split: ReadonlyArray<{ subset: string; weight: number }> | undefined;
  readonly failoverOrder: readonly string[] | undefined;
}

export interface MeshView {
  readonly schema: typeof MESH_VIEW_SCHEMA;
  readonly generatedAt: string;
  /** The cluster whose etcd was read. */
  readonly seenFrom: string;
  readonly clusters: readonly ClusterView[];
  readonly links: readonly LinkView[];
  /** Links between other clusters, as their holders reported them (`reportedBy`, with the report's age). */
  readonly reportedLinks: readonly ReportedLinkView[];
  readonly services: readonly ServiceView[];
  readonly traffic: TrafficView;
  /** Workload certificates close to expiry (from Prometheus, like traffic). */
  readonly certificates: CertificatesView;
  readonly events: readonly MeshEvent[];
  /** Set when the last read of the local etcd failed: the rest is the last good read, as old as `generatedAt`. */
  readonly error: string | undefined;
}

/** What {@link readMeshCatalog} reads; traffic, events and read errors are added by the feed. */
export type MeshCatalogView = Omit<MeshView, 'traffic' | 'certificates' | 'events' | 'error'>;

const loc = (l: { region: string; zone: string }) => `${l.region}/${l.zone}`;
const sum = (counts: readonly HealthyCount[], field: 'healthy' | 'total') => counts.reduce((n, c) => n + c[field], 0);

function decodedEntries<S extends Parameters<typeof decodeCatalogValue>[0]>(schema: S, entries: ReadonlyArray<{ key: string; value: Buffer | string }>) {
  return entries.flatMap((entry) => {
    const decoded = decodeCatalogValue(schema, entry.key, entry.value);
    return decoded.ok ? [{ key: entry.key, value: decoded.value }] : [];
  });
}

/**
 * Reads the catalog part of the view from the local etcd. A value that fails validation
 * is skipped (it never fails the view), as every reader of the catalog does.
 */
export async function readMeshCatalog(store: EtcdStore, config: ClusterConfig, now = Date.now()): Promise<MeshCatalogView> {
  const [status, controllers, serviceSpecs, endpoints, imports, policies] = await Promise.all([
    readClusterStatus(store, config, now),
    store.list(EtcdKeys.controllersPrefix),
    store.list(EtcdKeys.servicesPrefix),
    store.list(EtcdKeys.endpointsPrefix),
    store.list(EtcdKeys.importsPrefix),
    store.list(`${EtcdKeys.policiesPrefix}traffic/`),
  ]);
  const local = status.cluster.name;
  const liveControllers = decodedEntries(ControllerRegistration, controllers.entries).length;

  const importsByPeer = new Map<string, ImportedService[]>();
  for (const entry of imports.entries) {
    let parsed;
    try {
      parsed = parseEtcdKey(entry.key);
    } catch {
      continue;
    }
    if (parsed.kind !== 'imported-service') continue;
    const decoded = decodeCatalogValue(ImportedService, entry.key, entry.value);
    if (!decoded.ok) continue;
    importsByPeer.set(parsed.peer, [...(importsByPeer.get(parsed.peer) ?? []), decoded.value]);
  }

  const clusters: ClusterView[] = [
    {
      name: local,
      locality: status.cluster.locality,
      network: status.cluster.network,
      local: true,
      controllers: liveControllers,
      controllerReady: liveControllers > 0,
      gateways: status.gateways.map((g) => ({ address: g.address, port: g.port, source: 'registration', live: true })),
      linkState: 'local',
    },
    ...status.links.map((link): ClusterView => {
      const first = importsByPeer.get(link.peer)?.[0];
      return {
        name: link.peer,
        locality: first ? loc(first.peerLocality) : 'unknown',
        network: first?.peerNetwork ?? 'unknown',
        local: false,
        controllers: undefined,
        controllerReady: undefined,
        gateways: (first?.gateways ?? []).map((g) => ({ address: g.address, port: g.port, source: 'peer-export', live: link.state === 'synced' })),
        linkState: link.state,
      };
    }),
  ];
  // A cluster that only the peers' reports name still gets a node: their links end there.
  const named = new Set(clusters.map((c) => c.name));
  for (const link of status.reportedLinks) {
    if (named.has(link.peer)) continue;
    named.add(link.peer);
    clusters.push({ name: link.peer, locality: 'unknown', network: 'unknown', local: false, controllers: undefined, controllerReady: undefined, gateways: [], linkState: 'unlinked' });
  }

  const services = new Map<string, { spec?: ServiceSpec; locations: ServiceLocation[]; policy?: TrafficPolicy }>();
  const service = (id: string) => {
    let s = services.get(id);
    if (!s) services.set(id, (s = { locations: [] }));
    return s;
  };
  const endpointCounts = new Map<string, { healthy: number; total: number }>();
  for (const { value } of decodedEntries(Endpoint, endpoints.entries)) {
    const id = `${value.service}.${value.namespace}`;
    const c = endpointCounts.get(id) ?? { healthy: 0, total: 0 };
    c.total += 1;
    if (value.health === 'healthy') c.healthy += 1;
    endpointCounts.set(id, c);
  }
  for (const { value: spec } of decodedEntries(ServiceSpec, serviceSpecs.entries)) {
    const id = `${spec.name}.${spec.namespace}`;
    const counts = endpointCounts.get(id) ?? { healthy: 0, total: 0 };
    const s = service(id);
    s.spec = spec;
    s.locations.push({ cluster: local, source: 'local', exported: spec.exported, healthy: counts.healthy, total: counts.total, stale: false, conflict: undefined });
  }
  for (const [peer, list] of importsByPeer) {
    for (const imp of list) {
      const s = service(`${imp.service.name}.${imp.service.namespace}`);
      s.spec ??= imp.service;
      s.locations.push({ cluster: peer, source: 'imported', exported: true, healthy: sum(imp.healthy, 'healthy'), total: sum(imp.healthy, 'total'), stale: imp.stale, conflict: imp.conflict });
    }
  }
  for (const { value: policy } of decodedEntries(TrafficPolicy, policies.entries)) {
    const s = services.get(`${policy.service}.${policy.namespace}`);
    if (s) s.policy = policy;
  }
  const serviceViews = [...services.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([id, s]): ServiceView => ({
      service: id,
      locations: s.locations.sort((a, b) => a.cluster.localeCompare(b.cluster)),
      subsets: Object.keys(s.spec?.subsets ?? {}).sort(),
      split: s.policy?.split?.map((p) => ({ subset: p.subset, weight: p.weight })),
      failoverOrder: s.policy?.failoverOrder,
    }));

  return {
    schema: MESH_VIEW_SCHEMA,
    generatedAt: new Date(now).toISOString(),
    seenFrom: local,
    clusters,
    links: status.links.map((l) => ({ ...l, cluster: local })),
    reportedLinks: status.reportedLinks,
    services: serviceViews,
  };
}
