import type { Etcd3, Lease, Watcher } from 'etcd3';
import type { IKeyValue } from 'etcd3/lib/rpc.js';
import type { z } from 'zod';
import {
  ClusterInfo,
  ControllerRegistration,
  Endpoint,
  EtcdKeys,
  ExportedService,
  Gateway,
  ImportedService,
  KEY_ROOT,
  ServiceSpec,
  decodeCatalogValue,
  encodeCatalogValue,
  logger as moduleLogger,
  parseEtcdKey,
  type EtcdKey,
  type Logger,
} from '../mesh/index.js';
import type { ServiceRouteSpec, TargetAddress } from './route-table.js';
import type { RouteSpecInput } from './sni-gateway.js';

/**
 * Builds the gateway's routes from this cluster's catalog in etcd and keeps them current:
 * one list of `/causeway/v1/`, then one prefix watch from the revision after it. Values
 * that fail validation are logged with their key and skipped. A watch that cannot resume
 * (compacted revision) re-lists.
 */
export interface CatalogRouteSourceOptions {
  readonly etcd: Etcd3;
  /** This cluster's name (service SNIs naming it go to local endpoints). */
  readonly cluster: string;
  readonly trustDomain: string;
  /** Controller addresses when no controller is registered (`/causeway/v1/controllers/`) and `/causeway/v1/cluster` lists none. */
  readonly controllers?: readonly TargetAddress[];
  readonly onRoutes: (spec: RouteSpecInput) => void;
  /** Coalesces bursts of catalog changes into one table rebuild. */
  readonly debounceMs?: number;
  readonly logger?: Logger;
}

type Family = 'cluster' | 'controller' | 'service' | 'endpoint' | 'exported-service' | 'imported-service' | 'gateway';

const schemas = {
  cluster: ClusterInfo,
  controller: ControllerRegistration,
  service: ServiceSpec,
  endpoint: Endpoint,
  'exported-service': ExportedService,
  'imported-service': ImportedService,
  gateway: Gateway,
} satisfies Record<Family, z.ZodType>;

export class CatalogRouteSource {
  private readonly log: Logger;
  private readonly values = new Map<string, { family: Family; parsed: EtcdKey; value: unknown }>();
  private watcher: Watcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private synced = false;

  constructor(private readonly options: CatalogRouteSourceOptions) {
    this.log = options.logger ?? moduleLogger('gateway-catalog', { cluster: options.cluster });
  }

  /** Lists the catalog, applies the first route table and starts watching. */
  async start(): Promise<void> {
    await this.resync();
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  private async resync(): Promise<void> {
    const response = await this.options.etcd.getAll().prefix(KEY_ROOT).exec();
    this.values.clear();
    for (const kv of response.kvs) this.put(kv);
    this.apply();
    const revision = BigInt(response.header.revision);
    await this.watch(revision + 1n);
  }

  private async watch(fromRevision: bigint): Promise<void> {
    if (this.closed) return;
    const watcher = await this.options.etcd.watch().prefix(KEY_ROOT).startRevision(fromRevision.toString()).create();
    if (this.closed) {
      await watcher.cancel();
      return;
    }
    this.watcher = watcher;
    watcher.on('put', (kv) => {
      this.put(kv);
      this.schedule();
    });
    watcher.on('delete', (kv) => {
      this.values.delete(kv.key.toString('utf8'));
      this.schedule();
    });
    watcher.on('error', (error) => {
      // etcd3 does not resume past a compaction: list again and watch from there.
      this.log.warn({ err: error }, 'catalog watch failed; re-listing');
      void watcher.cancel().catch(() => undefined);
      if (this.watcher === watcher) this.watcher = undefined;
      this.retryResync();
    });
  }

  private retryResync(): void {
    if (this.closed) return;
    this.resync().catch((error: Error) => {
      this.log.warn({ err: error }, 'catalog re-list failed; retrying in 1 s');
      setTimeout(() => this.retryResync(), 1000).unref();
    });
  }

  private put(kv: IKeyValue): void {
    const key = kv.key.toString('utf8');
    let parsed: EtcdKey;
    try {
      parsed = parseEtcdKey(key);
    } catch (error) {
      this.log.warn({ key, err: error }, 'skipping a catalog key outside the layout');
      return;
    }
    if (!(parsed.kind in schemas)) return;
    const family = parsed.kind as Family;
    const decoded = decodeCatalogValue(schemas[family], key, kv.value);
    if (!decoded.ok) {
      this.log.warn({ key, err: decoded.error }, 'skipping an invalid catalog value');
      this.values.delete(key);
      return;
    }
    this.values.set(key, { family, parsed, value: decoded.value });
  }

  private schedule(): void {
    if (this.timer !== undefined || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.apply();
    }, this.options.debounceMs ?? 20);
  }

  /** The route spec the current catalog implies. */
  routeSpec(): RouteSpecInput {
    const services = new Map<string, { spec: ServiceSpec; exported: boolean }>();
    const endpoints = new Map<string, Endpoint[]>();
    const peers = new Map<string, Map<string, TargetAddress>>();
    let cluster: ClusterInfo | undefined;
    const registered: TargetAddress[] = [];
    for (const { family, parsed, value } of this.values.values()) {
      switch (family) {
        case 'cluster':
          cluster = value as ClusterInfo;
          break;
        case 'controller': {
          const { address, port } = value as ControllerRegistration;
          registered.push({ address, port });
          break;
        }
        case 'service': {
          const spec = value as ServiceSpec;
          const id = `${spec.namespace}/${spec.name}`;
          const existing = services.get(id);
          services.set(id, { spec, exported: spec.exported || (existing?.exported ?? false) });
          break;
        }
        case 'exported-service': {
          const exported = value as ExportedService;
          const id = `${exported.service.namespace}/${exported.service.name}`;
          const existing = services.get(id);
          services.set(id, { spec: existing?.spec ?? exported.service, exported: true });
          break;
        }
        case 'endpoint': {
          const endpoint = value as Endpoint;
          if (endpoint.cluster !== this.options.cluster) break;
          const id = `${endpoint.namespace}/${endpoint.service}`;
          let list = endpoints.get(id);
          if (list === undefined) endpoints.set(id, (list = []));
          list.push(endpoint);
          break;
        }
        case 'imported-service': {
          const imported = value as ImportedService;
          let gateways = peers.get(imported.peer);
          if (gateways === undefined) peers.set(imported.peer, (gateways = new Map()));
          for (const g of imported.gateways) gateways.set(`${g.address}:${g.port}`, g);
          break;
        }
        case 'gateway':
          break;
      }
    }
    const serviceRoutes: ServiceRouteSpec[] = [];
    for (const [id, { spec, exported }] of services) {
      serviceRoutes.push({
        namespace: spec.namespace,
        name: spec.name,
        exported,
        ports: spec.ports.map((p) => p.port),
        subsets: spec.subsets,
        endpoints: (endpoints.get(id) ?? []).map((e) => ({ address: e.address, port: e.inboundPort, labels: e.labels, health: e.health })),
      });
    }
    // The live registrations (each on its controller's lease) first: the record's list may
    // still name a controller that died when no other was left to rewrite it.
    registered.sort((a, b) => (a.address === b.address ? a.port - b.port : a.address < b.address ? -1 : 1));
    const controllers = registered.length > 0 ? registered : cluster?.controllers.length ? cluster.controllers : (this.options.controllers ?? []);
    return {
      cluster: this.options.cluster,
      trustDomain: this.options.trustDomain,
      services: serviceRoutes,
      peerClusters: [...peers].map(([name, gateways]) => ({ name, gateways: [...gateways.values()] })),
      controllers,
    };
  }

  private apply(): void {
    if (this.closed) return;
    this.options.onRoutes(this.routeSpec());
    this.synced = true;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.watcher?.cancel().catch(() => undefined);
  }
}

export interface GatewayRegistrationOptions {
  readonly etcd: Etcd3;
  readonly gateway: Omit<Gateway, 'schema'>;
  readonly ttlSeconds?: number;
  readonly logger?: Logger;
}

/**
 * Keeps `/causeway/v1/gateways/<id>` on a lease while the gateway runs; re-registers
 * when the lease is lost (etcd restarted, long partition).
 */
export class GatewayRegistration {
  private lease: Lease | undefined;
  private closed = false;
  private readonly log: Logger;
  readonly key: string;

  constructor(private readonly options: GatewayRegistrationOptions) {
    this.key = EtcdKeys.gateway(options.gateway.id);
    this.log = options.logger ?? moduleLogger('gateway-registration', { key: this.key });
  }

  async start(): Promise<void> {
    const value = encodeCatalogValue(Gateway, this.key, { schema: 1, ...this.options.gateway });
    const lease = this.options.etcd.lease(this.options.ttlSeconds ?? 10, { autoKeepAlive: true });
    this.lease = lease;
    lease.on('lost', (error) => {
      if (this.closed || this.lease !== lease) return;
      this.log.warn({ err: error }, 'gateway lease lost; registering again');
      this.retry();
    });
    await lease.put(this.key).value(value).exec();
  }

  private retry(): void {
    if (this.closed) return;
    this.start().catch((error: Error) => {
      this.log.warn({ err: error }, 'gateway registration failed; retrying in 1 s');
      setTimeout(() => this.retry(), 1000).unref();
    });
  }

  /** Revokes the lease so peers stop routing here before the drain ends. */
  async close(): Promise<void> {
    this.closed = true;
    await this.lease?.revoke().catch(() => undefined);
  }
}
