import {
  AuthorizationPolicy,
  ClusterInfo,
  ControllerRegistration,
  Endpoint,
  ExportedCluster,
  ExportedService,
  Gateway,
  Heartbeat,
  ImportedService,
  InvalidNameError,
  KEY_ROOT,
  LinkStatus,
  ServiceSpec,
  TrafficPolicy,
  WorkloadGroup,
  decodeCatalogValue,
  logger,
  parseEtcdKey,
  type EtcdKey,
} from '../mesh/index.js';
import type { z } from 'zod';
import type { EtcdStore, PrefixWatch, StoredValue, WatchEvent } from './etcd-store.js';
import { TypedEmitter } from './typed-emitter.js';

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
 * An in-memory copy of this cluster's `/causeway/v1/` tree, loaded with one listing and
 * kept current by a prefix watch that resumes from the listing's revision. Values that
 * fail validation are logged with their key and skipped (docs/architecture.md "etcd key layout");
 * when the watch breaks (compaction), the tree is listed again.
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
  /** Keys whose values failed validation, with the reason (for status and tests). */
  readonly invalid = new Map<string, string>();
  revision = '0';
  loaded = false;
  watching = false;

  private watch: PrefixWatch | undefined;
  private closed = false;
  private relistTimer: NodeJS.Timeout | undefined;
  private readonly log = logger('controller-catalog');

  constructor(private readonly store: EtcdStore) {
    super();
  }

  /** Lists the tree and starts watching. Rejects when etcd cannot be reached. */
  async start(): Promise<void> {
    await this.relist();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.relistTimer);
    await this.watch?.cancel();
    this.watch = undefined;
  }

  endpointsOf(key: ServiceKey): ReadonlyMap<string, StoredEndpoint> {
    return this.endpoints.get(key) ?? new Map();
  }

  endpointCount(): number {
    let n = 0;
    for (const m of this.endpoints.values()) n += m.size;
    return n;
  }

  private async relist(): Promise<void> {
    await this.watch?.cancel();
    this.watch = undefined;
    this.watching = false;
    const listing = await this.store.list(KEY_ROOT);
    this.clear();
    for (const kv of listing.values) this.apply(kv, new CatalogChanges());
    this.revision = listing.revision;
    const first = !this.loaded;
    this.loaded = true;
    this.watch = await this.store.watchPrefix(KEY_ROOT, listing.revision, {
      events: (events, revision) => this.onEvents(events, revision),
      broken: (error) => {
        this.watching = false;
        this.log.warn({ err: error.message, revision: this.revision }, 'catalog watch broke (compaction?); listing again');
        this.scheduleRelist();
      },
      connected: () => {
        this.watching = true;
      },
      disconnected: (error) => {
        this.watching = false;
        this.log.warn({ err: error.message }, 'catalog watch disconnected; etcd3 resumes it from the last revision');
      },
    });
    this.watching = true;
    const all = new CatalogChanges();
    all.everything = true;
    if (first) this.emit('loaded');
    this.emit('change', all);
  }

  private scheduleRelist(delayMs = 200): void {
    if (this.closed) return;
    clearTimeout(this.relistTimer);
    this.relistTimer = setTimeout(() => {
      this.relist().catch((error: Error) => {
        this.log.warn({ err: error.message }, 'catalog relist failed; retrying');
        this.scheduleRelist(Math.min(delayMs * 2, 5000));
      });
    }, delayMs);
  }

  private clear(): void {
    this.cluster = undefined;
    this.exportedCluster = undefined;
    this.heartbeat = undefined;
    for (const m of [this.services, this.endpoints, this.gateways, this.controllers, this.exports, this.imports, this.linkStatus, this.authorization, this.traffic, this.workloadGroups, this.invalid]) {
      m.clear();
    }
  }

  private onEvents(events: WatchEvent[], revision: string): void {
    const changes = new CatalogChanges();
    for (const event of events) {
      if (event.type === 'put') this.apply(event.kv, changes);
      else {
        this.invalid.delete(event.key);
        this.remove(event.key, changes);
      }
    }
    this.revision = revision;
    if (!changes.empty) this.emit('change', changes);
  }

  private classify(key: string): EtcdKey | undefined {
    try {
      return parseEtcdKey(key);
    } catch (error) {
      if (error instanceof InvalidNameError) {
        this.reject(key, error);
        return undefined;
      }
      throw error;
    }
  }

  private reject(key: string, error: Error): void {
    this.invalid.set(key, error.message);
    this.log.warn({ key, err: error.message }, 'skipping invalid etcd value');
    this.emit('invalid', key, error);
  }

  private decode<S extends z.ZodType>(schema: S, kv: StoredValue): z.output<S> | undefined {
    const result = decodeCatalogValue(schema, kv.key, kv.value);
    if (!result.ok) {
      this.reject(kv.key, result.error);
      return undefined;
    }
    this.invalid.delete(kv.key);
    return result.value;
  }

  private mismatch(kv: StoredValue, what: string): undefined {
    this.reject(kv.key, new Error(`${what} in the value does not match the key`));
    return undefined;
  }

  private apply(kv: StoredValue, changes: CatalogChanges): void {
    const k = this.classify(kv.key);
    if (!k) return;
    // A value that turns invalid replaces nothing: drop what the key held before.
    const drop = () => this.remove(kv.key, changes);
    const m = kv.modRevision;
    switch (k.kind) {
      case 'cluster': {
        const value = this.decode(ClusterInfo, kv);
        if (!value) return drop();
        this.cluster = { value, modRevision: m };
        changes.cluster = true;
        return;
      }
      case 'service': {
        const value = this.decode(ServiceSpec, kv);
        if (!value || value.namespace !== k.namespace || value.name !== k.name) return value ? (drop(), this.mismatch(kv, 'namespace/name')) : drop();
        const sk = serviceKey(k.namespace, k.name);
        this.services.set(sk, { value, modRevision: m });
        changes.services.add(sk);
        changes.exports = true;
        return;
      }
      case 'endpoint': {
        const value = this.decode(Endpoint, kv);
        if (!value || value.namespace !== k.namespace || value.service !== k.name || value.id !== k.endpointId) {
          return value ? (drop(), this.mismatch(kv, 'namespace/service/id')) : drop();
        }
        const sk = serviceKey(k.namespace, k.name);
        let byId = this.endpoints.get(sk);
        if (!byId) this.endpoints.set(sk, (byId = new Map()));
        byId.set(k.endpointId, { key: kv.key, value, modRevision: m, lease: kv.lease });
        changes.services.add(sk);
        changes.exports = true;
        return;
      }
      case 'gateway': {
        const value = this.decode(Gateway, kv);
        if (!value) return drop();
        this.gateways.set(k.gatewayId, { value, modRevision: m });
        changes.gateways = true;
        return;
      }
      case 'controller': {
        const value = this.decode(ControllerRegistration, kv);
        if (!value || value.id !== k.controllerId) return value ? (drop(), this.mismatch(kv, 'id')) : drop();
        this.controllers.set(k.controllerId, { value, modRevision: m });
        changes.controllers = true;
        return;
      }
      case 'exported-cluster': {
        const value = this.decode(ExportedCluster, kv);
        if (!value) return drop();
        this.exportedCluster = { value, modRevision: m };
        changes.exports = true;
        return;
      }
      case 'heartbeat': {
        const value = this.decode(Heartbeat, kv);
        if (!value) return drop();
        this.heartbeat = { value, modRevision: m };
        return;
      }
      case 'exported-service': {
        const value = this.decode(ExportedService, kv);
        if (!value) return drop();
        this.exports.set(serviceKey(k.namespace, k.name), { value, modRevision: m });
        changes.exports = true;
        return;
      }
      case 'imported-service': {
        const value = this.decode(ImportedService, kv);
        if (!value || value.peer !== k.peer || value.service.namespace !== k.namespace || value.service.name !== k.name) {
          return value ? (drop(), this.mismatch(kv, 'peer/namespace/name')) : drop();
        }
        const sk = serviceKey(k.namespace, k.name);
        let byPeer = this.imports.get(sk);
        if (!byPeer) this.imports.set(sk, (byPeer = new Map()));
        byPeer.set(k.peer, { value, modRevision: m });
        changes.services.add(sk);
        return;
      }
      case 'link-status': {
        const value = this.decode(LinkStatus, kv);
        if (!value) return drop();
        this.linkStatus.set(k.peer, { value, modRevision: m });
        changes.links = true;
        return;
      }
      case 'policy': {
        if (k.policyKind === 'authorization') {
          const value = this.decode(AuthorizationPolicy, kv);
          if (!value || value.namespace !== k.namespace || value.name !== k.name) return value ? (drop(), this.mismatch(kv, 'namespace/name')) : drop();
          this.authorization.set(kv.key, { value, modRevision: m });
        } else {
          const value = this.decode(TrafficPolicy, kv);
          if (!value || value.namespace !== k.namespace || value.name !== k.name) return value ? (drop(), this.mismatch(kv, 'namespace/name')) : drop();
          this.traffic.set(kv.key, { value, modRevision: m });
        }
        changes.policies = true;
        return;
      }
      case 'workload-group': {
        const value = this.decode(WorkloadGroup, kv);
        if (!value) return drop();
        this.workloadGroups.set(kv.key, { value, modRevision: m });
        changes.workloads = true;
        return;
      }
    }
  }

  private remove(key: string, changes: CatalogChanges): void {
    let k: EtcdKey;
    try {
      k = parseEtcdKey(key);
    } catch {
      return;
    }
    switch (k.kind) {
      case 'cluster':
        this.cluster = undefined;
        changes.cluster = true;
        return;
      case 'service': {
        const sk = serviceKey(k.namespace, k.name);
        if (this.services.delete(sk)) {
          changes.services.add(sk);
          changes.exports = true;
        }
        return;
      }
      case 'endpoint': {
        const sk = serviceKey(k.namespace, k.name);
        const byId = this.endpoints.get(sk);
        if (byId?.delete(k.endpointId)) {
          if (byId.size === 0) this.endpoints.delete(sk);
          changes.services.add(sk);
          changes.exports = true;
        }
        return;
      }
      case 'gateway':
        if (this.gateways.delete(k.gatewayId)) changes.gateways = true;
        return;
      case 'controller':
        if (this.controllers.delete(k.controllerId)) changes.controllers = true;
        return;
      case 'exported-cluster':
        this.exportedCluster = undefined;
        changes.exports = true;
        return;
      case 'heartbeat':
        this.heartbeat = undefined;
        return;
      case 'exported-service':
        if (this.exports.delete(serviceKey(k.namespace, k.name))) changes.exports = true;
        return;
      case 'imported-service': {
        const sk = serviceKey(k.namespace, k.name);
        const byPeer = this.imports.get(sk);
        if (byPeer?.delete(k.peer)) {
          if (byPeer.size === 0) this.imports.delete(sk);
          changes.services.add(sk);
        }
        return;
      }
      case 'link-status':
        if (this.linkStatus.delete(k.peer)) changes.links = true;
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
