import {
  KEY_ROOT,
  logger,
  type AuthorizationPolicy,
  type ClusterInfo,
  type ControllerRegistration,
  type Endpoint,
  type ExportedCluster,
  type ExportedService,
  type Gateway,
  type Heartbeat,
  type ImportedService,
  type LinkStatus,
  type ServiceSpec,
  type TrafficPolicy,
  type WorkloadGroup,
} from '../mesh/index.js';
import { CatalogMirror, type CatalogEntry, type CatalogUpdate, type EtcdStore } from '../store/index.js';
import { TypedEmitter } from '../mesh/index.js';

/** `<namespace>/<name>`: how the controller keys a service everywhere. */
export type ServiceKey = string;
export const serviceKey = (namespace: string, name: string): ServiceKey => `${namespace}/${name}`;

export interface Versioned<T> {
  readonly value: T;
  readonly modRevision: string;
}

export interface StoredEndpoint extends Versioned<Endpoint> {
  readonly key: string;
  readonly lease: string;
}

/** What changed since the last notification; consumers merge these until they act. */
export class CatalogChanges {
  readonly services = new Set<ServiceKey>();
  policies = false;
  gateways = false;
  controllers = false;
  cluster = false;
  exports = false;
  /** Exported services whose `/exports/<ns>/<name>` changed (a subset of what `exports` says). */
  readonly exported = new Set<ServiceKey>();
  /** `/exports/_cluster` changed (also flags `exports`). */
  exportedCluster = false;
  workloads = false;
  links = false;
  everything = false;

  merge(other: CatalogChanges): void {
    for (const s of other.services) this.services.add(s);
    this.policies ||= other.policies;
    this.gateways ||= other.gateways;
    this.controllers ||= other.controllers;
    this.cluster ||= other.cluster;
    this.exports ||= other.exports;
    for (const s of other.exported) this.exported.add(s);
    this.exportedCluster ||= other.exportedCluster;
    this.workloads ||= other.workloads;
    this.links ||= other.links;
    this.everything ||= other.everything;
  }

  get empty(): boolean {
    return !this.everything && this.services.size === 0 && !this.policies && !this.gateways && !this.controllers && !this.cluster && !this.exports && !this.workloads && !this.links;
  }

  /** Whether discovery snapshots may differ (exports and heartbeats never change them). */
  get affectsSnapshots(): boolean {
    return this.everything || this.services.size > 0 || this.policies || this.cluster;
  }
}

type CatalogEvents = {
  change: [CatalogChanges];
  loaded: [];
  invalid: [key: string, error: Error];
};

/**
 * An in-memory copy of this cluster's `/causeway/v1/` tree, indexed the way the controller
 * reads it, fed by the store's validated {@link CatalogMirror} (one listing, then the
 * lossless watch; values that fail validation are logged with their key and skipped —
 * docs/architecture.md "etcd key layout").
 */
export class CatalogCache extends TypedEmitter<CatalogEvents> {
  cluster: Versioned<ClusterInfo> | undefined;
  readonly services = new Map<ServiceKey, Versioned<ServiceSpec>>();
  readonly endpoints = new Map<ServiceKey, Map<string, StoredEndpoint>>();
  readonly gateways = new Map<string, Versioned<Gateway>>();
  /** Live controllers by id (`/causeway/v1/controllers/<id>`, each on its controller's lease). */
  readonly controllers = new Map<string, Versioned<ControllerRegistration>>();
  readonly exports = new Map<ServiceKey, Versioned<ExportedService>>();
  exportedCluster: Versioned<ExportedCluster> | undefined;
  heartbeat: Versioned<Heartbeat> | undefined;
  /** service → peer → import */
  readonly imports = new Map<ServiceKey, Map<string, Versioned<ImportedService>>>();
  readonly linkStatus = new Map<string, Versioned<LinkStatus>>();
  readonly authorization = new Map<string, Versioned<AuthorizationPolicy>>();
  readonly traffic = new Map<string, Versioned<TrafficPolicy>>();
  readonly workloadGroups = new Map<string, Versioned<WorkloadGroup>>();
  readonly #mirror: CatalogMirror;
  #loadedOnce = false;

  constructor(store: EtcdStore) {
    super();
    this.#mirror = new CatalogMirror({
      store,
      prefix: KEY_ROOT,
      log: logger('controller-catalog'),
      onUpdate: (update) => this.#onUpdate(update),
      onInvalid: (key, error) => this.emit('invalid', key, error),
    });
  }

  /** Keys whose values failed validation, with the reason (for status and tests). */
  get invalid(): ReadonlyMap<string, string> {
    return this.#mirror.invalid;
  }

  get revision(): string {
    return this.#mirror.revision;
  }

  get loaded(): boolean {
    return this.#mirror.loaded;
  }

  get watching(): boolean {
    return this.#mirror.watching;
  }

  /** Lists the tree and starts watching. Rejects when etcd cannot be reached. */
  async start(): Promise<void> {
    await this.#mirror.start();
  }

  async close(): Promise<void> {
    this.#mirror.close();
  }

  endpointsOf(key: ServiceKey): ReadonlyMap<string, StoredEndpoint> {
    return this.endpoints.get(key) ?? new Map();
  }

  endpointCount(): number {
    let n = 0;
    for (const m of this.endpoints.values()) n += m.size;
    return n;
  }

  #onUpdate(update: CatalogUpdate): void {
    const changes = new CatalogChanges();
    if (update.relisted) {
      this.#clear();
      for (const entry of this.#mirror.entries.values()) this.#apply(entry, changes);
      changes.everything = true;
      const first = !this.#loadedOnce;
      this.#loadedOnce = true;
      if (first) this.emit('loaded');
    } else {
      for (const change of update.changes) {
        if (change.type === 'put') this.#apply(change.entry, changes);
        else this.#remove(change.entry, changes);
      }
    }
    if (!changes.empty) this.emit('change', changes);
  }

  #clear(): void {
    this.cluster = undefined;
    this.exportedCluster = undefined;
    this.heartbeat = undefined;
    for (const m of [this.services, this.endpoints, this.gateways, this.controllers, this.exports, this.imports, this.linkStatus, this.authorization, this.traffic, this.workloadGroups]) {
      m.clear();
    }
  }

  #apply(entry: CatalogEntry, changes: CatalogChanges): void {
    const m = entry.modRevision;
    switch (entry.kind) {
      case 'cluster':
        this.cluster = { value: entry.value, modRevision: m };
        changes.cluster = true;
        return;
      case 'service': {
        const sk = serviceKey(entry.name.namespace, entry.name.name);
        this.services.set(sk, { value: entry.value, modRevision: m });
        changes.services.add(sk);
        changes.exports = true;
        return;
      }
      case 'endpoint': {
        const sk = serviceKey(entry.name.namespace, entry.name.name);
        let byId = this.endpoints.get(sk);
        if (!byId) this.endpoints.set(sk, (byId = new Map()));
        byId.set(entry.name.endpointId, { key: entry.key, value: entry.value, modRevision: m, lease: entry.lease });
        changes.services.add(sk);
        changes.exports = true;
        return;
      }
      case 'gateway':
        this.gateways.set(entry.name.gatewayId, { value: entry.value, modRevision: m });
        changes.gateways = true;
        return;
      case 'controller':
        this.controllers.set(entry.name.controllerId, { value: entry.value, modRevision: m });
        changes.controllers = true;
        return;
      case 'exported-cluster':
        this.exportedCluster = { value: entry.value, modRevision: m };
        changes.exports = true;
        changes.exportedCluster = true;
        return;
      case 'heartbeat':
        this.heartbeat = { value: entry.value, modRevision: m };
        return;
      case 'exported-service': {
        const sk = serviceKey(entry.name.namespace, entry.name.name);
        this.exports.set(sk, { value: entry.value, modRevision: m });
        changes.exports = true;
        changes.exported.add(sk);
        return;
      }
      case 'imported-service': {
        const sk = serviceKey(entry.name.namespace, entry.name.name);
        let byPeer = this.imports.get(sk);
        if (!byPeer) this.imports.set(sk, (byPeer = new Map()));
        byPeer.set(entry.name.peer, { value: entry.value, modRevision: m });
        changes.services.add(sk);
        return;
      }
      case 'link-status':
        this.linkStatus.set(entry.name.peer, { value: entry.value, modRevision: m });
        changes.links = true;
        return;
      case 'reported-links':
      case 'peer-reported-links':
        return; // links between other clusters: the mesh view reads them, discovery does not
      case 'policy':
        if (entry.name.policyKind === 'authorization') this.authorization.set(entry.key, { value: entry.value as AuthorizationPolicy, modRevision: m });
        else this.traffic.set(entry.key, { value: entry.value as TrafficPolicy, modRevision: m });
        changes.policies = true;
        return;
      case 'workload-group':
        this.workloadGroups.set(entry.key, { value: entry.value, modRevision: m });
        changes.workloads = true;
        return;
    }
  }

  #remove(entry: CatalogEntry, changes: CatalogChanges): void {
    const key = entry.key;
    switch (entry.kind) {
      case 'cluster':
        this.cluster = undefined;
        changes.cluster = true;
        return;
      case 'service': {
        const sk = serviceKey(entry.name.namespace, entry.name.name);
        if (this.services.delete(sk)) {
          changes.services.add(sk);
          changes.exports = true;
        }
        return;
      }
      case 'endpoint': {
        const sk = serviceKey(entry.name.namespace, entry.name.name);
        const byId = this.endpoints.get(sk);
        if (byId?.delete(entry.name.endpointId)) {
          if (byId.size === 0) this.endpoints.delete(sk);
          changes.services.add(sk);
          changes.exports = true;
        }
        return;
      }
      case 'gateway':
        if (this.gateways.delete(entry.name.gatewayId)) changes.gateways = true;
        return;
      case 'controller':
        if (this.controllers.delete(entry.name.controllerId)) changes.controllers = true;
        return;
      case 'exported-cluster':
        this.exportedCluster = undefined;
        changes.exports = true;
        changes.exportedCluster = true;
        return;
      case 'heartbeat':
        this.heartbeat = undefined;
        return;
      case 'exported-service': {
        const sk = serviceKey(entry.name.namespace, entry.name.name);
        if (this.exports.delete(sk)) {
          changes.exports = true;
          changes.exported.add(sk);
        }
        return;
      }
      case 'imported-service': {
        const sk = serviceKey(entry.name.namespace, entry.name.name);
        const byPeer = this.imports.get(sk);
        if (byPeer?.delete(entry.name.peer)) {
          if (byPeer.size === 0) this.imports.delete(sk);
          changes.services.add(sk);
        }
        return;
      }
      case 'link-status':
        if (this.linkStatus.delete(entry.name.peer)) changes.links = true;
        return;
      case 'reported-links':
      case 'peer-reported-links':
        return;
      case 'policy':
        if (this.authorization.delete(key) || this.traffic.delete(key)) changes.policies = true;
        return;
      case 'workload-group':
        if (this.workloadGroups.delete(key)) changes.workloads = true;
        return;
    }
  }
}
