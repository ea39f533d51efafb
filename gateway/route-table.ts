import { lowerCaseServerName, tryParseSni, type HealthState } from '../mesh/index.js';

/**
 * The gateway's routing state: which SNI goes to which pool of upstream targets.
 * A table is immutable once built; sources (etcd catalog, routes file) build a new one
 * and swap it in, so established connections never notice a change.
 */

export type Balancer = 'round-robin' | 'least-connections';
export const Balancers: readonly Balancer[] = ['round-robin', 'least-connections'];

/** Why a parsed server name is not routed; also the `reason` label of the refusal metric. */
export type RouteRefusal =
  | 'invalid-sni'
  | 'unknown-sni'
  | 'unknown-service'
  | 'not-exported'
  | 'unknown-port'
  | 'unknown-subset'
  | 'no-healthy-endpoint';

export type RouteKind = 'sni' | 'service' | 'peer-cluster' | 'controller' | 'exports';

export interface TargetAddress {
  readonly address: string;
  readonly port: number;
}

/** One upstream address; shared by every table so least-connections counts survive a table swap. */
export class UpstreamTarget implements TargetAddress {
  /** Connections currently spliced to this target. */
  active = 0;
  constructor(
    readonly address: string,
    readonly port: number,
  ) {}
}

/** Where a route's round-robin goes next; kept across table rebuilds by {@link TargetRegistry.cursor}. */
export interface RoundRobinCursor {
  value: number;
}

/** Cursors kept at most (one per server name routed); past it they start afresh. */
const MAX_CURSORS = 10_000;

/**
 * Hands out one {@link UpstreamTarget} per address, and one round-robin cursor per route,
 * across table rebuilds: a rebuild (any endpoint or health change) must not send the next
 * connections of every route back to its first target.
 */
export class TargetRegistry {
  readonly #targets = new Map<string, UpstreamTarget>();
  readonly #cursors = new Map<string, RoundRobinCursor>();

  get(address: string, port: number): UpstreamTarget {
    const key = `${address}:${port}`;
    let target = this.#targets.get(key);
    if (target === undefined) {
      target = new UpstreamTarget(address, port);
      this.#targets.set(key, target);
    }
    return target;
  }

  /** The cursor of the route `key` (a server name, or a route's name); a new one starts at a random place. */
  cursor(key: string): RoundRobinCursor {
    let cursor = this.#cursors.get(key);
    if (cursor === undefined) {
      if (this.#cursors.size >= MAX_CURSORS) this.#cursors.clear();
      cursor = { value: Math.floor(Math.random() * 1024) };
      this.#cursors.set(key, cursor);
    }
    return cursor;
  }

  /** Forgets targets no table uses and no connection holds. */
  retain(used: ReadonlySet<UpstreamTarget>): void {
    for (const [key, target] of this.#targets) if (target.active === 0 && !used.has(target)) this.#targets.delete(key);
  }
}

export class TargetPool {
  readonly #cursor: RoundRobinCursor;
  constructor(
    readonly targets: readonly UpstreamTarget[],
    readonly balancer: Balancer,
    cursor: RoundRobinCursor = { value: 0 },
  ) {
    this.#cursor = cursor;
  }

  /** The next target, skipping those in `tried`; undefined when none is left. */
  pick(tried: readonly UpstreamTarget[] | undefined): UpstreamTarget | undefined {
    const targets = this.targets;
    const n = targets.length;
    if (n === 0) return undefined;
    const start = this.#cursor.value % n;
    this.#cursor.value = start + 1 >= n ? 0 : start + 1;
    if (this.balancer === 'round-robin') {
      for (let i = 0; i < n; i++) {
        const target = targets[(start + i) % n]!;
        if (tried === undefined || !tried.includes(target)) return target;
      }
      return undefined;
    }
    let best: UpstreamTarget | undefined;
    for (let i = 0; i < n; i++) {
      const target = targets[(start + i) % n]!;
      if (tried !== undefined && tried.includes(target)) continue;
      if (best === undefined || target.active < best.active) best = target;
    }
    return best;
  }
}

/** Counts a route accumulates in plain numbers; the metrics registry reads them on scrape. */
export interface RouteStats {
  ok: number;
  error: number;
  upstreamFailed: number;
}

export interface Route {
  /** Metric label: `<name>.<namespace>`, `cluster/<peer>`, `controller`, `exports`, or the exact SNI. */
  readonly name: string;
  readonly kind: RouteKind;
  readonly pool: TargetPool;
  readonly stats: RouteStats;
}

export interface EndpointSpec extends TargetAddress {
  readonly labels?: Readonly<Record<string, string>>;
  readonly health?: HealthState;
}

export interface ServiceRouteSpec {
  readonly namespace: string;
  readonly name: string;
  /** Only exported services are reachable through the gateway. */
  readonly exported: boolean;
  /** Service ports an SNI may name; undefined accepts any. */
  readonly ports?: readonly number[];
  /** Subset name → label selector. */
  readonly subsets?: Readonly<Record<string, Readonly<Record<string, string>>>>;
  readonly endpoints: readonly EndpointSpec[];
}

export interface RouteTableSpec {
  /** This cluster's name: service SNIs naming it go to local endpoints. */
  readonly cluster?: string;
  /** Only SNIs in this trust domain are routed (exact `sniRoutes` excepted). */
  readonly trustDomain?: string;
  readonly balancer: Balancer;
  /** Exact server names → targets, checked first. */
  readonly sniRoutes?: readonly { readonly sni: string; readonly targets: readonly TargetAddress[] }[];
  readonly services?: readonly ServiceRouteSpec[];
  /** Other clusters' gateways, for SNIs naming those clusters (chained passthrough). */
  readonly peerClusters?: readonly { readonly name: string; readonly gateways: readonly TargetAddress[] }[];
  /** This cluster's controller gRPC addresses, for `controller.<cluster>.cw1.<td>`. */
  readonly controllers?: readonly TargetAddress[];
  /**
   * This cluster's export store (`exportStore.endpoints`), for `exports.<cluster>.cw1.<td>`:
   * peers reach it only this way, TLS passed through like any route (gateway/README.md "Routing").
   */
  readonly exportStore?: readonly TargetAddress[];
}

export type RouteStatsSource = (name: string) => RouteStats;

/** Route cache bound: only successful lookups are cached, so this is services × ports × subsets. */
const MAX_CACHED_ROUTES = 10_000;

interface ServiceEntry {
  readonly spec: ServiceRouteSpec;
  readonly name: string;
}

export class RouteTable {
  readonly #cache = new Map<string, Route>();
  readonly #exact = new Map<string, Route>();
  readonly #services = new Map<string, ServiceEntry>();
  readonly #peers = new Map<string, Route>();
  readonly #controller: Route | undefined;
  readonly #exportStore: Route | undefined;
  /** Every target this table can pick, for {@link TargetRegistry.retain}. */
  readonly targets = new Set<UpstreamTarget>();
  readonly #registry: TargetRegistry;
  readonly #statsFor: RouteStatsSource;

  constructor(
    readonly spec: RouteTableSpec,
    registry: TargetRegistry,
    statsFor: RouteStatsSource,
  ) {
    this.#registry = registry;
    this.#statsFor = statsFor;
    // Server names arrive lower-cased from the hello reader; exact routes are keyed the same way.
    for (const route of spec.sniRoutes ?? []) {
      const sni = lowerCaseServerName(route.sni);
      this.#exact.set(sni, this.#route(sni, 'sni', route.targets));
    }
    for (const service of spec.services ?? []) {
      const name = `${service.name}.${service.namespace}`;
      this.#services.set(`${service.namespace}/${service.name}`, { spec: service, name });
      for (const endpoint of service.endpoints) this.targets.add(registry.get(endpoint.address, endpoint.port));
    }
    for (const peer of spec.peerClusters ?? []) {
      if (peer.name !== spec.cluster && peer.gateways.length > 0) this.#peers.set(peer.name, this.#route(`cluster/${peer.name}`, 'peer-cluster', peer.gateways));
    }
    if (spec.controllers && spec.controllers.length > 0) this.#controller = this.#route('controller', 'controller', spec.controllers);
    if (spec.exportStore && spec.exportStore.length > 0) this.#exportStore = this.#route('exports', 'exports', spec.exportStore);
  }

  /** The exported services' endpoints by health (the `causeway_gateway_service_endpoints` gauge). */
  get endpointsByHealth(): Readonly<Record<HealthState, number>> {
    const counts: Record<HealthState, number> = { healthy: 0, unknown: 0, unhealthy: 0 };
    for (const { spec } of this.#services.values()) {
      if (!spec.exported) continue;
      for (const endpoint of spec.endpoints) counts[endpointHealth(endpoint.health)]++;
    }
    return counts;
  }

  get routeCount(): number {
    return this.#exact.size + this.#services.size + this.#peers.size + (this.#controller ? 1 : 0) + (this.#exportStore ? 1 : 0);
  }

  /** `cursorKey`: what the round-robin position is kept under across rebuilds (the server name of a service route). */
  #route(name: string, kind: RouteKind, addresses: readonly TargetAddress[], cursorKey = name): Route {
    const targets = addresses.map((a) => this.#registry.get(a.address, a.port));
    for (const target of targets) this.targets.add(target);
    return { name, kind, pool: new TargetPool(targets, this.spec.balancer, this.#registry.cursor(cursorKey)), stats: this.#statsFor(name) };
  }

  /** The route for a server name (lower-case, as the ClientHello reader hands it over), or why there is none. */
  resolve(serverName: string): Route | RouteRefusal {
    const cached = this.#cache.get(serverName);
    if (cached !== undefined) return cached;
    const result = this.#lookup(serverName);
    if (typeof result !== 'string') {
      if (this.#cache.size >= MAX_CACHED_ROUTES) this.#cache.clear();
      this.#cache.set(serverName, result);
    }
    return result;
  }

  #lookup(serverName: string): Route | RouteRefusal {
    const exact = this.#exact.get(serverName);
    if (exact !== undefined) return exact;
    const sni = tryParseSni(serverName);
    if (sni instanceof Error) return 'invalid-sni';
    if (this.spec.trustDomain !== undefined && sni.trustDomain !== this.spec.trustDomain) return 'unknown-sni';
    if (sni.cluster !== this.spec.cluster) return this.#peers.get(sni.cluster) ?? 'unknown-sni';
    if (sni.kind === 'controller') return this.#controller ?? 'unknown-sni';
    // No export store configured: its name parses, but there is nowhere to send it.
    if (sni.kind === 'exports') return this.#exportStore ?? 'unknown-sni';
    const entry = this.#services.get(`${sni.namespace}/${sni.service}`);
    if (entry === undefined) return 'unknown-service';
    const service = entry.spec;
    if (!service.exported) return 'not-exported';
    if (service.ports !== undefined && !service.ports.includes(sni.port)) return 'unknown-port';
    let selector: Readonly<Record<string, string>> | undefined;
    if (sni.subset !== undefined) {
      selector = service.subsets?.[sni.subset];
      if (selector === undefined) return 'unknown-subset';
    }
    const endpoints = service.endpoints.filter((e) => selector === undefined || matches(e.labels, selector));
    // Healthy endpoints first; endpoints whose health nobody has checked yet only when none is healthy.
    let usable = endpoints.filter((e) => endpointHealth(e.health) === 'healthy');
    if (usable.length === 0) usable = endpoints.filter((e) => endpointHealth(e.health) === 'unknown');
    if (usable.length === 0) return 'no-healthy-endpoint';
    return this.#route(entry.name, 'service', usable, serverName);
  }
}

/** An endpoint's health as routing reads it: none recorded counts as healthy. */
function endpointHealth(health: HealthState | undefined): HealthState {
  return health ?? 'healthy';
}

function matches(labels: Readonly<Record<string, string>> | undefined, selector: Readonly<Record<string, string>>): boolean {
  for (const key in selector) if (labels?.[key] !== selector[key]) return false;
  return true;
}
