import {
  EtcdKeys,
  Gateway,
  KEY_ROOT,
  encodeCatalogValue,
  logger as moduleLogger,
  type ClusterConfig,
  type ClusterInfo,
  type Endpoint,
  type Logger,
  type ServiceSpec,
} from '../mesh/index.js';
import { CatalogMirror, LeasedKey, type EtcdStore } from '../store/index.js';
import type { ServiceRouteSpec, TargetAddress } from './route-table.js';
import type { RouteSpecInput } from './sni-gateway.js';

/**
 * Builds the gateway's routes from this cluster's catalog in etcd and keeps them current
 * through the store's validated catalog mirror of `/causeway/v1/` (one listing, then the
 * lossless watch; values that fail validation are logged with their key and skipped).
 */
export interface CatalogRouteSourceOptions {
  readonly store: EtcdStore;
  /** This cluster's name (service SNIs naming it go to local endpoints). */
  readonly cluster: string;
  readonly trustDomain: string;
  /** Controller addresses when no controller is registered (`/causeway/v1/controllers/`) and `/causeway/v1/cluster` lists none. */
  readonly controllers?: readonly TargetAddress[];
  /** This cluster's export store (host:port of each `exportStore.endpoints` URL), for its SNI. */
  readonly exportStore?: readonly TargetAddress[];
  readonly onRoutes: (spec: RouteSpecInput) => void;
  /** Coalesces bursts of catalog changes into one table rebuild. */
  readonly debounceMs?: number;
  readonly logger?: Logger;
}

export class CatalogRouteSource {
  readonly #o: CatalogRouteSourceOptions;
  readonly #mirror: CatalogMirror;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #synced = false;

  constructor(options: CatalogRouteSourceOptions) {
    this.#o = options;
    this.#mirror = new CatalogMirror({
      store: options.store,
      prefix: KEY_ROOT,
      log: options.logger ?? moduleLogger('gateway-catalog', { cluster: options.cluster }),
      // A listing is applied at once; watch events are coalesced.
      onUpdate: ({ relisted }) => (relisted ? this.#apply() : this.#schedule()),
    });
  }

  /** Lists the catalog, applies the first route table and starts watching. */
  async start(): Promise<void> {
    await this.#mirror.start();
  }

  get hasSynced(): boolean {
    return this.#synced;
  }

  #schedule(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#apply();
    }, this.#o.debounceMs ?? 20);
  }

  /** The route spec the current catalog implies. */
  routeSpec(): RouteSpecInput {
    const services = new Map<string, { spec: ServiceSpec; exported: boolean }>();
    const endpoints = new Map<string, Endpoint[]>();
    const peers = new Map<string, Map<string, TargetAddress>>();
    let cluster: ClusterInfo | undefined;
    const registered: TargetAddress[] = [];
    for (const entry of this.#mirror.entries.values()) {
      switch (entry.kind) {
        case 'cluster':
          cluster = entry.value;
          break;
        case 'controller': {
          const { address, port } = entry.value;
          registered.push({ address, port });
          break;
        }
        case 'service': {
          const spec = entry.value;
          const id = `${spec.namespace}/${spec.name}`;
          const existing = services.get(id);
          services.set(id, { spec, exported: spec.exported || (existing?.exported ?? false) });
          break;
        }
        case 'exported-service': {
          const exported = entry.value;
          const id = `${exported.service.namespace}/${exported.service.name}`;
          const existing = services.get(id);
          services.set(id, { spec: existing?.spec ?? exported.service, exported: true });
          break;
        }
        case 'endpoint': {
          const endpoint = entry.value;
          if (endpoint.cluster !== this.#o.cluster) break;
          const id = `${endpoint.namespace}/${endpoint.service}`;
          let list = endpoints.get(id);
          if (list === undefined) endpoints.set(id, (list = []));
          list.push(endpoint);
          break;
        }
        case 'imported-service': {
          const imported = entry.value;
          let gateways = peers.get(imported.peer);
          if (gateways === undefined) peers.set(imported.peer, (gateways = new Map()));
          for (const g of imported.gateways) gateways.set(`${g.address}:${g.port}`, g);
          break;
        }
        default:
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
    const controllers = registered.length > 0 ? registered : cluster?.controllers.length ? cluster.controllers : (this.#o.controllers ?? []);
    return {
      cluster: this.#o.cluster,
      trustDomain: this.#o.trustDomain,
      services: serviceRoutes,
      peerClusters: [...peers].map(([name, gateways]) => ({ name, gateways: [...gateways.values()] })),
      controllers,
      ...(this.#o.exportStore ? { exportStore: this.#o.exportStore } : {}),
    };
  }

  #apply(): void {
    if (this.#closed) return;
    this.#o.onRoutes(this.routeSpec());
    this.#synced = true;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#mirror.close();
  }
}

/** `https://exports-east:2479` → `{ address: 'exports-east', port: 2479 }`: where the gateway sends the export-store SNI. */
export function exportStoreTargets(config: ClusterConfig): TargetAddress[] | undefined {
  return config.exportStore?.endpoints.map((endpoint) => {
    const url = new URL(endpoint);
    return { address: url.hostname.replace(/^\[|\]$/g, ''), port: url.port === '' ? 443 : Number(url.port) };
  });
}

export interface GatewayRegistrationOptions {
  readonly store: EtcdStore;
  readonly gateway: Omit<Gateway, 'schema'>;
  readonly ttlSeconds?: number;
  readonly logger?: Logger;
}

/**
 * Keeps `/causeway/v1/gateways/<id>` on a lease while the gateway runs (the store's
 * {@link LeasedKey}: registered again when the lease is lost — etcd restarted, a long
 * partition).
 */
export class GatewayRegistration {
  readonly #key: LeasedKey;
  readonly key: string;

  constructor(options: GatewayRegistrationOptions) {
    const key = (this.key = EtcdKeys.gateway(options.gateway.id));
    this.#key = new LeasedKey({
      store: options.store,
      key,
      ttlSeconds: options.ttlSeconds ?? 10,
      value: () => encodeCatalogValue(Gateway, key, { schema: 1, ...options.gateway }),
      logger: options.logger ?? moduleLogger('gateway-registration', { key }),
    });
  }

  async start(): Promise<void> {
    await this.#key.start();
  }

  /** Revokes the lease so peers stop routing here before the drain ends. */
  async close(): Promise<void> {
    await this.#key.close().catch(() => undefined);
  }
}
