import { Agent } from 'node:http';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { SnapshotTarget } from '../mesh/index.js';
import { H2SessionPool } from './h2-session-pool.js';
import { UpstreamPool } from './http1-relay.js';
import type { SidecarMetrics } from './metrics.js';
import { targetKey } from './target-balancer.js';
import { connectTarget, dialTarget, type UpstreamRoute } from './upstream-connector.js';
import type { WorkloadIdentity } from './workload-identity.js';

const POOLED_IDLE_MS = 60_000;
/**
 * Pooled mTLS connections per target and route. A burst queues in the pool instead of
 * opening a handshake per request: on a CPU-starved host, hundreds of simultaneous
 * handshakes time out together and each retry adds more (seen in bench:mesh).
 */
const MAX_CONNECTIONS_PER_TARGET = 64;
/** Offered on the mTLS hop of HTTP/2 and gRPC ports only: other ports carry the app's bytes as they are. */
const H2_ALPN = ['h2'];

/**
 * The most HTTP/2 sessions to one peer cluster's gateway for one service port: streams
 * then spread over up to this many of its endpoints (the gateway picks one per
 * connection), at the cost of a TLS connection each.
 */
const MAX_SESSIONS_PER_GATEWAY = 8;

export interface TargetConnectionsDeps {
  readonly identity: WorkloadIdentity;
  readonly metrics: SidecarMetrics;
}

/**
 * The connector between the request policy and the relays: the mTLS connections to
 * targets — pooled for the HTTP fast path ({@link UpstreamPool}), pooled in an
 * http.Agent for Node's HTTP server path, one per connection for TCP — each made by
 * {@link dialTarget} (secure naming and the connect timeout apply to every one). A
 * connection that comes up is counted here (`…_upstream_connect_attempts_total` result
 * `ok`) and its bytes when it closes; a failed one is the request policy's to count.
 */
export class TargetConnections {
  readonly #deps: TargetConnectionsDeps;
  /** Fast-path pools, keyed by target and SNI. */
  readonly #pools = new Map<string, { pool: UpstreamPool; target: SnapshotTarget }>();
  /** The last pool used per target object of the current snapshot (a new snapshot brings new objects). */
  #poolsByTarget = new WeakMap<SnapshotTarget, { route: UpstreamRoute['service']; port: number; subset: string | undefined; pool: UpstreamPool }>();
  readonly #agents = new Map<string, TargetAgent>();
  /** HTTP/2 sessions (ALPN h2), one per target and SNI, keyed like the fast-path pools. */
  readonly #sessions = new Map<string, { pool: H2SessionPool; target: SnapshotTarget }>();
  readonly #sessionGauge: { inc(): void; dec(): void };

  constructor(deps: TargetConnectionsDeps) {
    this.#deps = deps;
    const gauge = deps.metrics.h2Sessions;
    this.#sessionGauge = { inc: () => gauge.inc({ direction: 'outbound', peer: 'mesh' }), dec: () => gauge.dec({ direction: 'outbound', peer: 'mesh' }) };
  }

  /**
   * The pooled HTTP/2 session to a target and route (`http2`/`grpc` ports): many streams
   * on one mTLS connection that offered ALPN `h2`. A peer that does not answer ALPN (a
   * sidecar from before HTTP/2 carries such a port as TCP to its app, which speaks h2c)
   * gets the same session: its bytes reach the app unchanged.
   */
  h2Pool(target: SnapshotTarget, route: UpstreamRoute, connectTimeoutMs: number): H2SessionPool {
    const key = upstreamKey(target, route);
    let entry = this.#sessions.get(key);
    if (!entry) {
      const counters = new ConnectionCounters(this.#deps.metrics, target, route);
      const options = { identity: this.#deps.identity, connectTimeoutMs, alpnProtocols: H2_ALPN };
      const dial = () =>
        connectTarget(target, route, options).then((socket) => {
          counters.connected(socket);
          return socket;
        });
      entry = { pool: new H2SessionPool(dial, `https://${route.service.name}.${route.service.namespace}:${route.servicePort}`, this.#sessionGauge), target };
      this.#sessions.set(key, entry);
    }
    // A gateway balances per connection: a session per healthy instance behind it spreads the streams over them.
    entry.pool.width = target.kind === 'gateway' ? Math.min(target.weight, MAX_SESSIONS_PER_GATEWAY) : 1;
    return entry.pool;
  }

  /** The fast path's pool for a target and route (per request: found through the target object, no key string built). */
  pool(target: SnapshotTarget, route: UpstreamRoute, connectTimeoutMs: number): UpstreamPool {
    const cached = this.#poolsByTarget.get(target);
    if (cached && cached.route === route.service && cached.port === route.servicePort && cached.subset === route.subset) return cached.pool;
    const key = upstreamKey(target, route);
    let entry = this.#pools.get(key);
    if (!entry) {
      const counters = new ConnectionCounters(this.#deps.metrics, target, route);
      const dial = () => this.#connect(target, route, connectTimeoutMs, counters);
      entry = { pool: new UpstreamPool(dial, { max: MAX_CONNECTIONS_PER_TARGET, idleMs: POOLED_IDLE_MS }), target };
      this.#pools.set(key, entry);
    }
    this.#poolsByTarget.set(target, { route: route.service, port: route.servicePort, subset: route.subset, pool: entry.pool });
    return entry.pool;
  }

  /** Node's HTTP client agent for a target and route (requests handed to Node's HTTP server). */
  agent(target: SnapshotTarget, route: UpstreamRoute, connectTimeoutMs: number): TargetAgent {
    const key = upstreamKey(target, route);
    let agent = this.#agents.get(key);
    if (!agent) {
      agent = new TargetAgent(target, route, { identity: this.#deps.identity, connectTimeoutMs }, new ConnectionCounters(this.#deps.metrics, target, route));
      this.#agents.set(key, agent);
    }
    return agent;
  }

  /** One mTLS connection of its own (TCP ports), resolved once the session is up and verified. */
  connect(target: SnapshotTarget, route: UpstreamRoute, connectTimeoutMs: number): Promise<TLSSocket> {
    return this.#connect(target, route, connectTimeoutMs, new ConnectionCounters(this.#deps.metrics, target, route));
  }

  /** Drops the pools and agents of targets no longer in the snapshot. */
  retain(live: ReadonlySet<string>): void {
    for (const [key, agent] of this.#agents) {
      if (!live.has(targetKey(agent.target))) {
        agent.destroy();
        this.#agents.delete(key);
      }
    }
    for (const pools of [this.#pools, this.#sessions]) {
      for (const [key, entry] of pools) {
        if (!live.has(targetKey(entry.target))) {
          entry.pool.destroy();
          pools.delete(key);
        }
      }
    }
    this.#poolsByTarget = new WeakMap();
  }

  close(): void {
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
    for (const entry of this.#pools.values()) entry.pool.destroy();
    this.#pools.clear();
    for (const entry of this.#sessions.values()) entry.pool.destroy();
    this.#sessions.clear();
  }

  #connect(target: SnapshotTarget, route: UpstreamRoute, connectTimeoutMs: number, counters: ConnectionCounters): Promise<TLSSocket> {
    return connectTarget(target, route, { identity: this.#deps.identity, connectTimeoutMs }).then((socket) => {
      counters.connected(socket);
      return socket;
    });
  }
}

/**
 * The metrics of one target and route's connections: a connect that came up, and the
 * bytes a connection carried, counted when it closes (a pooled one carries many requests).
 */
class ConnectionCounters {
  readonly #metrics: SidecarMetrics;
  readonly #connected: { destination_cluster: string; destination_service: string; kind: string; result: string };
  readonly #sent: { direction: string; destination_cluster: string; destination_service: string; flow: string };
  readonly #received: { direction: string; destination_cluster: string; destination_service: string; flow: string };

  constructor(metrics: SidecarMetrics, target: SnapshotTarget, route: UpstreamRoute) {
    const destination = `${route.service.name}.${route.service.namespace}`;
    this.#metrics = metrics;
    this.#connected = { destination_cluster: target.cluster, destination_service: destination, kind: target.kind, result: 'ok' };
    this.#sent = { direction: 'outbound', destination_cluster: target.cluster, destination_service: destination, flow: 'sent' };
    this.#received = { direction: 'outbound', destination_cluster: target.cluster, destination_service: destination, flow: 'received' };
  }

  connected(socket: TLSSocket): void {
    this.#metrics.connectAttempts.inc(this.#connected);
    socket.once('close', () => {
      this.#metrics.bytes.inc(this.#sent, socket.bytesWritten);
      this.#metrics.bytes.inc(this.#received, socket.bytesRead);
    });
  }
}

/**
 * An http.Agent for one target and SNI: pooled keep-alive mTLS connections, each made
 * by {@link dialTarget} (so secure naming and the connect timeout apply to every one).
 */
class TargetAgent extends Agent {
  readonly target: SnapshotTarget;
  readonly #route: UpstreamRoute;
  readonly #options: { identity: WorkloadIdentity; connectTimeoutMs: number };
  readonly #counters: ConnectionCounters;

  constructor(target: SnapshotTarget, route: UpstreamRoute, options: { identity: WorkloadIdentity; connectTimeoutMs: number }, counters: ConnectionCounters) {
    super({ keepAlive: true, maxSockets: MAX_CONNECTIONS_PER_TARGET, maxFreeSockets: MAX_CONNECTIONS_PER_TARGET, scheduling: 'lifo', timeout: POOLED_IDLE_MS });
    this.target = target;
    this.#route = route;
    this.#options = options;
    this.#counters = counters;
  }

  override createConnection(): Duplex {
    const socket = dialTarget(this.target, this.#route, this.#options);
    socket.once('secureConnect', () => this.#counters.connected(socket));
    return socket;
  }
}

export type { TargetAgent };

/** Pools and agents are keyed by what the SNI is made of, so the hot path does not re-encode (and re-validate) it. */
function upstreamKey(target: SnapshotTarget, route: UpstreamRoute): string {
  return `${targetKey(target)}|${route.servicePort}|${route.subset ?? ''}|${route.service.name}.${route.service.namespace}|${target.cluster}`;
}
