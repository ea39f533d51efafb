import { Backoff, type Logger, type Snapshot, type SnapshotService, type SnapshotTarget, type TrafficPolicy } from '../mesh/index.js';
import { AccessLog, type HttpAccessFacts, type TcpAccessFacts } from './access-log.js';
import type { SidecarTuning } from './config.js';
import type { Tracer } from './tracing.js';
import { RequestIdSource } from './request-id.js';
import { ProxyError, ProxyErrorCodes, RequestTimeoutError, UpstreamConnectError } from './errors.js';
import type { SidecarMetrics } from './metrics.js';
import { retryableOutcome, retryBudgetAllows, retriesGrpcStatus, type TryOutcome } from './retry-policy.js';
import { OutlierDetector, pickSubset, planTargets, targetKey, type OutlierSettings } from './target-balancer.js';
import { compileRoutes, type RouteRequest, type RouteRules, type ServiceRoutes } from './traffic-routes.js';
import { GrpcStatus } from './grpc-wire.js';
import { sniFor, type UpstreamRoute } from './upstream-connector.js';
import { APP_RESET, APP_UNAVAILABLE } from './wire.js';

/**
 * The sidecar's one request policy (proxy/README.md "Outbound: names, addresses,
 * targets" and "Traffic policy routes"): which traffic policy route a request takes,
 * which targets it tries in which order and how many, its rate limit and timeouts, what
 * a failure does to the outlier detector and the circuit breaker, which failure a
 * request is retried after (within the retry budget, after what back-off), which status
 * the sidecar answers with, and what every request and connection leaves in the metrics
 * and the access log (with why it ended). The HTTP fast path
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
  /** Requests in flight that are on a retry: the retry budget's count. */
  retrying: number;
}

/** Back-off between retries of one request (not after a failed connect: that moves on to another target at once). */
const RETRY_BACKOFF = { initialMs: 25, maxMs: 250 } as const;

/**
 * Why a request ended, for access logs (Envoy's response flags: RL, UT, URX, UH, UO, UF,
 * DC…) and anyone else who needs the reason rather than the status.
 */
export const RequestEndReasons = [
  'ok',
  'upgraded',
  'rate-limited',
  'route-timeout',
  'upstream-timeout',
  'retries-exhausted',
  'no-healthy-upstream',
  'circuit-open',
  'unknown-service',
  'upstream-failure',
  'downstream-closed',
  'incomplete',
] as const;
export type RequestEndReason = (typeof RequestEndReasons)[number];

/** The attempts of one request or connection: made once per request, read by its path. */
export interface AttemptPlan {
  readonly route: UpstreamRoute;
  readonly policy: TrafficPolicy | undefined;
  /** The traffic policy route the request took (`default` without routes, and for TCP). */
  readonly trafficRoute: RouteRules;
  /** How long one try may wait for the response head; undefined = no limit. */
  readonly perTryTimeoutMs: number | undefined;
  /** `performance.now()` by which the response head must have come over all tries (the route's timeoutMs). */
  readonly deadline: number | undefined;
  /** Retries taken so far (this request's own state). */
  retries: number;
  backoff: Backoff | undefined;
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
  /** This workload's identity: the access log's `source_principal`. */
  readonly identity: { readonly spiffeId: string | undefined };
  /** Spans and trace context; undefined = tracing off. */
  readonly tracer: Tracer | undefined;
}

export class RequestPolicy {
  readonly #deps: RequestPolicyDeps;
  readonly #metrics: SidecarMetrics;
  /** Paths build access-log facts only when {@link AccessLog.enabled}. */
  readonly accessLog: AccessLog;
  /** Ids for outbound requests without one; undefined = `sidecar.requestId.generate` is off. */
  readonly requestIds: RequestIdSource | undefined;
  readonly #outliers: OutlierDetector;
  #snapshot: Snapshot | undefined;
  #services = new Map<string, SnapshotService>();
  #policies = new Map<string, TrafficPolicy>();
  #routes = new Map<string, ServiceRoutes>();
  readonly #circuits = new Map<string, Circuit>();
  readonly #gatewayMaxEjectionMs: number;
  /** Connect failures already counted (see {@link connectFailed}). */
  readonly #recordedFailures = new WeakSet<object>();

  constructor(deps: RequestPolicyDeps) {
    this.#deps = deps;
    this.#metrics = deps.metrics;
    this.accessLog = new AccessLog(deps.log, deps.tuning);
    this.requestIds = deps.tuning.requestId.generate ? new RequestIdSource(deps.log) : undefined;
    this.#gatewayMaxEjectionMs = Math.min(deps.tuning.outlier.gatewayMaxEjectionMs, deps.tuning.outlier.maxEjectionMs);
    this.#outliers = new OutlierDetector(deps.tuning.outlier, (key, reason, ms) => {
      deps.metrics.outlierEjections.inc({ ...this.#targetLabels(key), reason });
      deps.log.info({ target: key, reason, ejectionMs: ms }, 'target ejected by outlier detection');
    });
  }

  /** Spans and trace context for HTTP requests; undefined = tracing off. */
  get tracer(): Tracer | undefined {
    return this.#deps.tracer;
  }

  /** This workload's SPIFFE ID (the caller of every outbound request). */
  get sourcePrincipal(): string | undefined {
    return this.#deps.identity.spiffeId;
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
    const routes = new Map<string, ServiceRoutes>();
    for (const svc of snapshot.services) {
      const key = serviceKey(svc.namespace, svc.name);
      routes.set(key, compileRoutes(this.#policies.get(key), this.#deps.tuning.maxAttempts, this.#routes.get(key)));
    }
    this.#routes = routes;
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
   * The attempts for one request or connection to a listener's service: the traffic
   * policy's route for the request (the default route for a connection), its subset
   * (named, or picked by its split), targets in order, how many to try, the timeouts.
   * Throws a ProxyError when there is nothing to try.
   */
  plan(spec: OutboundListenerSpec, request?: RouteRequest): AttemptPlan {
    const svc = this.#services.get(spec.serviceKey);
    if (!svc || !this.#snapshot) {
      throw new ProxyError(ProxyErrorCodes.unknownService, `${spec.serviceLabel} is not in the mesh catalog this sidecar has (yet); check the name and that the service is exported to this cluster`);
    }
    if (!svc.ports.some((p) => p.port === spec.servicePort)) {
      throw new ProxyError(ProxyErrorCodes.unknownService, `${spec.serviceLabel} has no port ${spec.servicePort}`);
    }
    const policy = this.#policies.get(spec.serviceKey);
    // apply() compiles the routes of every service it keeps: a service found above has them.
    const trafficRoute = this.#routes.get(spec.serviceKey)!.select(request);
    const subset = trafficRoute.subset ?? pickSubset(trafficRoute.split);
    if (subset !== undefined && svc.subsets[subset] === undefined) {
      throw new ProxyError(ProxyErrorCodes.noHealthyTarget, `traffic policy ${policy!.name} (route ${trafficRoute.name}) sends ${spec.serviceLabel} to subset ${subset}, which the service does not define (it has: ${Object.keys(svc.subsets).join(', ') || 'none'}); fix the policy's split or the service's subsets`);
    }
    const route: UpstreamRoute = { service: svc, servicePort: spec.servicePort, subset, trustDomain: this.#snapshot.trustDomain };
    const targets = planTargets(svc, this.#outliers, { pinnedCluster: spec.pinnedCluster, subset, policy });
    if (targets.length === 0) {
      throw new ProxyError(ProxyErrorCodes.noHealthyTarget, `${spec.serviceLabel}${subset ? ` subset ${subset}` : ''}${spec.pinnedCluster ? ` in cluster ${spec.pinnedCluster}` : ''} has no healthy, non-stale target`);
    }
    return {
      route,
      policy,
      trafficRoute,
      perTryTimeoutMs: trafficRoute.retry.perTryTimeoutMs,
      deadline: trafficRoute.timeoutMs !== undefined ? performance.now() + trafficRoute.timeoutMs : undefined,
      retries: 0,
      backoff: undefined,
      targets,
      // Each retry goes to another target: never more tries than targets.
      attempts: Math.min(targets.length, trafficRoute.retry.tries),
      connectTimeoutMs: policy?.connectTimeoutMs ?? this.#deps.tuning.connectTimeoutMs,
      circuit: this.#circuit(spec.serviceKey),
      serviceLabel: spec.serviceLabel,
    };
  }

  /**
   * Admission of one HTTP request: the route's rate limit, then the circuit breaker
   * (requests in flight to the service stand for its connections). Counts the request
   * in; {@link release} counts it out.
   */
  admitRequest(plan: AttemptPlan): void {
    const bucket = plan.trafficRoute.rateLimit;
    if (bucket && !bucket.take()) {
      this.#metrics.rateLimited.inc({ destination_service: plan.serviceLabel, route: plan.trafficRoute.name });
      throw new ProxyError(ProxyErrorCodes.rateLimited, `${plan.serviceLabel}: route ${plan.trafficRoute.name} is over its rate limit (${bucket.perSecond} requests/s, burst ${bucket.burst}); slow down or raise the traffic policy's rateLimit`);
    }
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
   * A response head (or a 101) from `target`, as a try outcome. `serverError` is the
   * `x-causeway-error` of a 503 (undefined otherwise; callers read the header only for a
   * 503): the server sidecar answered for an app that refused the connection (the request
   * never reached it: `refused-stream`) or that took it and closed without answering
   * (`reset`); either counts the target as failed. `grpcStatus` is the `grpc-status` of a
   * gRPC response's headers (trailers-only) or trailers, when it has one: a status a
   * server or path failure produces ({@link grpcStatusFailure}) counts towards ejection.
   * Otherwise a 5xx counts towards ejection and any other status clears the target.
   * Whether to retry is {@link retryDelay}'s answer.
   */
  responded(plan: AttemptPlan, target: SnapshotTarget, status: number, serverError: string | undefined, grpcStatus?: number): TryOutcome {
    const key = targetKey(target);
    if (serverError === APP_UNAVAILABLE || serverError === APP_RESET) {
      this.#outliers.failure(key, 'connect', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
      return { kind: serverError === APP_UNAVAILABLE ? 'refused-stream' : 'reset', status };
    }
    if (grpcStatus !== undefined && grpcStatusFailure(grpcStatus)) this.#outliers.failure(key, 'grpc-status', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
    else if (status >= 500) this.#outliers.failure(key, 'http-5xx', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
    else this.#outliers.success(key);
    return grpcStatus === undefined ? { kind: 'response', status } : { kind: 'response', status, grpcStatus };
  }

  /**
   * The request reached `target` (or may have) but no response head came: the target
   * died, reset or passed the per-try timeout. A reset on a reused pooled connection
   * short of a timeout is a keep-alive race (the request was never seen:
   * `refused-stream`).
   */
  noResponse(plan: AttemptPlan, target: SnapshotTarget, reusedConnection: boolean, timedOut: boolean): TryOutcome {
    this.#outliers.failure(targetKey(target), 'connect', outlierSettings(plan.policy, target, this.#gatewayMaxEjectionMs));
    return { kind: timedOut ? 'timeout' : reusedConnection ? 'refused-stream' : 'reset' };
  }

  /**
   * Whether try `attempt` (0-based), which ended with `outcome`, is followed by another
   * on the next target, and after how many ms; undefined = the request ends with this
   * outcome. A retry needs: a try left, a condition of the route's `on`, a request that
   * may be sent again (a failed connect sent nothing; a refused stream needs the body
   * held; so does a gRPC call whose status the route retries, as gRPC's own retry policy
   * replays any method; anything else also an idempotent method) and, except after a
   * failed connect (no load on any app), room in the retry budget.
   */
  retryDelay(plan: AttemptPlan, attempt: number, outcome: TryOutcome, method: string, bodyHeld: boolean): number | undefined {
    if (attempt + 1 >= plan.attempts) return undefined;
    if (!retryableOutcome(outcome, plan.trafficRoute.retry)) return undefined;
    const connectFailure = outcome.kind === 'connect-failure';
    const replayable = outcome.kind === 'refused-stream' || (outcome.grpcStatus !== undefined && outcome.grpcStatus !== 0) || IDEMPOTENT.has(method);
    if (!connectFailure && !(bodyHeld && replayable)) return undefined;
    const labels = { destination_service: plan.serviceLabel, route: plan.trafficRoute.name };
    const circuit = plan.circuit;
    if (!connectFailure && !this.#budgetAllows(plan)) {
      this.#metrics.retryBudgetExhausted.inc(labels);
      return undefined;
    }
    this.#metrics.retries.inc({ ...labels, reason: outcome.kind });
    if (plan.retries === 0) circuit.retrying++;
    plan.retries++;
    if (connectFailure) return 0;
    return (plan.backoff ??= new Backoff(RETRY_BACKOFF)).next();
  }

  /**
   * Whether a `grpc-status` that try `attempt` (0-based) has yet to send could still be
   * retried: a try left, the body held, a gRPC code among the route's `retries.on`, room
   * in the retry budget. Counts nothing ({@link retryDelay} decides when the status
   * comes); while it holds, h2-exchange.ts holds the try's response headers.
   */
  mayRetryGrpcStatus(plan: AttemptPlan, attempt: number, bodyHeld: boolean): boolean {
    return bodyHeld && attempt + 1 < plan.attempts && retriesGrpcStatus(plan.trafficRoute.retry.on) && this.#budgetAllows(plan);
  }

  /** Whether one more retry of the request fits the retry budget of its service. */
  #budgetAllows(plan: AttemptPlan): boolean {
    const circuit = plan.circuit;
    return retryBudgetAllows(circuit.active, circuit.retrying - (plan.retries > 0 ? 1 : 0), this.#deps.tuning.retryBudget);
  }

  /** A request admitted by {@link admitRequest} is over: out of the circuit's and the retry budget's counts. */
  release(plan: AttemptPlan): void {
    plan.circuit.active--;
    if (plan.retries > 0) plan.circuit.retrying--;
  }

  /** The error a request answers with when its attempts are used up. */
  exhausted(plan: AttemptPlan | undefined, lastError: unknown): ProxyError {
    if (lastError instanceof ProxyError) return lastError;
    return new ProxyError(ProxyErrorCodes.upstreamReset, `${plan?.serviceLabel ?? 'unknown'}: ${(lastError as Error)?.message ?? 'no response'}`, { cause: lastError });
  }

  /** The error of one try passing its per-try timeout (the route's perTryTimeoutMs, or the policy's requestTimeoutMs). */
  requestTimeout(ms: number): ProxyError {
    return new RequestTimeoutError(ms);
  }

  /** The error of the route's timeoutMs passing, over all tries, without a response head. */
  routeTimeout(plan: AttemptPlan): ProxyError {
    return new ProxyError(ProxyErrorCodes.routeTimeout, `${plan.serviceLabel}: no response within the route ${plan.trafficRoute.name}'s timeout of ${plan.trafficRoute.timeoutMs} ms (${plan.retries} retries made)`);
  }

  /**
   * One request done: its counter, its duration and (when the access log is on) its
   * access-log line, with the traffic policy route it took and why it ended.
   */
  requestDone(serviceLabel: string, target: SnapshotTarget | undefined, code: number, result: string, started: number, access: HttpAccessFacts | undefined, plan?: AttemptPlan): void {
    const cluster = target?.cluster ?? 'none';
    this.#metrics.requests.inc({ direction: 'outbound', source_cluster: this.#deps.sourceCluster, source_service: this.#deps.sourceService, destination_cluster: cluster, destination_service: serviceLabel, code: String(code), result });
    this.#metrics.requestSeconds.observe({ direction: 'outbound', destination_cluster: cluster, destination_service: serviceLabel }, (performance.now() - started) / 1000);
    if (access) this.accessLog.http(plan ? { ...access, route: plan.trafficRoute.name, endReason: endReason(code, result, plan), retries: plan.retries } : access);
  }

  /** One TCP connection done: its counter, its lifetime and its access-log line. */
  connectionDone(serviceLabel: string, target: SnapshotTarget | undefined, result: string, started: number, access: TcpAccessFacts | undefined): void {
    const cluster = target?.cluster ?? 'none';
    this.#metrics.connections.inc({ direction: 'outbound', source_cluster: this.#deps.sourceCluster, source_service: this.#deps.sourceService, destination_cluster: cluster, destination_service: serviceLabel, result });
    this.#metrics.connectionSeconds.observe({ direction: 'outbound', destination_cluster: cluster, destination_service: serviceLabel }, (performance.now() - started) / 1000);
    if (access) this.accessLog.tcp(access);
  }

  #circuit(key: string): Circuit {
    let c = this.#circuits.get(key);
    if (!c) this.#circuits.set(key, (c = { active: 0, pending: 0, retrying: 0 }));
    return c;
  }

  /** Looked up only on an ejection, never per request. */
  #targetLabels(key: string): { destination_cluster: string; kind: string } {
    for (const svc of this.#services.values()) for (const t of svc.targets) if (targetKey(t) === key) return { destination_cluster: t.cluster, kind: t.kind };
    return { destination_cluster: 'unknown', kind: 'unknown' };
  }
}

const ERROR_STATUS: Readonly<Record<string, number>> = {
  [ProxyErrorCodes.connectTimeout]: 504,
  [ProxyErrorCodes.routeTimeout]: 504,
  [ProxyErrorCodes.unknownService]: 404,
  [ProxyErrorCodes.rateLimited]: 429,
};

/** gRPC status codes of the sidecar's own errors on gRPC ports (anything else: UNAVAILABLE, 14). */
const ERROR_GRPC_STATUS: Readonly<Record<string, number>> = {
  [ProxyErrorCodes.connectTimeout]: 4,
  [ProxyErrorCodes.routeTimeout]: 4,
  [ProxyErrorCodes.unknownService]: 12,
  [ProxyErrorCodes.rateLimited]: 8,
};

/**
 * What the sidecar answers with for an error of its own: the HTTP status, the gRPC status
 * (for gRPC ports: HTTP 200, trailers-only, `grpc-status`) and the `x-causeway-error` code.
 */
export function errorStatus(error: unknown): { status: number; grpcStatus: number; code: string } {
  const code = error instanceof ProxyError ? error.code : ProxyErrorCodes.unclassified;
  return { status: ERROR_STATUS[code] ?? 503, grpcStatus: ERROR_GRPC_STATUS[code] ?? 14, code };
}

const END_REASONS: Readonly<Record<string, RequestEndReason>> = {
  ok: 'ok',
  upgraded: 'upgraded',
  downstream_closed: 'downstream-closed',
  incomplete: 'incomplete',
  [ProxyErrorCodes.rateLimited]: 'rate-limited',
  [ProxyErrorCodes.routeTimeout]: 'route-timeout',
  [ProxyErrorCodes.noHealthyTarget]: 'no-healthy-upstream',
  [ProxyErrorCodes.circuitOpen]: 'circuit-open',
  [ProxyErrorCodes.unknownService]: 'unknown-service',
};

/**
 * Why a request ended, from its status, its `result` and its plan: a request that was
 * retried and still failed (or still got a 5xx) used up its retries.
 */
export function endReason(code: number, result: string, plan: AttemptPlan | undefined): RequestEndReason {
  const known = END_REASONS[result];
  const retried = plan !== undefined && plan.retries > 0;
  if (known === 'ok') return retried && code >= 500 ? 'retries-exhausted' : 'ok';
  if (known) return known;
  if (retried) return 'retries-exhausted';
  return result === ProxyErrorCodes.connectTimeout ? 'upstream-timeout' : 'upstream-failure';
}

/** gRPC statuses that count towards a target's ejection, as a 5xx does (the statuses a server or path failure produces). */
const GRPC_FAILURES: ReadonlySet<number> = new Set([GrpcStatus.deadlineExceeded, GrpcStatus.internal, GrpcStatus.unavailable, GrpcStatus.dataLoss]);

/**
 * Whether a response's `grpc-status` counts against the target in outlier detection: the
 * one place gRPC codes become outlier decisions (retries are the route's `on`, read by
 * retryableOutcome).
 */
export function grpcStatusFailure(code: number): boolean {
  return GRPC_FAILURES.has(code);
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
