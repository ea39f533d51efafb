import { Agent, createServer as createHttpServer, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { listenOn, type Logger, type ServicePort, type Snapshot, type SnapshotService, type SnapshotTarget, type TrafficPolicy } from '../mesh/index.js';
import { LoopbackAddressAllocator } from './address-allocator.js';
import type { SidecarTuning } from './config.js';
import { ProxyError, ProxyErrorCodes, UpstreamConnectError } from './errors.js';
import { DownstreamConnection, REQUEST_BUFFER_BYTES, UpstreamPool, type BufferedRequest, type DownstreamHandler } from './http1-relay.js';
import { IDEMPOTENT, OutboundExchange, outlierSettings, type Circuit, type OutboundExchangeHost } from './outbound-exchange.js';
import { APP_RESET, APP_UNAVAILABLE, IDLE_KEEPALIVE_MS } from './wire.js';
import type { SidecarMetrics } from './metrics.js';
import { OutlierDetector, pickSubset, planTargets, targetKey } from './target-balancer.js';
import { connectTarget, dialTarget, sniFor, type UpstreamRoute } from './upstream-connector.js';
import type { WorkloadIdentity } from './workload-identity.js';
import type { OutboundRangeClaim } from './outbound-range.js';

/** One outbound listener: a loopback address and port standing for a mesh service port. */
export interface OutboundListenerSpec {
  readonly address: string;
  readonly port: number;
  readonly namespace: string;
  readonly service: string;
  readonly servicePort: number;
  /** Set for `<svc>.<ns>.svc.<cluster>.<domain>` addresses and explicit upstreams pinned to a cluster. */
  readonly pinnedCluster: string | undefined;
  /** True for `upstreams:` entries from the config (listen even before the service is known). */
  readonly explicit: boolean;
}

export interface OutboundDeps {
  readonly tuning: SidecarTuning;
  readonly identity: WorkloadIdentity;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  /** Own cluster and `<svc>.<ns>`, for metric labels. */
  readonly sourceCluster: string;
  readonly sourceService: string;
  readonly upstreams: readonly { service: string; port: number; localPort: number; localAddress: string }[];
  /** The claimed outbound range service addresses come from (see outbound-range.ts). */
  readonly range: OutboundRangeClaim;
}

/** How often listeners that could not bind are tried again. */
const REBIND_INTERVAL_MS = 5_000;

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate']);
const POOLED_IDLE_MS = 60_000;
/**
 * Pooled mTLS connections per target and route. A burst queues in the pool instead of
 * opening a handshake per request: on a CPU-starved host, hundreds of simultaneous
 * handshakes time out together and each retry adds more (seen in bench:mesh).
 */
const MAX_CONNECTIONS_PER_TARGET = 64;

interface RoutedPlan {
  route: UpstreamRoute;
  policy: TrafficPolicy | undefined;
  /** Targets to try, in order. */
  plan: SnapshotTarget[];
}

function serviceKey(namespace: string, service: string): string {
  return `${namespace}/${service}`;
}

function listenerKey(address: string, port: number): string {
  return `${address}:${port}`;
}

/**
 * The app-facing side: loopback listeners per mesh service port (and explicit
 * upstreams), each forwarding over mTLS to a target chosen by locality, health and
 * policy, with retries on the next target, outlier ejection and a circuit breaker.
 * HTTP ports are proxied per request (pooled upstream connections, 5xx seen by outlier
 * detection, safe requests retried after a reset); other ports per connection.
 */
export class OutboundProxy {
  readonly #deps: OutboundDeps;
  /** Access logging costs an object per request: decided once, not per request. */
  readonly #accessLog: boolean;
  readonly #allocator: LoopbackAddressAllocator;
  readonly #outliers: OutlierDetector;
  #snapshot: Snapshot | undefined;
  #services = new Map<string, SnapshotService>();
  #policies = new Map<string, TrafficPolicy>();
  readonly #listeners = new Map<string, { spec: OutboundListenerSpec; server: TcpServer | HttpServer; protocol: 'http' | 'tcp'; ready: Promise<void>; bound: boolean }>();
  /**
   * Listeners the last reconcile wanted but could not bind, with the reason: the sidecar
   * is not ready while any is here, and DNS answers none of their addresses.
   */
  readonly #unbound = new Map<string, { spec: OutboundListenerSpec; reason: string }>();
  #rebindTimer: NodeJS.Timeout | undefined;
  #wanted = new Map<string, OutboundListenerSpec>();
  #reconciling: Promise<void> = Promise.resolve();
  readonly #agents = new Map<string, TargetAgent>();
  /** Fast-path connection pools, keyed like the agents (target and SNI). */
  readonly #pools = new Map<string, { pool: UpstreamPool; target: SnapshotTarget }>();
  /** The last pool used per target object of the current snapshot (a new snapshot brings new objects). */
  #poolsByTarget = new WeakMap<SnapshotTarget, { route: SnapshotService; port: number; subset: string | undefined; pool: UpstreamPool }>();
  /** Node's HTTP server per listener, for connections the fast path hands off (HTTP/1.0, Upgrade, large bodies…). */
  readonly #fallbacks = new Map<string, HttpServer>();
  readonly #circuits = new Map<string, Circuit>();
  /** Connect failures already counted (see #recordConnectFailure). */
  readonly #recordedFailures = new WeakSet<object>();
  readonly #downstreams = new Set<Socket>();
  #closed = false;
  #httpProxy: HttpServer | undefined;
  readonly #exchangeHost: OutboundExchangeHost;

  constructor(deps: OutboundDeps) {
    this.#deps = deps;
    this.#accessLog = deps.tuning.accessLog && deps.log.isLevelEnabled('debug');
    this.#allocator = new LoopbackAddressAllocator(deps.range.cidr);
    this.#outliers = new OutlierDetector(deps.tuning.outlier, (key, reason, ms) => {
      deps.metrics.outlierEjections.inc({ destination_cluster: this.#clusterOfKey(key), reason });
      deps.log.info({ target: key, reason, ejectionMs: ms }, 'target ejected by outlier detection');
    });
    this.#exchangeHost = {
      metrics: deps.metrics,
      log: deps.log,
      accessLog: this.#accessLog,
      sourceCluster: deps.sourceCluster,
      sourceService: deps.sourceService,
      outliers: this.#outliers,
      pool: (target, route, connectTimeoutMs) => this.#poolFor(target, route, connectTimeoutMs),
      connectFailed: (target, route, error, policy) => this.#recordConnectFailure(target, route, error, policy),
    };
  }

  get outliers(): OutlierDetector {
    return this.#outliers;
  }

  /** The loopback address of a service (optionally pinned to a cluster), if the snapshot has it. */
  lookup(namespace: string, service: string, cluster?: string): { address: string; ports: readonly ServicePort[] } | undefined {
    const svc = this.#services.get(serviceKey(namespace, service));
    if (!svc || svc.ports.length === 0) return undefined;
    if (cluster !== undefined && !svc.targets.some((t) => t.cluster === cluster)) return undefined;
    const address = this.#allocator.lookup(cluster ? `${serviceKey(namespace, service)}@${cluster}` : serviceKey(namespace, service));
    if (!address) return undefined;
    // Never hand out an address whose listeners this sidecar does not hold: another
    // process there would receive the app's traffic (and send it with its identity).
    for (const p of svc.ports) if (!this.#listeners.get(listenerKey(address, p.port))?.bound) return undefined;
    return { address, ports: svc.ports };
  }

  /** Readiness reasons: outbound listeners that could not bind, naming the setting to change. */
  problems(): string[] {
    return [...this.#unbound.values()].map(({ spec, reason }) => `outbound listener ${spec.address}:${spec.port} for ${spec.service}.${spec.namespace} is not bound: ${reason}`);
  }

  listeners(): OutboundListenerSpec[] {
    return [...this.#listeners.values()].map((l) => l.spec);
  }

  /** Applies a snapshot: routes change at once; listeners for new services open, for vanished ones close. */
  async apply(snapshot: Snapshot): Promise<void> {
    this.#snapshot = snapshot;
    this.#services = new Map(snapshot.services.map((s) => [serviceKey(s.namespace, s.name), s]));
    this.#policies = new Map(snapshot.traffic.map((p) => [serviceKey(p.namespace, p.service), p]));
    const wanted = new Map<string, OutboundListenerSpec>();
    for (const svc of snapshot.services) {
      const keys: [string, string | undefined][] = [[serviceKey(svc.namespace, svc.name), undefined]];
      for (const cluster of new Set(svc.targets.map((t) => t.cluster))) keys.push([`${serviceKey(svc.namespace, svc.name)}@${cluster}`, cluster]);
      for (const [key, pinnedCluster] of keys) {
        let address: string;
        try {
          address = this.#allocator.addressFor(key);
        } catch (error) {
          this.#deps.log.error({ err: error, service: key }, 'no outbound address for service');
          continue;
        }
        for (const p of svc.ports) {
          wanted.set(listenerKey(address, p.port), { address, port: p.port, namespace: svc.namespace, service: svc.name, servicePort: p.port, pinnedCluster, explicit: false });
        }
      }
    }
    for (const up of this.#deps.upstreams) {
      const [service = '', namespace = ''] = up.service.split('.');
      wanted.set(listenerKey(up.localAddress, up.localPort), { address: up.localAddress, port: up.localPort, namespace, service, servicePort: up.port, pinnedCluster: undefined, explicit: true });
    }
    await this.#reconcile(wanted);
    const live = new Set<string>();
    for (const svc of snapshot.services) for (const t of svc.targets) live.add(targetKey(t));
    this.#outliers.retain(live);
    for (const [key, agent] of this.#agents) {
      if (!live.has(targetKey(agent.target))) {
        agent.destroy();
        this.#agents.delete(key);
      }
    }
    for (const [key, entry] of this.#pools) {
      if (!live.has(targetKey(entry.target))) {
        entry.pool.destroy();
        this.#pools.delete(key);
      }
    }
    this.#poolsByTarget = new WeakMap();
  }

  /** Opens the explicit upstream listeners before any snapshot, so apps can connect early (they wait for a route). */
  async startExplicit(): Promise<void> {
    const wanted = new Map<string, OutboundListenerSpec>();
    for (const up of this.#deps.upstreams) {
      const [service = '', namespace = ''] = up.service.split('.');
      wanted.set(listenerKey(up.localAddress, up.localPort), { address: up.localAddress, port: up.localPort, namespace, service, servicePort: up.port, pinnedCluster: undefined, explicit: true });
    }
    for (const [key, l] of this.#listeners) if (!wanted.has(key)) wanted.set(key, l.spec);
    await this.#reconcile(wanted);
  }

  /**
   * The optional outbound HTTP proxy (15001) for apps that honour `HTTP_PROXY`: requests in
   * absolute form and CONNECT tunnels to `<svc>.<ns>.svc[.<cluster>].<domain>:<port>` (or
   * `<svc>.<ns>:<port>`) go the same way as through the loopback listeners; any other
   * host is refused with 403, since the sidecar only routes inside the mesh.
   */
  async startHttpProxy(host: string, port: number, resolveHost: (hostname: string) => { namespace: string; service: string; cluster: string | undefined } | undefined): Promise<number> {
    const specFor = (authority: string | undefined, defaultPort: number): OutboundListenerSpec | undefined => {
      if (!authority) return undefined;
      const match = /^([^:]+)(?::(\d+))?$/.exec(authority);
      if (!match) return undefined;
      const target = resolveHost(match[1]!);
      if (!target) return undefined;
      const servicePort = Number(match[2] ?? defaultPort);
      return { address: host, port, namespace: target.namespace, service: target.service, servicePort, pinnedCluster: target.cluster, explicit: true };
    };
    const server = createHttpServer({ keepAlive: true, noDelay: true, requestTimeout: 0, keepAliveTimeout: IDLE_KEEPALIVE_MS }, (req, res) => {
      let authority: string | undefined;
      try {
        authority = req.url?.startsWith('/') ? req.headers.host : new URL(req.url ?? '').host;
      } catch {
        authority = undefined;
      }
      const spec = specFor(authority, 80);
      if (!spec) {
        req.resume();
        res.writeHead(403, { 'content-type': 'text/plain', 'x-causeway-error': ProxyErrorCodes.unknownService }).end(`${authority ?? '(no host)'} is not a mesh service name\n`);
        return;
      }
      void this.#proxyHttp(req, res, spec);
    });
    server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', () => {});
      const spec = specFor(req.url, 443);
      if (!spec) {
        socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
        return;
      }
      const downstream = socket as Socket;
      downstream.pause();
      if (head.length > 0) downstream.unshift(head);
      downstream.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      void this.#proxyTcp(downstream, spec);
    });
    server.on('clientError', (_error, socket: Duplex) => socket.destroy());
    const bound = await listenOn(server, { host, port }, { setting: 'sidecar.httpProxy.port' });
    this.#httpProxy = server;
    return bound.port;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#rebindTimer);
    this.#httpProxy?.closeAllConnections();
    this.#httpProxy?.close();
    const closing = [...this.#listeners.values()].map((l) => new Promise<void>((resolve) => l.server.close(() => resolve())));
    this.#listeners.clear();
    for (const socket of this.#downstreams) socket.destroy();
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
    for (const entry of this.#pools.values()) entry.pool.destroy();
    this.#pools.clear();
    for (const server of this.#fallbacks.values()) server.closeAllConnections();
    this.#fallbacks.clear();
    await Promise.all(closing);
  }

  /** Reconciles one at a time: a rebind tick and a snapshot must not both open the same listener. */
  #reconcile(wanted: Map<string, OutboundListenerSpec>): Promise<void> {
    const run = this.#reconciling.then(() => this.#reconcileNow(wanted));
    this.#reconciling = run.catch(() => {});
    return run;
  }

  async #reconcileNow(wanted: Map<string, OutboundListenerSpec>): Promise<void> {
    this.#wanted = wanted;
    for (const [key, current] of this.#listeners) {
      const next = wanted.get(key);
      const protocol = next ? this.#protocolOf(next) : undefined;
      if (!next || protocol !== current.protocol || next.service !== current.spec.service || next.namespace !== current.spec.namespace) {
        // Stop accepting; connections already open finish normally.
        current.server.close();
        this.#listeners.delete(key);
        this.#fallbacks.delete(key);
      } else if (next) {
        current.spec = next;
      }
    }
    for (const key of this.#unbound.keys()) if (!wanted.has(key)) this.#unbound.delete(key);
    // Addresses from the range must lie in a /24 this sidecar holds; explicit upstreams are the user's own choice.
    const refused = await this.#deps.range.ensureClaimed([...wanted.values()].filter((spec) => !spec.explicit).map((spec) => spec.address));
    const opening: Promise<void>[] = [];
    for (const [key, spec] of wanted) {
      if (this.#listeners.has(key) || this.#closed) continue;
      const blocked = spec.explicit ? undefined : refused.get(spec.address);
      if (blocked) {
        this.#unbound.set(key, { spec, reason: blocked });
        continue;
      }
      const protocol = this.#protocolOf(spec);
      const server = protocol === 'http' ? this.#httpListener(key) : this.#tcpServer(key);
      const entry = { spec, server, protocol, ready: Promise.resolve(), bound: false };
      entry.ready = new Promise<void>((resolve) => {
        server.once('error', (error: NodeJS.ErrnoException) => {
          const setting = spec.explicit ? 'upstreams[].localAddress/localPort' : 'sidecar.outboundRange';
          const reason = `${error.code ?? 'error'}: ${error.message} (another process on this host holds ${spec.address}:${spec.port}; change ${setting}${spec.explicit ? '' : ' or stop the program listening on that port on every address'})`;
          if (!this.#unbound.has(key)) this.#deps.log.error({ err: error, address: spec.address, port: spec.port, service: `${spec.service}.${spec.namespace}` }, 'outbound listener failed to bind; the sidecar is not ready until it does');
          this.#unbound.set(key, { spec, reason });
          if (this.#listeners.get(key) === entry) this.#listeners.delete(key);
          resolve();
        });
        server.listen({ host: spec.address, port: spec.port }, () => {
          entry.bound = true;
          this.#unbound.delete(key);
          resolve();
        });
      });
      this.#listeners.set(key, entry);
      opening.push(entry.ready);
    }
    await Promise.all(opening);
    this.#scheduleRebind();
  }

  /** While some listener could not bind, tries again now and then: the other holder may go away. */
  #scheduleRebind(): void {
    if (this.#unbound.size === 0 || this.#closed || this.#rebindTimer) return;
    this.#rebindTimer = setTimeout(() => {
      this.#rebindTimer = undefined;
      if (this.#closed || this.#unbound.size === 0) return;
      void this.#reconcile(new Map(this.#wanted)).catch((error: unknown) => this.#deps.log.warn({ err: error }, 'rebinding outbound listeners failed'));
    }, REBIND_INTERVAL_MS);
    this.#rebindTimer.unref();
  }

  #protocolOf(spec: OutboundListenerSpec): 'http' | 'tcp' {
    const svc = this.#services.get(serviceKey(spec.namespace, spec.service));
    const port = svc?.ports.find((p) => p.port === spec.servicePort);
    return port?.protocol === 'http' ? 'http' : 'tcp';
  }

  #specOf(key: string): OutboundListenerSpec | undefined {
    return this.#listeners.get(key)?.spec;
  }

  #clusterOfKey(key: string): string {
    for (const svc of this.#services.values()) for (const t of svc.targets) if (targetKey(t) === key) return t.cluster;
    return 'unknown';
  }

  #route(spec: OutboundListenerSpec): { route: UpstreamRoute; policy: TrafficPolicy | undefined } {
    const svc = this.#services.get(serviceKey(spec.namespace, spec.service));
    if (!svc || !this.#snapshot) {
      throw new ProxyError(ProxyErrorCodes.unknownService, `${spec.service}.${spec.namespace} is not in the mesh catalog this sidecar has (yet); check the name and that the service is exported to this cluster`);
    }
    if (!svc.ports.some((p) => p.port === spec.servicePort)) {
      throw new ProxyError(ProxyErrorCodes.unknownService, `${spec.service}.${spec.namespace} has no port ${spec.servicePort}`);
    }
    const policy = this.#policies.get(serviceKey(spec.namespace, spec.service));
    const subset = pickSubset(policy?.split);
    if (subset !== undefined && svc.subsets[subset] === undefined) {
      throw new ProxyError(ProxyErrorCodes.noHealthyTarget, `traffic policy ${policy!.name} sends ${spec.service}.${spec.namespace} to subset ${subset}, which the service does not define (it has: ${Object.keys(svc.subsets).join(', ') || 'none'}); fix the policy's split or the service's subsets`);
    }
    return { route: { service: svc, servicePort: spec.servicePort, subset, trustDomain: this.#snapshot.trustDomain }, policy };
  }

  /** The route of a listener and the targets to try, in order; throws a ProxyError when there is none. */
  #routeAndPlan(spec: OutboundListenerSpec): RoutedPlan {
    const { route, policy } = this.#route(spec);
    return { route, policy, plan: this.#plan(spec, route, policy) };
  }

  #plan(spec: OutboundListenerSpec, route: UpstreamRoute, policy: TrafficPolicy | undefined): SnapshotTarget[] {
    const plan = planTargets(route.service, this.#outliers, { pinnedCluster: spec.pinnedCluster, subset: route.subset, policy });
    if (plan.length === 0) {
      throw new ProxyError(ProxyErrorCodes.noHealthyTarget, `${spec.service}.${spec.namespace}${route.subset ? ` subset ${route.subset}` : ''}${spec.pinnedCluster ? ` in cluster ${spec.pinnedCluster}` : ''} has no healthy, non-stale target`);
    }
    return plan;
  }

  #circuit(spec: OutboundListenerSpec): Circuit {
    const key = serviceKey(spec.namespace, spec.service);
    let c = this.#circuits.get(key);
    if (!c) this.#circuits.set(key, (c = { active: 0, pending: 0 }));
    return c;
  }

  #recordConnectFailure(target: SnapshotTarget, route: UpstreamRoute, error: unknown, policy: TrafficPolicy | undefined): void {
    // One failed connect can fail several requests queued at the pool (UpstreamPool): it
    // counts once, as one attempt and one outlier failure.
    if (typeof error === 'object' && error !== null) {
      if (this.#recordedFailures.has(error)) return;
      this.#recordedFailures.add(error);
    }
    const code = error instanceof UpstreamConnectError ? error.code : ProxyErrorCodes.connectFailed;
    const labels = { destination_cluster: target.cluster, destination_service: `${route.service.name}.${route.service.namespace}`, kind: target.kind };
    this.#deps.metrics.connectAttempts.inc({ ...labels, result: code });
    if (code === ProxyErrorCodes.secureNaming) {
      this.#deps.metrics.secureNamingRefusals.inc({ destination_service: labels.destination_service });
      this.#deps.log.warn({ target: targetKey(target), sni: sniFor(route, target), reason: (error as Error).message }, 'secure naming: server identity not allowed for the service; connection refused');
    }
    this.#outliers.failure(targetKey(target), code === ProxyErrorCodes.connectFailed || code === ProxyErrorCodes.connectTimeout ? 'connect' : 'handshake', outlierSettings(policy));
  }

  // ---------------------------------------------------------------- TCP

  #tcpServer(key: string): TcpServer {
    const server = createTcpServer({ allowHalfOpen: false, pauseOnConnect: true, noDelay: true }, (socket) => {
      const spec = this.#specOf(key);
      if (!spec) return socket.destroy();
      void this.#proxyTcp(socket, spec);
    });
    return server;
  }

  async #proxyTcp(downstream: Socket, spec: OutboundListenerSpec): Promise<void> {
    const started = performance.now();
    this.#downstreams.add(downstream);
    this.#deps.metrics.activeConnections.inc({ direction: 'outbound' });
    downstream.on('error', () => {});
    let upstream: TLSSocket | undefined;
    let target: SnapshotTarget | undefined;
    const serviceLabel = `${spec.service}.${spec.namespace}`;
    const finish = (result: string) => {
      this.#downstreams.delete(downstream);
      this.#deps.metrics.activeConnections.dec({ direction: 'outbound' });
      const cluster = target?.cluster ?? 'none';
      this.#deps.metrics.connections.inc({ direction: 'outbound', source_cluster: this.#deps.sourceCluster, source_service: this.#deps.sourceService, destination_cluster: cluster, destination_service: serviceLabel, result });
      this.#deps.metrics.connectionSeconds.observe({ direction: 'outbound', destination_cluster: cluster, destination_service: serviceLabel }, (performance.now() - started) / 1000);
      if (upstream) {
        this.#deps.metrics.bytes.inc({ direction: 'outbound', destination_cluster: cluster, destination_service: serviceLabel, flow: 'sent' }, upstream.bytesWritten);
        this.#deps.metrics.bytes.inc({ direction: 'outbound', destination_cluster: cluster, destination_service: serviceLabel, flow: 'received' }, upstream.bytesRead);
      }
      if (this.#accessLog) this.#deps.log.debug({ direction: 'outbound', service: serviceLabel, target: target && targetKey(target), cluster, result, ms: Math.round(performance.now() - started) }, 'connection');
    };
    try {
      ({ socket: upstream, target } = await this.#connectWithRetries(spec));
    } catch (error) {
      downstream.destroy();
      finish(error instanceof ProxyError ? error.code : 'error');
      return;
    }
    if (downstream.destroyed) {
      upstream.destroy();
      finish('downstream_closed');
      return;
    }
    const circuit = this.#circuit(spec);
    circuit.active++;
    let closed = 0;
    const onClose = () => {
      if (++closed === 2) {
        circuit.active--;
        finish('ok');
      }
      downstream.destroy();
      upstream!.destroy();
    };
    upstream.on('error', () => {}).once('close', onClose);
    downstream.once('close', onClose);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    downstream.resume();
  }

  async #connectWithRetries(spec: OutboundListenerSpec): Promise<{ socket: TLSSocket; target: SnapshotTarget }> {
    const { route, policy } = this.#route(spec);
    const plan = this.#plan(spec, route, policy);
    const circuit = this.#circuit(spec);
    if (circuit.active >= this.#deps.tuning.circuit.maxConnections || circuit.pending >= this.#deps.tuning.circuit.maxPendingConnects) {
      throw new ProxyError(ProxyErrorCodes.circuitOpen, `${spec.service}.${spec.namespace}: circuit open (${circuit.active} connections, ${circuit.pending} pending connects)`);
    }
    const attempts = Math.min(plan.length, policy?.retries !== undefined ? policy.retries + 1 : this.#deps.tuning.maxAttempts);
    let lastError: unknown;
    for (let i = 0; i < attempts; i++) {
      const target = plan[i]!;
      circuit.pending++;
      try {
        const socket = await connectTarget(target, route, { connectTimeoutMs: policy?.connectTimeoutMs ?? this.#deps.tuning.connectTimeoutMs, identity: this.#deps.identity });
        this.#deps.metrics.connectAttempts.inc({ destination_cluster: target.cluster, destination_service: `${spec.service}.${spec.namespace}`, kind: target.kind, result: 'ok' });
        this.#outliers.success(targetKey(target));
        return { socket, target };
      } catch (error) {
        lastError = error;
        this.#recordConnectFailure(target, route, error, policy);
      } finally {
        circuit.pending--;
      }
    }
    throw lastError instanceof ProxyError ? lastError : new ProxyError(ProxyErrorCodes.connectFailed, String(lastError));
  }

  // ---------------------------------------------------------------- HTTP

  /** An HTTP port's listener: the fast path ({@link DownstreamConnection}) per connection. */
  #httpListener(key: string): TcpServer {
    const handler: DownstreamHandler<undefined> = {
      handle: (connection, request) => this.#forwardHttp(connection, request, key),
      handOff: (socket) => {
        this.#fallbackServer(key).emit('connection', socket);
        socket.resume();
      },
    };
    return createTcpServer({ noDelay: true }, (socket) => {
      this.#downstreams.add(socket);
      this.#deps.metrics.activeConnections.inc({ direction: 'outbound' });
      socket.once('close', () => {
        this.#downstreams.delete(socket);
        this.#deps.metrics.activeConnections.dec({ direction: 'outbound' });
      });
      new DownstreamConnection(socket, handler, undefined, IDLE_KEEPALIVE_MS);
    });
  }

  /** Node's HTTP server for connections the fast path hands over (never listening itself). */
  #fallbackServer(key: string): HttpServer {
    let server = this.#fallbacks.get(key);
    if (server) return server;
    server = createHttpServer({ keepAlive: true, noDelay: true, requestTimeout: 0, keepAliveTimeout: IDLE_KEEPALIVE_MS }, (req, res) => {
      const spec = this.#specOf(key);
      if (!spec) {
        res.writeHead(503).end();
        return;
      }
      void this.#proxyHttp(req, res, spec);
    });
    // A bad request from the app closes its connection; it never reaches the process.
    server.on('clientError', (_error, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      else socket.destroy();
    });
    this.#fallbacks.set(key, server);
    return server;
  }

  #poolFor(target: SnapshotTarget, route: UpstreamRoute, connectTimeoutMs: number): UpstreamPool {
    // Per request: found through the target object first (no key string to build).
    const cached = this.#poolsByTarget.get(target);
    if (cached && cached.route === route.service && cached.port === route.servicePort && cached.subset === route.subset) return cached.pool;
    const key = upstreamKey(target, route);
    let entry = this.#pools.get(key);
    if (!entry) {
      const { labels, bytes } = upstreamLabels(target, route);
      const dial = () =>
        connectTarget(target, route, { identity: this.#deps.identity, connectTimeoutMs }).then((socket) => {
          this.#deps.metrics.connectAttempts.inc(labels);
          // Pooled connections carry many requests: their bytes are counted when they close.
          socket.once('close', () => {
            this.#deps.metrics.bytes.inc({ ...bytes, flow: 'sent' }, socket.bytesWritten);
            this.#deps.metrics.bytes.inc({ ...bytes, flow: 'received' }, socket.bytesRead);
          });
          return socket;
        });
      entry = { pool: new UpstreamPool(dial, { max: MAX_CONNECTIONS_PER_TARGET, idleMs: POOLED_IDLE_MS }), target };
      this.#pools.set(key, entry);
    }
    this.#poolsByTarget.set(target, { route: route.service, port: route.servicePort, subset: route.subset, pool: entry.pool });
    return entry.pool;
  }

  /** One request on the fast path (see {@link OutboundExchange}). */
  #forwardHttp(connection: DownstreamConnection<undefined>, request: BufferedRequest, key: string): void {
    const spec = this.#specOf(key);
    if (!spec) {
      new OutboundExchange(this.#exchangeHost, connection, request, 'unknown', undefined, undefined).refuse(new ProxyError(ProxyErrorCodes.unknownService, 'this listener no longer stands for a mesh service'));
      return;
    }
    const serviceLabel = `${spec.service}.${spec.namespace}`;
    let routed: RoutedPlan;
    try {
      routed = this.#routeAndPlan(spec);
    } catch (error) {
      new OutboundExchange(this.#exchangeHost, connection, request, serviceLabel, undefined, undefined).refuse(error);
      return;
    }
    // Circuit breaker for HTTP: requests in flight to the service stand for its connections.
    const circuit = this.#circuit(spec);
    if (circuit.active >= this.#deps.tuning.circuit.maxConnections) {
      new OutboundExchange(this.#exchangeHost, connection, request, serviceLabel, undefined, undefined).refuse(new ProxyError(ProxyErrorCodes.circuitOpen, `${serviceLabel}: circuit open (${circuit.active} requests in flight)`));
      return;
    }
    circuit.active++;
    const { route, policy, plan } = routed;
    const attempts = Math.min(plan.length, policy?.retries !== undefined ? policy.retries + 1 : this.#deps.tuning.maxAttempts);
    const connectTimeoutMs = policy?.connectTimeoutMs ?? this.#deps.tuning.connectTimeoutMs;
    new OutboundExchange(this.#exchangeHost, connection, request, serviceLabel, circuit, { route, policy, plan, attempts, connectTimeoutMs }).start();
  }

  #agentFor(target: SnapshotTarget, route: UpstreamRoute, connectTimeoutMs: number): TargetAgent {
    const key = upstreamKey(target, route);
    let agent = this.#agents.get(key);
    if (!agent) {
      const { labels, bytes } = upstreamLabels(target, route);
      agent = new TargetAgent(target, route, {
        identity: this.#deps.identity,
        connectTimeoutMs,
        onConnected: () => this.#deps.metrics.connectAttempts.inc(labels),
        // Pooled connections carry many requests: their bytes are counted when they close.
        onClosed: (socket) => {
          this.#deps.metrics.bytes.inc({ ...bytes, flow: 'sent' }, socket.bytesWritten);
          this.#deps.metrics.bytes.inc({ ...bytes, flow: 'received' }, socket.bytesRead);
        },
      });
      this.#agents.set(key, agent);
    }
    return agent;
  }

  async #proxyHttp(req: IncomingMessage, res: ServerResponse, spec: OutboundListenerSpec): Promise<void> {
    const started = performance.now();
    const serviceLabel = `${spec.service}.${spec.namespace}`;
    let target: SnapshotTarget | undefined;
    const done = (code: number, result: string) => {
      const cluster = target?.cluster ?? 'none';
      this.#deps.metrics.requests.inc({ direction: 'outbound', source_cluster: this.#deps.sourceCluster, source_service: this.#deps.sourceService, destination_cluster: cluster, destination_service: serviceLabel, code: String(code), result });
      this.#deps.metrics.requestSeconds.observe({ direction: 'outbound', destination_cluster: cluster, destination_service: serviceLabel }, (performance.now() - started) / 1000);
      if (this.#accessLog) this.#deps.log.debug({ direction: 'outbound', method: req.method, path: req.url, service: serviceLabel, target: target && targetKey(target), cluster, code, result, ms: Math.round((performance.now() - started) * 100) / 100 }, 'request');
    };
    const fail = (error: unknown) => {
      const code = error instanceof ProxyError ? error.code : 'CW_PROXY_ERROR';
      const status = code === ProxyErrorCodes.connectTimeout ? 504 : code === ProxyErrorCodes.unknownService ? 404 : 503;
      if (!res.headersSent) {
        const body = `${(error as Error).message}\n`;
        res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-causeway-error': code }).end(body);
      } else {
        res.destroy();
      }
      done(status, code);
    };
    let routed: RoutedPlan;
    try {
      routed = this.#routeAndPlan(spec);
    } catch (error) {
      req.resume();
      fail(error);
      return;
    }
    const { route, policy, plan } = routed;
    // Circuit breaker for HTTP: requests in flight to the service stand for its connections.
    const circuit = this.#circuit(spec);
    if (circuit.active >= this.#deps.tuning.circuit.maxConnections) {
      req.resume();
      fail(new ProxyError(ProxyErrorCodes.circuitOpen, `${serviceLabel}: circuit open (${circuit.active} requests in flight)`));
      return;
    }
    circuit.active++;
    res.once('close', () => circuit.active--);
    const body = await bufferBody(req, REQUEST_BUFFER_BYTES);
    if (body === 'aborted') {
      done(499, 'downstream_closed');
      return;
    }
    const headers = forwardHeaders(req.headers);
    if (body instanceof Buffer) headers['content-length'] = body.length;
    const attempts = Math.min(plan.length, policy?.retries !== undefined ? policy.retries + 1 : this.#deps.tuning.maxAttempts);
    const connectTimeoutMs = policy?.connectTimeoutMs ?? this.#deps.tuning.connectTimeoutMs;
    let lastError: unknown;
    for (let i = 0; i < attempts; i++) {
      target = plan[i]!;
      const agent = this.#agentFor(target, route, connectTimeoutMs);
      const outcome = await this.#sendOnce(req, body, headers, agent, policy);
      if ('response' in outcome) {
        const upstreamRes = outcome.response;
        const status = upstreamRes.statusCode ?? 502;
        // The server sidecar answered for an app that is gone: eject it and try the next target.
        const serverSide = status === 503 ? upstreamRes.headers['x-causeway-error'] : undefined;
        const replayable = body instanceof Buffer && (serverSide === APP_UNAVAILABLE || (serverSide === APP_RESET && IDEMPOTENT.has(req.method ?? '')));
        if (replayable && i + 1 < attempts) {
          upstreamRes.resume();
          this.#outliers.failure(targetKey(target), 'connect', outlierSettings(policy));
          lastError = new ProxyError(ProxyErrorCodes.upstreamReset, `${serviceLabel}: ${String(serverSide)} from ${targetKey(target)}`);
          continue;
        }
        if (status >= 500) this.#outliers.failure(targetKey(target), 'http-5xx', outlierSettings(policy));
        else this.#outliers.success(targetKey(target));
        res.writeHead(status, upstreamRes.statusMessage, forwardHeaders(upstreamRes.headers));
        upstreamRes.pipe(res);
        upstreamRes.once('error', () => res.destroy());
        res.once('close', () => {
          if (!upstreamRes.complete) upstreamRes.destroy();
          done(status, upstreamRes.complete ? 'ok' : 'incomplete');
        });
        return;
      }
      lastError = outcome.error;
      const error = outcome.error;
      if (error instanceof UpstreamConnectError) {
        this.#recordConnectFailure(target, route, error, policy);
        continue;
      }
      // The request reached the target but no response came (the target died or reset).
      this.#outliers.failure(targetKey(target), 'connect', outlierSettings(policy));
      const replayable = body instanceof Buffer && (IDEMPOTENT.has(req.method ?? '') || outcome.reusedSocket);
      if (!replayable || outcome.timedOut) break;
    }
    fail(lastError instanceof ProxyError ? lastError : new ProxyError(ProxyErrorCodes.upstreamReset, `${serviceLabel}: ${(lastError as Error)?.message ?? 'no response'}`, { cause: lastError }));
  }

  #sendOnce(
    req: IncomingMessage,
    body: Buffer | 'stream',
    headers: OutgoingHttpHeaders,
    agent: TargetAgent,
    policy: TrafficPolicy | undefined,
  ): Promise<{ response: IncomingMessage } | { error: unknown; reusedSocket: boolean; timedOut: boolean }> {
    return new Promise((resolve) => {
      let timedOut = false;
      const upstreamReq = httpRequest({ agent, method: req.method, path: pathOf(req.url), headers, setHost: false });
      upstreamReq.once('response', (response) => {
        if (timer) clearTimeout(timer);
        resolve({ response });
      });
      upstreamReq.once('error', (error) => {
        if (timer) clearTimeout(timer);
        resolve({ error, reusedSocket: upstreamReq.reusedSocket, timedOut });
      });
      const timer = policy?.requestTimeoutMs
        ? setTimeout(() => {
            timedOut = true;
            upstreamReq.destroy(new ProxyError(ProxyErrorCodes.connectTimeout, `no response within ${policy.requestTimeoutMs} ms (traffic policy requestTimeoutMs)`));
          }, policy.requestTimeoutMs)
        : undefined;
      if (body === 'stream') {
        req.pipe(upstreamReq);
        req.resume();
      } else if (body.length === 0) {
        // end() without a chunk sends the head as one string: one TLS write instead of a writev of two.
        upstreamReq.end();
      } else upstreamReq.end(body);
    });
  }
}

interface TargetAgentOptions {
  identity: WorkloadIdentity;
  connectTimeoutMs: number;
  onConnected: () => void;
  onClosed: (socket: TLSSocket) => void;
}

/**
 * An http.Agent for one target and SNI: pooled keep-alive mTLS connections, each made
 * by {@link dialTarget} (so secure naming and the connect timeout apply to every one).
 */
class TargetAgent extends Agent {
  readonly target: SnapshotTarget;
  readonly #route: UpstreamRoute;
  readonly #options: TargetAgentOptions;

  constructor(target: SnapshotTarget, route: UpstreamRoute, options: TargetAgentOptions) {
    super({ keepAlive: true, maxSockets: MAX_CONNECTIONS_PER_TARGET, maxFreeSockets: MAX_CONNECTIONS_PER_TARGET, scheduling: 'lifo', timeout: POOLED_IDLE_MS });
    this.target = target;
    this.#route = route;
    this.#options = options;
  }

  override createConnection(): Duplex {
    const socket = dialTarget(this.target, this.#route, this.#options);
    socket.once('secureConnect', this.#options.onConnected);
    socket.once('close', () => this.#options.onClosed(socket));
    return socket;
  }
}

/** Pools and agents are keyed by what the SNI is made of, so the hot path does not re-encode (and re-validate) it. */
function upstreamKey(target: SnapshotTarget, route: UpstreamRoute): string {
  return `${targetKey(target)}|${route.servicePort}|${route.subset ?? ''}|${route.service.name}.${route.service.namespace}|${target.cluster}`;
}

/** Metric labels of one target and route: connect attempts, and bytes of its pooled connections. */
function upstreamLabels(target: SnapshotTarget, route: UpstreamRoute) {
  const destination = `${route.service.name}.${route.service.namespace}`;
  return {
    labels: { destination_cluster: target.cluster, destination_service: destination, kind: target.kind, result: 'ok' },
    bytes: { direction: 'outbound', destination_cluster: target.cluster, destination_service: destination },
  };
}

function forwardHeaders(headers: IncomingMessage['headers']): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  // Runs twice per request: no token set unless the message names extra hop-by-hop headers.
  const connection = headers.connection;
  const connectionTokens =
    connection === undefined || connection === '' || connection === 'keep-alive'
      ? undefined
      : new Set(
          connection
            .toLowerCase()
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean),
        );
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || connectionTokens?.has(name)) continue;
    out[name] = value;
  }
  return out;
}

/** An absolute-form target (`http://host:port/path`, sent to a forward proxy) becomes its origin form. */
function pathOf(url: string | undefined): string {
  if (!url) return '/';
  if (url.startsWith('/')) return url;
  try {
    const parsed = new URL(url);
    return `${parsed.pathname}${parsed.search}`;
  } catch {
    return '/';
  }
}

/** Reads a request body up to `limit` bytes; beyond that the request streams (and cannot be retried). */
function bufferBody(req: IncomingMessage, limit: number): Promise<Buffer | 'stream' | 'aborted'> {
  const length = req.headers['content-length'];
  const hasBody = (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
  if (!hasBody) {
    req.resume();
    return Promise.resolve(Buffer.alloc(0));
  }
  if (length !== undefined && Number(length) > limit) return Promise.resolve('stream');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size > limit) {
        // Too big to keep: put what we have back and stream the rest.
        req.off('data', onData);
        req.off('end', onEnd);
        req.pause();
        req.unshift(Buffer.concat(chunks));
        resolve('stream');
      }
    };
    const onEnd = () => resolve(Buffer.concat(chunks, size));
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('aborted', () => resolve('aborted'));
    req.once('error', () => resolve('aborted'));
  });
}
