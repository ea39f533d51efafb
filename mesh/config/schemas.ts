import { z } from 'zod';
import { Locality, ServicePort } from '../catalog.js';
import { clusterName, dnsLabel, dnsName, durationMs, host, port, portOrZero } from '../validation.js';

/**
 * Configuration schemas of every component. Defaults live here and only here; loaders
 * return frozen objects. `causeway config schema` prints the JSON Schema generated from these.
 */

const etcdEndpoint = z.string().superRefine((v, ctx) => {
  try {
    const u = new URL(v);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') ctx.addIssue({ code: 'custom', message: 'not a URL with http:// or https://' });
  } catch {
    ctx.addIssue({ code: 'custom', message: 'not a URL' });
  }
});

export const TlsFiles = z.strictObject({
  /** PEM bundle of CAs to trust. */
  ca: z.string().min(1),
  cert: z.string().min(1).optional(),
  key: z.string().min(1).optional(),
});

export const EtcdConnection = z.strictObject({
  endpoints: z.array(etcdEndpoint).min(1, 'list at least one etcd endpoint URL'),
  tls: TlsFiles.optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  dialTimeoutMs: durationMs.default(5000),
});
export type EtcdConnection = z.infer<typeof EtcdConnection>;

export const ObservabilityConfig = z.strictObject({
  host: host.default('0.0.0.0'),
  /** `/healthz/ready`; 0 picks a free port. */
  readyPort: portOrZero.default(15021),
  /** Prometheus `/metrics`; 0 picks a free port; may equal readyPort. */
  metricsPort: portOrZero.default(15090),
});
export type ObservabilityConfig = z.infer<typeof ObservabilityConfig>;
const observabilityDefaults = () => ObservabilityConfig.parse({});

export const LinkConfig = z.strictObject({
  peer: clusterName,
  etcd: EtcdConnection,
});
export type LinkConfig = z.infer<typeof LinkConfig>;

export const FederationConfig = z.strictObject({
  staleAfterMs: durationMs.default(15_000),
  expireAfterMs: durationMs.default(300_000),
  initialSyncTimeoutMs: durationMs.default(30_000),
  heartbeatIntervalMs: durationMs.default(2_000),
});
export type FederationConfig = z.infer<typeof FederationConfig>;

export const GatewayConfig = z.strictObject({
  host: host.default('0.0.0.0'),
  port: portOrZero.default(15443),
  /** Address peers use to reach this gateway (defaults to host). */
  advertiseAddress: host.optional(),
  inspectTimeoutMs: durationMs.default(5_000),
  connectTimeoutMs: durationMs.default(2_000),
  idleTimeoutMs: durationMs.default(3_600_000),
  maxConnections: z.number().int().positive().default(100_000),
  drainTimeoutMs: durationMs.default(30_000),
  balancer: z.enum(['round-robin', 'least-connections']).default('round-robin'),
  connectAttempts: z.number().int().min(1).max(10).default(3),
});
export type GatewayConfig = z.infer<typeof GatewayConfig>;

export const ControllerConfig = z.strictObject({
  host: host.default('0.0.0.0'),
  grpcPort: portOrZero.default(15012),
  /** Directory holding this cluster's intermediate CA (ca-key.pem, ca-cert.pem, cert-chain.pem, trust-bundle.pem). */
  caDir: z.string().min(1).optional(),
  endpointLeaseTtlSeconds: z.number().int().min(2).max(60).default(10),
  /** The lease of this controller's own registration: a controller that dies unannounced leaves `controllers` within it. */
  leaseTtlSeconds: z.number().int().min(2).max(60).default(10),
  pushDebounceMs: durationMs.default(100),
  dns: z.strictObject({ port: portOrZero.default(15053), host: host.default('127.0.0.1') }).optional(),
});
export type ControllerConfig = z.infer<typeof ControllerConfig>;

/** A cluster's config: shared by `causeway controller`, `federation` and `gateway`. */
export const ClusterConfig = z.strictObject({
  cluster: z.strictObject({
    name: clusterName,
    locality: Locality,
    network: dnsLabel.default('default'),
  }),
  trustDomain: dnsName.default('causeway.internal'),
  meshDomain: dnsName.default('causeway.internal'),
  etcd: EtcdConnection,
  links: z.array(LinkConfig).default([]),
  federation: FederationConfig.default(() => FederationConfig.parse({})),
  controller: ControllerConfig.default(() => ControllerConfig.parse({})),
  gateway: GatewayConfig.default(() => GatewayConfig.parse({})),
  observability: ObservabilityConfig.default(observabilityDefaults),
});
export type ClusterConfig = z.infer<typeof ClusterConfig>;

export const UpstreamConfig = z.strictObject({
  /** `<service>.<namespace>` */
  service: z.string().regex(/^[a-z0-9-]+\.[a-z0-9-]+$/, 'expected <service>.<namespace>'),
  port,
  localPort: port,
  localAddress: host.default('127.0.0.1'),
});

/** A workload's sidecar config (containers, VMs and bare-metal hosts alike). */
export const WorkloadConfig = z.strictObject({
  cluster: clusterName,
  locality: Locality,
  trustDomain: dnsName.default('causeway.internal'),
  meshDomain: dnsName.default('causeway.internal'),
  namespace: dnsLabel,
  service: dnsLabel,
  serviceAccount: z.string().regex(/^[A-Za-z0-9._-]+$/, 'service account may contain only letters, digits, ".", "-" and "_"'),
  /**
   * The workload group a VM or bare-metal host was onboarded into (`causeway workload
   * bundle`); its endpoint is then named `<group>-<advertiseAddress>`.
   */
  workloadGroup: dnsLabel.optional(),
  labels: z.record(z.string(), z.string()).default({}),
  ports: z.array(ServicePort).default([]),
  /** Controller gRPC address `host:port` (directly, or a gateway with the controller's SNI). */
  controller: z.strictObject({ address: z.string().regex(/^[^\s:]+:\d+$/, 'expected host:port'), viaGateway: z.boolean().default(false) }),
  /**
   * This cluster's east-west gateway as this workload reaches it (`host:port`), for a
   * workload whose network differs from some of its cluster's endpoints (a VM outside the
   * cluster networks, or the cluster's workloads calling such a VM): endpoints whose
   * `causeway.io/network` label differs from this workload's own are reached through it.
   */
  networkGateway: z.string().regex(/^[^\s:]+:\d+$/, 'expected host:port').optional(),
  /** Where this workload's sidecar is reachable by peers (its inbound address). */
  advertiseAddress: host,
  inboundPort: portOrZero.default(15006),
  dnsPort: portOrZero.default(15053),
  stateDir: z.string().min(1),
  joinTokenFile: z.string().optional(),
  trustBundleFile: z.string().optional(),
  mtlsMode: z.enum(['strict', 'permissive']).default('strict'),
  upstreams: z.array(UpstreamConfig).default([]),
  probe: z
    .union([z.strictObject({ tcp: z.strictObject({ port }) }), z.strictObject({ http: z.strictObject({ port, path: z.string().startsWith('/') }) })])
    .optional(),
  observability: ObservabilityConfig.default(observabilityDefaults),
});
export type WorkloadConfig = z.infer<typeof WorkloadConfig>;

export const ConfigSchemas = { cluster: ClusterConfig, workload: WorkloadConfig } as const;
export type ConfigKind = keyof typeof ConfigSchemas;
