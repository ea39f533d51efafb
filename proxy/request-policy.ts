import type { Logger, Snapshot, SnapshotService, SnapshotTarget, TrafficPolicy } from '../mesh/index.js';
import type { SidecarTuning } from './config.js';
import { ProxyError, ProxyErrorCodes, UpstreamConnectError } from './errors.js';
import type { SidecarMetrics } from './metrics.js';
import { OutlierDetector, pickSubset, planTargets, targetKey, type OutlierSettings } from './target-balancer.js';
import { GrpcStatus } from './grpc-wire.js';
import { sniFor, type UpstreamRoute } from './upstream-connector.js';
import { APP_RESET, APP_UNAVAILABLE } from './wire.js';

/**
 * The sidecar's one request policy (proxy/README.md "Outbound: names, addresses,
 * targets"): which targets a request or connection tries in which order and how many,
 * what a failure does to the outlier detector and the circuit breaker, which failure a
 * request may be replayed after, which status the sidecar answers with, and what every
 * request and connection leaves in the metrics and the access log. The HTTP fast path
 * (outbound-exchange.ts), Node's HTTP server path (http-fallback.ts) and the TCP path
 * (tcp-outbound.ts) ask it and nothing else; none of them keeps rules of its own.
 */

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
  /** `<ns>/<svc>`, the key of the service's routes, policy and circuit (made once, not per request). */
  readonly serviceKey: string;
  /** `<svc>.<ns>`, the `destination_service` label. */
  readonly serviceLabel: string;
}

export function outboundListenerSpec(
  address: string,
  port: number,
  namespace: string,
  service: string,
  servicePort: number,
  pinnedCluster: string | undefined,
  explicit: boolean,
): OutboundListenerSpec {
  return { address, port, namespace, service, servicePort, pinnedCluster, explicit, serviceKey: serviceKey(namespace, service), serviceLabel: `${service}.${namespace}` };
}

export function serviceKey(namespace: string, service: string): string {
  return `${namespace}/${service}`;
}

/** Methods a request may be replayed with after it may have reached a target. */
export const IDEMPOTENT: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/** Requests in flight (HTTP) or connections open and connecting (TCP) to one service: the circuit breaker's count. */
export interface Circuit {
  active: number;
  pending: number;
}

/** The attempts of one request or connection: made once per request, read by its path. */
export interface AttemptPlan {
  readonly route: UpstreamRoute;
  readonly policy: TrafficPolicy | undefined;
  /** Targets to try, in order (locality priority or the policy's failoverOrder, ejected ones last). */
  readonly targets: SnapshotTarget[];
  /** How many of them to try at most. */
  readonly attempts: number;
  readonly connectTimeoutMs: number;
  readonly circuit: Circuit;
  readonly serviceLabel: string;
}

export interface RequestPolicyDeps {
  readonly tuning: SidecarTuning;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  /** Own cluster and `<svc>.<ns>`, for metric labels. */
  readonly sourceCluster: string;
  readonly sourceService: string;
}

export class RequestPolicy {
  readonly #deps: RequestPolicyDeps;
  readonly #metrics: SidecarMetrics;
  /** Access logging costs an object per request: decided once, not per request. */
  readonly #accessLog: boolean;
  readonly #outliers: OutlierDetector;
  #snapshot: Snapshot | undefined;
  #services = new Map<string, SnapshotService>();
  #policies = new Map<string, TrafficPolicy>();
  readonly #circuits = new Map<string, Circuit>();
  readonly #gatewayMaxEjectionMs: number;
  /** Connect failures already counted (see {@link connectFailed}). */
  readonly #recordedFailures = new WeakSet<object>();

  constructor(deps: RequestPolicyDeps) {
    this.#deps = deps;
    this.#metrics = deps.metrics;
    this.#accessLog = deps.tuning.accessLog && deps.log.isLevelEnabled('debug');
    this.#gatewayMaxEjectionMs = Math.min(deps.tuning.outlier.gatewayMaxEjectionMs, deps.tuning.outlier.maxEjectionMs);
    this.#outliers = new OutlierDetector(deps.tuning.outlier, (key, reason, ms) => {
      deps.metrics.outlierEjections.inc({ ...this.#targetLabels(key), reason });
      deps.log.info({ target: key, reason, ejectionMs: ms }, 'target ejected by outlier detection');
    });
  }

  get outliers(): OutlierDetector {
    return this.#outliers;
  }

  /**
   * Takes a snapshot's services and traffic policies. Outlier state goes with a target that
   * vanished, turned stale or unhealthy: one that comes back (a region returning) starts
   * clean instead of where its last ejections left it (proxy/README.md "Outlier
   * detection"). Returns the live target keys.
   */
  apply(snapshot: Snapshot): Set<string> {
    this.#snapshot = snapshot;
    this.#services = new Map(snapshot.services.map((s) => [serviceKey(s.namespace, s.name), s]));
    this.#policies = new Map(snapshot.traffic.map((p) => [serviceKey(p.namespace, p.service), p]));
    const live = new Set<string>();
    const serving = new Set<string>();
    for (const svc of snapshot.services) {
      for (const t of svc.targets) {
        const key = targetKey(t);
        live.add(key);
        if (t.healthy && !t.stale) serving.add(key);
      }
    }
    this.#outliers.retain(serving);
    return live;
  }

  service(namespace: string, service: string): SnapshotService | undefined {
    return this.#services.get(serviceKey(namespace, service));
  }

  /** Whether a listener's port is proxied per request (HTTP/1.1, or HTTP/2 per stream for `http2` and `grpc` ports) or per connection. */
  protocolOf(spec: OutboundListenerSpec): 'http' | 'h2' | 'tcp' {
    const protocol = this.#services.get(spec.serviceKey)?.ports.find((p) => p.port === spec.servicePort)?.protocol;
    return protocol === 'http' ? 'http' : protocol === 'http2' || protocol === 'grpc' ? 'h2' : 'tcp';
  }

  /**
   * The attempts for one request or connection to a listener's service: route (subset
   * picked by the policy's split), targets in order, how many to try, the connect
   * timeout. Throws a ProxyError when there is nothing to try.
   */
  plan(spec: OutboundListenerSpec): AttemptPlan {
    const svc = this.#services.get(spec.serviceKey);
    if (!svc || !this.#snapshot) {
      throw new ProxyError(ProxyErrorCodes.unknownService, `${spec.serviceLabel} is not in the mesh catalog this sidecar has (yet); check the name and that the service is exported to this cluster`);
    }
    if (!svc.ports.some((p) => p.port === spec.servicePort)) {
      throw new ProxyError(ProxyErrorCodes.unknownService, `${spec.serviceLabel} has no port ${spec.servicePort}`);
    }
    const policy = this.#policies.get(spec.serviceKey);
    const subset = pickSubset(policy?.split);
    if (subset !== undefined && svc.subsets[subset] === undefined) {
      throw new ProxyError(ProxyErrorCodes.noHealthyTarget, `traffic policy ${policy!.name} sends ${spec.serviceLabel} to subset ${subset}, which the service does not define (it has: ${Object.keys(svc.subsets).join(', ') || 'none'}); fix the policy's split or the service's subsets`);
    }
    const route: UpstreamRoute = { service: svc, servicePort: spec.servicePort, subset, trustDomain: this.#snapshot.trustDomain };
    const targets = planTargets(svc, this.#outliers, { pinnedCluster: spec.pinnedCluster, subset, policy });
    if (targets.length === 0) {
      throw new ProxyError(ProxyErrorCodes.noHealthyTarget, `${spec.serviceLabel}${subset ? ` subset ${subset}` : ''}${spec.pinnedCluster ? ` in cluster ${spec.pinnedCluster}` : ''} has no healthy, non-stale target`);
    }
    return {
      route,
      policy,
      targets,
      attempts: Math.min(targets.length, policy?.retries !== undefined ? policy.retries + 1 : this.#deps.tuning.maxAttempts),
      connectTimeoutMs: policy?.connectTimeoutMs ?? this.#deps.tuning.connectTimeoutMs,
      circuit: this.#circuit(spec.serviceKey),
      serviceLabel: spec.serviceLabel,
    };
  }

  /**
   * {@link plan} and {@link admitRequest} for one request (or HTTP/2 stream) to what a
   * listener stands for; throws the ProxyError to answer with (the listener no longer
   * stands for a service, nothing to try, circuit open).
   */
  admit(spec: OutboundListenerSpec | undefined): AttemptPlan {
    if (!spec) throw new ProxyError(ProxyErrorCodes.unknownService, 'this listener no longer stands for a mesh service');
    const plan = this.plan(spec);
    this.admitRequest(plan);
    return plan;
  }

  /** The circuit breaker for HTTP: requests in flight to the service stand for its connections. Counts the request in. */
  admitRequest(plan: AttemptPlan): void {
    const circuit = plan.circuit;
    if (circuit.active >= this.#deps.tuning.circuit.maxConnections) {
      throw new ProxyError(ProxyErrorCodes.circuitOpen, `${plan.serviceLabel}: circuit open (${circuit.active} requests in flight)`);
    }
    circuit.active++;
  }

  /** The circuit breaker for TCP: open connections and connects under way. */
  admitConnection(plan: AttemptPlan): void {
    const circuit = plan.circuit;
    if (circuit.active >= this.#deps.tuning.circuit.maxConnections || circuit.pending >= this.#deps.tuning.circuit.maxPendingConnects) {
      throw new ProxyError(ProxyErrorCodes.circuitOpen, `${plan.serviceLabel}: circuit open (${circuit.active} connections, ${circuit.pending} pending connects)`);
    }
  }

  /**
   * A connect, handshake or secure-naming check to `target` failed. One failed connect
   * can fail several requests queued at a pool (UpstreamPool): it counts once, as one
   * attempt and one outlier failure.
   */
  connectFailed(plan: AttemptPlan, target: SnapshotTarget, error: unknown): void {
    if (typeof error === 'object' && error !== null) {
      if (this.#recordedFailures.has(error)) return;
      this.#recordedFailures.add(error);
    }
    const code = error instanceof UpstreamConnectError ? error.code : ProxyErrorCodes.connectFailed;
    const destination = plan.serviceLabel;
    this.#metrics.connectAttempts.inc({ destination_cluster: target.cluster, destination_service: destination, kind: target.kind, result: code });
    if (code === ProxyErrorCodes.secureNaming) {
      this.#metrics.secureNamingRefusals.inc({ destination_service: destination });
      this.#deps.log.warn({ target: targetKey(target), sni: sniFor(plan.route, target), reason: (error as Error).message }, 'secure naming: server identity not allowed for the service; connection refused');
    }
    this.#outliers.failure(targetKey(target), code === ProxyErrorCodes.connectFailed || code === ProxyErrorCodes.connectTimeout ? 'connect' : 'handshake', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
  }

  /** A TCP connection to `target` is up (its connect was counted by the connector). */
  connected(target: SnapshotTarget): void {
    this.#outliers.success(targetKey(target));
  }

  /**
   * A response head (or a 101) from `target`. `serverError` is the `x-causeway-error` of
   * a 503 (undefined otherwise; callers read the header only for a 503). When the server
   * sidecar answered for an app that never saw the request (or, for an idempotent method,
   * that reset it), the request is replayed on the next target if its body is held and
   * an attempt is left: the target counts as failed and the error to report if no other
   * target answers is returned. Otherwise a 5xx counts towards ejection, any other status
   * clears the target, and undefined is returned: the response goes to the app.
   * `grpcStatus` is the `grpc-status` of a gRPC response's headers (a trailers-only
   * response) or trailers, when it has one: {@link grpcStatusOutcome} decides what it does.
   */
  responded(plan: AttemptPlan, attempt: number, target: SnapshotTarget, status: number, serverError: string | undefined, method: string, bodyHeld: boolean, grpcStatus?: number): ProxyError | undefined {
    const key = targetKey(target);
    if (bodyHeld && (serverError === APP_UNAVAILABLE || (serverError === APP_RESET && IDEMPOTENT.has(method))) && attempt + 1 < plan.attempts) {
      this.#outliers.failure(key, 'connect', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
      return new ProxyError(ProxyErrorCodes.upstreamReset, `${plan.serviceLabel}: ${serverError} from ${key}`);
    }
    if (grpcStatus !== undefined) {
      const outcome = grpcStatusOutcome(grpcStatus);
      if (outcome.failure) this.#outliers.failure(key, 'grpc-status', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
      else if (status < 500) this.#outliers.success(key);
      if (outcome.retry && bodyHeld && attempt + 1 < plan.attempts) return new ProxyError(ProxyErrorCodes.upstreamReset, `${plan.serviceLabel}: grpc-status ${grpcStatus} from ${key}`);
      if (outcome.failure || status < 500) return undefined;
    }
    if (status >= 500) this.#outliers.failure(key, 'http-5xx', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
    else this.#outliers.success(key);
    return undefined;
  }

  /**
   * The request reached `target` (or may have) but no response head came: the target
   * died, reset or timed out. Returns whether the request may go to the next target: only
   * with its body held, and for an idempotent method (also after the traffic policy's
   * `requestTimeoutMs`: a path that drops packets silently never resets, and the replay
   * is what HTTP allows an idempotent request) or, short of a timeout, on a reused pooled
   * connection (a keep-alive race, the request never seen).
   */
  noResponse(plan: AttemptPlan, target: SnapshotTarget, method: string, reusedConnection: boolean, bodyHeld: boolean, timedOut: boolean): boolean {
    this.#outliers.failure(targetKey(target), 'connect', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
    return bodyHeld && (IDEMPOTENT.has(method) || (reusedConnection && !timedOut));
  }

  /** The error a request answers with when its attempts are used up. */
  exhausted(plan: AttemptPlan | undefined, lastError: unknown): ProxyError {
    if (lastError instanceof ProxyError) return lastError;
    return new ProxyError(ProxyErrorCodes.upstreamReset, `${plan?.serviceLabel ?? 'unknown'}: ${(lastError as Error)?.message ?? 'no response'}`, { cause: lastError });
  }

  /** The error of a traffic policy's `requestTimeoutMs` passing without a response head. */
  requestTimeout(ms: number): ProxyError {
    return new ProxyError(ProxyErrorCodes.connectTimeout, `no response within ${ms} ms (traffic policy requestTimeoutMs)`);
  }

  /** One request done: its counter, its duration and (at debug, when enabled) its access-log line. */
  requestDone(serviceLabel: string, target: SnapshotTarget | undefined, code: number, result: string, started: number, method: string | undefined, path: string | undefined): void {
    const cluster = target?.cluster ?? 'none';
    this.#metrics.requests.inc({ direction: 'outbound', source_cluster: this.#deps.sourceCluster, source_service: this.#deps.sourceService, destination_cluster: cluster, destination_service: serviceLabel, code: String(code), result });
    this.#metrics.requestSeconds.observe({ direction: 'outbound', destination_cluster: cluster, destination_service: serviceLabel }, (performance.now() - started) / 1000);
    if (this.#accessLog) this.#deps.log.debug({ direction: 'outbound', method, path, service: serviceLabel, target: target && targetKey(target), cluster, code, result, ms: Math.round((performance.now() - started) * 100) / 100 }, 'request');
  }

  /** One TCP connection done: its counter, its lifetime and its access-log line. */
  connectionDone(serviceLabel: string, target: SnapshotTarget | undefined, result: string, started: number): void {
    const cluster = target?.cluster ?? 'none';
    this.#metrics.connections.inc({ direction: 'outbound', source_cluster: this.#deps.sourceCluster, source_service: this.#deps.sourceService, destination_cluster: cluster, destination_service: serviceLabel, result });
    this.#metrics.connectionSeconds.observe({ direction: 'outbound', destination_cluster: cluster, destination_service: serviceLabel }, (performance.now() - started) / 1000);
    if (this.#accessLog) this.#deps.log.debug({ direction: 'outbound', service: serviceLabel, target: target && targetKey(target), cluster, result, ms: Math.round(performance.now() - started) }, 'connection');
  }

  #circuit(key: string): Circuit {
    let c = this.#circuits.get(key);
    if (!c) this.#circuits.set(key, (c = { active: 0, pending: 0 }));
    return c;
  }

  /** Looked up only on an ejection, never per request. */
  #targetLabels(key: string): { destination_cluster: string; kind: string } {
    for (const svc of this.#services.values()) for (const t of svc.targets) if (targetKey(t) === key) return { destination_cluster: t.cluster, kind: t.kind };
    return { destination_cluster: 'unknown', kind: 'unknown' };
  }
}

/** What the sidecar answers with for an error of its own: the status and the `x-causeway-error` code. */
export function errorStatus(error: unknown): { status: number; code: string } {
  const code = error instanceof ProxyError ? error.code : ProxyErrorCodes.unclassified;
  return { status: code === ProxyErrorCodes.connectTimeout ? 504 : code === ProxyErrorCodes.unknownService ? 404 : 503, code };
}

/** gRPC statuses a call is replayed on another target after (when its request is held and an attempt is left). */
const GRPC_RETRY_ON: ReadonlySet<number> = new Set([GrpcStatus.unavailable, GrpcStatus.cancelled]);
/** gRPC statuses that count towards a target's ejection, as a 5xx does (the statuses a server or path failure produces). */
const GRPC_FAILURES: ReadonlySet<number> = new Set([GrpcStatus.deadlineExceeded, GrpcStatus.internal, GrpcStatus.unavailable, 15 /* DATA_LOSS */]);

/**
 * What a response's `grpc-status` does: whether the call may go to another target
 * (`retry`) and whether it counts against the target in outlier detection (`failure`).
 * The one place gRPC codes become retry and outlier decisions.
 */
export function grpcStatusOutcome(code: number): { retry: boolean; failure: boolean } {
  return { retry: GRPC_RETRY_ON.has(code), failure: GRPC_FAILURES.has(code) };
}

/**
 * Outlier detection settings of a traffic policy (defaults when it has none); a remote
 * cluster's gateway is ejected for at most `gatewayMaxEjectionMs` (proxy/README.md
 * "Outlier detection": a returning region's gateway gets traffic back within it).
 */
function outlierSettings(policy: TrafficPolicy | undefined, target: SnapshotTarget, gatewayMaxEjectionMs: number): Partial<OutlierSettings> {
  const o = policy?.outlierDetection;
  const settings: Partial<OutlierSettings> = o ? { consecutiveFailures: o.consecutiveFailures, baseEjectionMs: o.baseEjectionMs } : {};
  if (target.kind === 'gateway') settings.maxEjectionMs = gatewayMaxEjectionMs;
  return settings;
}
