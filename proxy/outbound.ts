import type { Tracer } from './tracing.js';
import type { Logger, ServicePort, Snapshot } from '../mesh/index.js';
import type { SidecarTuning } from './config.js';
import { AppH2c } from './app-h2c.js';
import { ForwardProxy, type MeshHostResolver } from './forward-proxy.js';
import { H2Outbound } from './h2-outbound.js';
import { HttpFallback } from './http-fallback.js';
import { HttpOutbound } from './http-outbound.js';
import { OutboundListeners, type ExplicitUpstream } from './outbound-listeners.js';
import type { OutboundRangeClaim } from './outbound-range.js';
import type { SidecarMetrics } from './metrics.js';
import { RequestPolicy, type OutboundListenerSpec } from './request-policy.js';
import type { OutlierDetector } from './target-balancer.js';
import { TargetConnections } from './target-connections.js';
import { TcpOutbound } from './tcp-outbound.js';
import type { WorkloadIdentity } from './workload-identity.js';

export type { OutboundListenerSpec } from './request-policy.js';

export interface OutboundDeps {
  readonly tuning: SidecarTuning;
  readonly identity: WorkloadIdentity;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  /** Own cluster and `<svc>.<ns>`, for metric labels. */
  readonly sourceCluster: string;
  readonly sourceService: string;
  readonly upstreams: readonly ExplicitUpstream[];
  /** The claimed outbound range service addresses come from (see outbound-range.ts). */
  readonly range: OutboundRangeClaim;
  /** Spans and trace context for HTTP requests; undefined = tracing off. */
  readonly tracer: Tracer | undefined;
}

/**
 * The app-facing side of the sidecar, assembled (proxy/README.md "The path of one
 * request"): the listeners per snapshot ({@link OutboundListeners}) hand each
 * connection to the HTTP path ({@link HttpOutbound}, with {@link HttpFallback} for what
 * the fast path does not take), the HTTP/2 path ({@link H2Outbound}) or the TCP path ({@link TcpOutbound}); the optional
 * forward proxy ({@link ForwardProxy}) uses the same two. Every path plans and accounts
 * its attempts with the one {@link RequestPolicy} and gets its connections from
 * {@link TargetConnections}.
 */
export class OutboundProxy {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #fallback: HttpFallback;
  readonly #http: HttpOutbound;
  readonly #h2: H2Outbound;
  readonly #tcp: TcpOutbound;
  readonly #listeners: OutboundListeners;
  #forwardProxy: ForwardProxy | undefined;

  constructor(deps: OutboundDeps) {
    this.#policy = new RequestPolicy(deps);
    this.#connections = new TargetConnections(deps);
    this.#fallback = new HttpFallback(this.#policy, this.#connections);
    const appH2c = new AppH2c(deps.metrics, deps.log);
    this.#http = new HttpOutbound(this.#policy, this.#connections, this.#fallback, deps.metrics, appH2c);
    this.#h2 = new H2Outbound(this.#policy, this.#connections, deps.metrics, deps.log, appH2c);
    this.#tcp = new TcpOutbound(this.#policy, this.#connections, deps.metrics);
    this.#listeners = new OutboundListeners({ log: deps.log, upstreams: deps.upstreams, range: deps.range, policy: this.#policy, http: this.#http, h2: this.#h2, tcp: this.#tcp });
  }

  get outliers(): OutlierDetector {
    return this.#policy.outliers;
  }

  /** The loopback address of a service (optionally pinned to a cluster), if the snapshot has it. */
  lookup(namespace: string, service: string, cluster?: string): { address: string; ports: readonly ServicePort[] } | undefined {
    return this.#listeners.lookup(namespace, service, cluster);
  }

  /** Readiness reasons: outbound listeners that could not bind, naming the setting to change. */
  problems(): string[] {
    return this.#listeners.problems();
  }

  listeners(): OutboundListenerSpec[] {
    return this.#listeners.specs();
  }

  /** Applies a snapshot: routes change at once; listeners for new services open, for vanished ones close. */
  async apply(snapshot: Snapshot): Promise<void> {
    const live = this.#policy.apply(snapshot);
    await this.#listeners.apply(snapshot);
    this.#connections.retain(live);
  }

  /** Opens the explicit upstream listeners before any snapshot, so apps can connect early (they wait for a route). */
  startExplicit(): Promise<void> {
    return this.#listeners.startExplicit();
  }

  /** The optional outbound HTTP proxy (see {@link ForwardProxy}); returns its port. */
  startHttpProxy(host: string, port: number, resolveHost: MeshHostResolver): Promise<number> {
    this.#forwardProxy = new ForwardProxy(this.#fallback, this.#tcp);
    return this.#forwardProxy.start(host, port, resolveHost);
  }

  async close(): Promise<void> {
    this.#forwardProxy?.close();
    const listeners = this.#listeners.close();
    this.#http.close();
    this.#h2.close();
    this.#tcp.close();
    this.#connections.close();
    this.#fallback.close();
    await listeners;
  }
}
