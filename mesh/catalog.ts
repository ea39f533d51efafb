import { z } from 'zod';
import { boundedRegexProblem } from './bounded-regex.js';
import { ErrorCodes, ValidationError } from './errors.js';
import { clusterName, dnsLabel, host, port, spiffeIdText, validate } from './validation.js';

/**
 * Catalog values as stored in etcd (docs/architecture.md "etcd key layout"). Every value is JSON with
 * a `schema` version field. Readers validate with {@link decodeCatalogValue}; a value that
 * fails is logged with its key and skipped, never trusted and never fatal.
 */
export const CATALOG_SCHEMA_VERSION = 1;
const schemaVersion = z.literal(CATALOG_SCHEMA_VERSION, { error: `schema must be ${CATALOG_SCHEMA_VERSION}` });

export const Locality = z.strictObject({ region: dnsLabel.describe('region, e.g. eu'), zone: dnsLabel.describe('zone within the region, e.g. eu-1') });
export type Locality = z.infer<typeof Locality>;

export const Protocols = ['tcp', 'http', 'http2', 'grpc', 'tls'] as const;

export const ServicePort = z.strictObject({
  name: dnsLabel.describe('port name, unique in the service (e.g. http)'),
  port: port.describe('the port callers use'),
  targetPort: port.optional().describe("the app's port behind the sidecar (default: port)"),
  protocol: z.enum(Protocols).default('tcp').describe('what the port speaks; http, http2 and grpc get per-request routing, retries and splits (HTTP/2 and gRPC per stream, proxy/README.md "HTTP/2 and gRPC")'),
});
export type ServicePort = z.infer<typeof ServicePort>;

export const GatewayAddress = z.strictObject({ address: host, port });
export type GatewayAddress = z.infer<typeof GatewayAddress>;

export const ClusterInfo = z.strictObject({
  schema: schemaVersion,
  name: clusterName,
  locality: Locality,
  network: dnsLabel,
  trustDomain: z.string().min(1),
  gateways: z.array(GatewayAddress).default([]),
  controllers: z.array(GatewayAddress).default([]),
});
export type ClusterInfo = z.infer<typeof ClusterInfo>;

/**
 * `/causeway/v1/controllers/<id>`, attached to the registering controller's lease: a
 * controller is alive while its registration exists (it leaves within one lease TTL of
 * dying, however it died). The cluster record's `controllers` mirrors these.
 */
export const ControllerRegistration = z.strictObject({
  schema: schemaVersion,
  id: z.string().regex(/^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$/, 'controller id must be 1-128 of [a-z0-9._-]'),
  address: host,
  port,
  registeredAt: z.iso.datetime().optional(),
});
export type ControllerRegistration = z.infer<typeof ControllerRegistration>;

export const ServiceSpec = z.strictObject({
  schema: schemaVersion,
  name: dnsLabel.describe('service name'),
  namespace: dnsLabel.describe("the service's namespace"),
  ports: z.array(ServicePort).min(1, 'a service needs at least one port').describe('the ports the service serves, at least one'),
  serviceAccounts: z
    .array(spiffeIdText)
    .min(1, 'name at least one SPIFFE ID allowed to serve the service')
    .describe('SPIFFE IDs allowed to serve this service (secure naming): a caller refuses a server with any other identity'),
  exported: z.boolean().default(false).describe('offered to linked peer clusters (`causeway export` sets it too)'),
  subsets: z
    .record(dnsLabel, z.record(z.string(), z.string()))
    .default({})
    .describe('named subsets of the endpoints, by labels, e.g. {v2: {version: v2}}; traffic policy splits and SNIs name them'),
  createdAt: z.iso.datetime().optional().describe('when the service was first applied (ISO 8601); kept from the stored spec when omitted'),
});
export type ServiceSpec = z.infer<typeof ServiceSpec>;

export const HealthStates = ['healthy', 'unhealthy', 'unknown'] as const;
export type HealthState = (typeof HealthStates)[number];

export const Endpoint = z.strictObject({
  schema: schemaVersion,
  id: z.string().regex(/^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$/, 'endpoint id must be 1-128 of [a-z0-9._-]'),
  service: dnsLabel,
  namespace: dnsLabel,
  cluster: clusterName,
  address: host,
  /** The sidecar's inbound mTLS port (15006 by default). */
  inboundPort: port,
  labels: z.record(z.string(), z.string()).default({}),
  locality: Locality,
  identity: spiffeIdText,
  health: z.enum(HealthStates).default('unknown'),
  registeredAt: z.iso.datetime().optional(),
  /** The sidecar's Prometheus /metrics port on `address`; absent in records of older sidecars. */
  metricsPort: port.optional(),
});
export type Endpoint = z.infer<typeof Endpoint>;

export const Gateway = z.strictObject({
  schema: schemaVersion,
  id: z.string().min(1).max(128),
  cluster: clusterName,
  network: dnsLabel,
  locality: Locality,
  address: host,
  port,
});
export type Gateway = z.infer<typeof Gateway>;

export const HealthyCount = z.strictObject({ locality: Locality, healthy: z.number().int().nonnegative(), total: z.number().int().nonnegative() });
export type HealthyCount = z.infer<typeof HealthyCount>;

/** `/causeway/v1/exports/_cluster`: what a peer needs to reach this cluster. */
export const ExportedCluster = z.strictObject({
  schema: schemaVersion,
  name: clusterName,
  locality: Locality,
  network: dnsLabel,
  trustDomain: z.string().min(1),
  gateways: z.array(GatewayAddress),
});
export type ExportedCluster = z.infer<typeof ExportedCluster>;

/** `/causeway/v1/exports/<ns>/<name>`: the spec plus healthy counts per locality. */
export const ExportedService = z.strictObject({
  schema: schemaVersion,
  service: ServiceSpec,
  healthy: z.array(HealthyCount),
  exportedAt: z.iso.datetime(),
});
export type ExportedService = z.infer<typeof ExportedService>;

/**
 * `/causeway/v1/exports/_heartbeat`. `sequence` is the owner's clock in ms made strictly
 * monotonic by the publisher; readers take freshness from it advancing, not from `at` or
 * the key existing (docs/architecture.md "Federation rules"). Optional only so that beats
 * of older peers, which carry `at` alone, still decode (federation/README.md "Staleness").
 */
export const Heartbeat = z.strictObject({
  schema: schemaVersion,
  cluster: clusterName,
  at: z.iso.datetime(),
  sequence: z.number().int().nonnegative().optional(),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

/** `/causeway/v1/imports/<peer>/<ns>/<name>`: a peer's export mirrored locally. */
export const ImportedService = z.strictObject({
  schema: schemaVersion,
  peer: clusterName,
  service: ServiceSpec,
  healthy: z.array(HealthyCount),
  gateways: z.array(GatewayAddress),
  peerLocality: Locality,
  peerNetwork: dnsLabel,
  exportedAt: z.iso.datetime(),
  /** etcd mod revision of the export in the peer's etcd. */
  peerRevision: z.string().regex(/^\d+$/),
  stale: z.boolean().default(false),
  /** Set when another cluster's older export of the same service has different ports. */
  conflict: z.string().optional(),
});
export type ImportedService = z.infer<typeof ImportedService>;

/**
 * `local-store-down`: this cluster's etcd, where imports are written, refuses or does not
 * answer; `unauthorized`: the peer refuses this cluster's credentials (federation/README.md).
 */
export const LinkStates = ['connecting', 'syncing', 'synced', 'stale', 'expired', 'down', 'local-store-down', 'unauthorized'] as const;
export type LinkState = (typeof LinkStates)[number];

export const LinkStatus = z.strictObject({
  schema: schemaVersion,
  peer: clusterName,
  state: z.enum(LinkStates),
  initialSync: z.enum(['pending', 'done', 'timed-out']),
  appliedRevision: z.string().regex(/^\d+$/),
  lastHeartbeatAt: z.iso.datetime().optional(),
  lastSyncLagMs: z.number().nonnegative().optional(),
  imports: z.number().int().nonnegative(),
  conflicts: z.array(z.string()).default([]),
  message: z.string().optional(),
  updatedAt: z.iso.datetime(),
  /** Whether the federation currently holds a working watch on the peer's etcd. */
  connected: z.boolean().optional(),
  /** Imports currently flagged `stale`. */
  importsStale: z.number().int().nonnegative().optional(),
  /** Imports removed because the link's heartbeat passed `expireAfter`. */
  importsExpired: z.number().int().nonnegative().optional(),
});
export type LinkStatus = z.infer<typeof LinkStatus>;

/** At most this many links in one cluster's `_links` report (a mesh of 257 clusters). */
export const MAX_REPORTED_LINKS = 256;
/** At most this many bytes of `_links` JSON are read (256 links take about 40 KiB). */
export const MAX_REPORTED_LINKS_BYTES = 64 * 1024;

const durationMs = z.number().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** One link of a `_links` report: what the view shows of it, no address and no secret. */
export const ReportedLink = z.strictObject({
  peer: clusterName,
  state: z.enum(LinkStates),
  heartbeatAgeMs: durationMs.optional(),
  syncLagMs: durationMs.optional(),
  imports: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  conflicts: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
});
export type ReportedLink = z.infer<typeof ReportedLink>;

const reportedLinkFields = {
  schema: schemaVersion,
  /** The reporting cluster: the links are `cluster → links[].peer`. */
  cluster: clusterName,
  /** The reporter's clock when it wrote the report (readers age reports on their own clock). */
  reportedAt: z.iso.datetime(),
  links: z.array(ReportedLink).max(MAX_REPORTED_LINKS, { error: `at most ${MAX_REPORTED_LINKS} links` }),
};

function oneLinkPerPeer(value: { cluster: string; links: readonly ReportedLink[] }, ctx: z.core.$RefinementCtx): void {
  const seen = new Set<string>();
  value.links.forEach((link, i) => {
    if (link.peer === value.cluster) ctx.addIssue({ code: 'custom', path: ['links', i, 'peer'], message: `a link of ${value.cluster} to itself` });
    if (seen.has(link.peer)) ctx.addIssue({ code: 'custom', path: ['links', i, 'peer'], message: `a second link to ${link.peer}` });
    seen.add(link.peer);
  });
}

/** `/causeway/v1/exports/_links`: the cluster's own federation links, written by its federation. */
export const ReportedLinks = z.strictObject(reportedLinkFields).superRefine(oneLinkPerPeer);
export type ReportedLinks = z.infer<typeof ReportedLinks>;

/** `/causeway/v1/imports/<peer>/_links`: the last valid report read from `peer`, and when this cluster received it. */
export const PeerReportedLinks = z.strictObject({ ...reportedLinkFields, receivedAt: z.iso.datetime() }).superRefine(oneLinkPerPeer);
export type PeerReportedLinks = z.infer<typeof PeerReportedLinks>;

const PeerSelector = z.strictObject({
  identities: z.array(spiffeIdText).optional().describe("callers' SPIFFE IDs"),
  namespaces: z.array(dnsLabel).optional().describe("callers' namespaces"),
  clusters: z.array(clusterName).optional().describe("callers' clusters"),
});

export const AuthorizationPolicy = z.strictObject({
  schema: schemaVersion,
  name: dnsLabel.describe('policy name, unique per kind in its namespace'),
  namespace: dnsLabel.describe("the policy's namespace"),
  service: dnsLabel.optional().describe("target service in the policy's namespace; omitted = every service in the namespace"),
  action: z.enum(['allow', 'deny']).describe('what happens to the callers from matches'),
  from: z
    .array(PeerSelector.describe('a caller matches when it matches every field given'))
    .default([])
    .describe('callers the policy applies to, any of these; empty = every caller'),
  ports: z.array(port).default([]).describe('service ports the policy applies to; empty = all'),
});
export type AuthorizationPolicy = z.infer<typeof AuthorizationPolicy>;

const Split = z
  .array(
    z.strictObject({
      subset: dnsLabel.describe("one of the service's subsets"),
      weight: z.number().int().min(0).max(10_000).describe("the subset's share, relative to the other weights (0-10000)"),
    }),
  )
  .min(1)
  .refine((split) => new Set(split.map((s) => s.subset)).size === split.length, 'each subset may appear once')
  .refine((split) => split.some((s) => s.weight > 0), 'at least one subset needs a weight above 0');

/** A user's regular expression: checked to run on V8's linear-time engine (no catastrophic backtracking). */
const boundedRegex = z.string().superRefine((v, ctx) => {
  const problem = boundedRegexProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

const HTTP_TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Exactly one of the listed keys must be set on a match (`path`, `headers[i]`). */
function exactlyOne<T extends object>(keys: readonly (keyof T & string)[]) {
  return (value: T, ctx: z.RefinementCtx) => {
    const given = keys.filter((k) => value[k] !== undefined);
    if (given.length !== 1) ctx.addIssue({ code: 'custom', message: `give exactly one of ${keys.join(', ')} (got ${given.length === 0 ? 'none' : given.join(', ')})` });
  };
}

export const HeaderMatch = z
  .strictObject({
    name: z.string().regex(HTTP_TOKEN, 'not an HTTP header name').max(128).transform((v) => v.toLowerCase()).describe('header name (any case)'),
    exact: z.string().max(4096).optional().describe('the value equals this'),
    prefix: z.string().min(1).max(4096).optional().describe('the value starts with this'),
    regex: boundedRegex.optional().describe('the whole value matches this regular expression (linear-time engine: no back-references or lookahead; at most 256 characters)'),
  })
  .superRefine(exactlyOne(['exact', 'prefix', 'regex']));
export type HeaderMatch = z.infer<typeof HeaderMatch>;

export const RouteMatch = z.strictObject({
  path: z
    .strictObject({
      exact: z.string().startsWith('/', 'a path starts with /').max(4096).optional().describe('the path (without the query) equals this'),
      prefix: z.string().startsWith('/', 'a path prefix starts with /').max(4096).optional().describe('the path starts with this'),
    })
    .superRefine(exactlyOne(['exact', 'prefix']))
    .optional()
    .describe('the request path; omitted = any'),
  method: z.string().regex(HTTP_TOKEN, 'not an HTTP method').max(32).transform((v) => v.toUpperCase()).optional().describe('the request method, e.g. GET; omitted = any'),
  headers: z.array(HeaderMatch).max(32).default([]).describe('headers that must all match; a header given twice is matched by its first value'),
});
export type RouteMatch = z.infer<typeof RouteMatch>;

/**
 * Conditions a request is retried on (Envoy's `retry_on` vocabulary, and gRPC status
 * names for gRPC ports): `connect-failure` (connect or handshake failed), `refused-stream`
 * (the request never reached the app), `reset` (no response: reset, closed or per-try
 * timeout), `5xx`, `gateway-error` (502, 503, 504), `retriable-status-codes` (the
 * route's `retriableStatusCodes`), and gRPC `cancelled`, `deadline-exceeded`,
 * `resource-exhausted`, `internal`, `unavailable`.
 */
export const RetryConditions = [
  'connect-failure',
  'refused-stream',
  'reset',
  '5xx',
  'gateway-error',
  'retriable-status-codes',
  'cancelled',
  'deadline-exceeded',
  'resource-exhausted',
  'internal',
  'unavailable',
] as const;
export type RetryCondition = (typeof RetryConditions)[number];

export const RouteRetries = z.strictObject({
  attempts: z.number().int().min(0).max(10).describe('retries after the first try, each on another target when there is one (0-10; Istio\'s meaning of attempts)'),
  perTryTimeoutMs: z.number().int().positive().optional().describe('how long one try may wait for the response head, in ms; omitted = the policy\'s requestTimeoutMs'),
  on: z
    .array(z.enum(RetryConditions))
    .min(1)
    .optional()
    .describe(`what is retried, any of: ${RetryConditions.join(', ')}; omitted = connect-failure, refused-stream, reset, unavailable, cancelled, retriable-status-codes`),
  retriableStatusCodes: z.array(z.number().int().min(100).max(599)).max(32).optional().describe('statuses retried under retriable-status-codes; omitted = [503]'),
});
export type RouteRetries = z.infer<typeof RouteRetries>;

export const RouteRateLimit = z.strictObject({
  requestsPerSecond: z.number().positive().max(1_000_000).describe('tokens added per second to the route\'s bucket (per sidecar)'),
  burst: z.number().int().min(1).max(1_000_000).optional().describe('bucket size: requests allowed at once after a quiet spell; omitted = requestsPerSecond rounded up'),
});
export type RouteRateLimit = z.infer<typeof RouteRateLimit>;

export const TrafficRoute = z
  .strictObject({
    name: dnsLabel
      .refine((v) => v !== 'default', '"default" is the name of the route made of the top-level fields; pick another')
      .describe('route name, unique in the policy (metrics and logs carry it)'),
    match: RouteMatch.default(() => ({ headers: [] })).describe('what requests the route takes; omitted = every request'),
    subset: dnsLabel.optional().describe("send the route's requests to this one subset of the service"),
    split: Split.optional().describe("weighted split between subsets for the route's requests"),
    timeoutMs: z.number().int().positive().optional().describe('how long the request may wait for the response head over all its tries and back-offs, in ms; then 504; omitted = no limit'),
    retries: RouteRetries.optional().describe('retry policy of the route; omitted = the default route\'s'),
    rateLimit: RouteRateLimit.optional().describe('local token bucket per sidecar; past it HTTP requests get 429 (gRPC: RESOURCE_EXHAUSTED)'),
  })
  .superRefine((route, ctx) => {
    if (route.subset !== undefined && route.split !== undefined) ctx.addIssue({ code: 'custom', path: ['subset'], message: 'give subset or split, not both' });
  });
export type TrafficRoute = z.infer<typeof TrafficRoute>;

export const TrafficPolicy = z.strictObject({
  schema: schemaVersion,
  name: dnsLabel.describe('policy name, unique per kind in its namespace'),
  namespace: dnsLabel.describe("the policy's namespace"),
  service: dnsLabel.describe("the service in the policy's namespace whose callers the policy steers"),
  failoverOrder: z.array(clusterName).optional().describe('cluster names in preferred order; overrides locality priority'),
  connectTimeoutMs: z.number().int().positive().optional().describe("connect plus mTLS handshake to one target, in ms (default: the caller's sidecar.connectTimeoutMs)"),
  requestTimeoutMs: z.number().int().positive().optional().describe('how long one attempt of an HTTP request may wait for the response head, in ms; an idempotent request then moves on to the next target, others answer 504; omitted = no limit'),
  retries: z.number().int().min(0).max(10).optional().describe("retries of a failed request or connection on another target (0-10; default: the caller's sidecar.maxAttempts - 1)"),
  outlierDetection: z
    .strictObject({
      consecutiveFailures: z.number().int().min(1).describe('failures in a row that eject a target'),
      baseEjectionMs: z.number().int().positive().describe('ejection time per ejection, in ms: the nth ejection in a row lasts n × this (capped by the sidecar\'s outlier.maxEjectionMs)'),
      maxEjectionPercent: z.number().min(0).max(100).default(100).describe('the most targets ejected at once, as a percentage (0-100); not applied by the sidecar yet'),
    })
    .optional()
    .describe("ejecting failing targets for a while (default: the caller's sidecar.outlier)"),
  split: Split.optional().describe(
    "weighted split between the service's subsets (a canary: [{subset: v1, weight: 90}, {subset: v2, weight: 10}]), per request on HTTP ports and per connection on TCP ports, in every cluster (the subset travels in the SNI); omitted = any endpoint of the service",
  ),
  routes: z
    .array(TrafficRoute)
    .max(100, 'at most 100 routes')
    .superRefine((routes, ctx) => {
      const seen = new Set<string>();
      routes.forEach((r, i) => {
        if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `route name "${r.name}" is used twice; give each route its own name` });
        seen.add(r.name);
      });
    })
    .optional()
    .describe(
      'per-request routes of HTTP ports, tried in order, the first that matches wins; a request no route matches takes the default route, made of the top-level fields (failoverOrder, requestTimeoutMs, retries, split)',
    ),
});
export type TrafficPolicy = z.infer<typeof TrafficPolicy>;

/** How a sidecar (or the controller) checks its app: a TCP connect, or an HTTP GET below 400. */
export const AppProbe = z.union([
  z.strictObject({ tcp: z.strictObject({ port: port.describe('app port to connect to') }).describe('healthy when a TCP connect succeeds') }),
  z.strictObject({
    http: z
      .strictObject({ port: port.describe('app port to send GET to'), path: z.string().startsWith('/').describe('path to GET, e.g. /healthz') })
      .describe('healthy when GET answers below 400'),
  }),
]);
export type AppProbe = z.infer<typeof AppProbe>;

export const WorkloadGroup = z.strictObject({
  schema: schemaVersion,
  name: dnsLabel.describe('group name; its hosts register as endpoints named <name>-<address>'),
  namespace: dnsLabel.describe("the group's namespace, also its hosts' and service's"),
  service: dnsLabel.describe("the service the group's hosts serve (created from the group when it does not exist)"),
  serviceAccount: z.string().regex(/^[A-Za-z0-9._-]+$/).describe('the one service account every host of the group runs as'),
  labels: z.record(z.string(), z.string()).default({}).describe("labels of every host's endpoint"),
  ports: z.array(ServicePort).min(1).describe("the ports the hosts serve; they must be the service's ports"),
  probe: AppProbe.optional().describe("how each host's sidecar (or the controller, with --active-health-checks) checks the app"),
});
export type WorkloadGroup = z.infer<typeof WorkloadGroup>;

/**
 * Endpoint label naming the network an endpoint sits in when it is not its cluster's own
 * (a VM onboarded from outside the cluster networks). No label: the cluster's network.
 */
export const NETWORK_LABEL = 'causeway.io/network';

/**
 * The endpoint id of a host onboarded into a workload group: `<group>-<address>`, with
 * anything outside `[a-z0-9.-]` (e.g. an IPv6 colon) replaced by `-`.
 */
export function workloadGroupEndpointId(group: string, address: string): string {
  return `${group}-${address}`.toLowerCase().replace(/[^a-z0-9.-]/g, '-').replace(/-+$/, '');
}

/**
 * Decodes a JSON value read from etcd (or a file) with `schema`. Returns the value or
 * the {@link ValidationError} naming the key and the bad paths; never throws for bad data.
 */
export function decodeCatalogValue<S extends z.ZodType>(
  schema: S,
  key: string,
  raw: string | Buffer,
): { ok: true; value: z.output<S> } | { ok: false; error: ValidationError } {
  let json: unknown;
  try {
    json = JSON.parse(typeof raw === 'string' ? raw : raw.toString('utf8'));
  } catch (error) {
    return {
      ok: false,
      error: toError(key, [{ path: '', message: `not JSON (${(error as Error).message})` }]),
    };
  }
  try {
    return { ok: true, value: validate(schema, json, key, ErrorCodes.catalogValueInvalid) };
  } catch (error) {
    return { ok: false, error: error as ValidationError };
  }
}

/** Serialises a catalog value after validating it, so writers cannot store what readers refuse. */
export function encodeCatalogValue<S extends z.ZodType>(schema: S, key: string, value: z.input<S>): string {
  return JSON.stringify(validate(schema, value, key, ErrorCodes.catalogValueInvalid));
}

function toError(key: string, issues: { path: string; message: string }[]): ValidationError {
  return new ValidationError(ErrorCodes.catalogValueInvalid, key, issues);
}
