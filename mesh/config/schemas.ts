import { z } from 'zod';
import { AppProbe, Locality, ServicePort } from '../catalog.js';
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
  ca: z.string().min(1).describe('PEM bundle of the CAs to trust for the server certificate (a file path)'),
  cert: z.string().min(1).optional().describe('client certificate chain (PEM file path), for an etcd with --client-cert-auth'),
  key: z.string().min(1).optional().describe("the client certificate's private key (PEM file path)"),
});

export const EtcdConnection = z.strictObject({
  endpoints: z.array(etcdEndpoint).min(1, 'list at least one etcd endpoint URL').describe('etcd client URLs (http:// or https://), at least one'),
  tls: TlsFiles.optional().describe('TLS to etcd; omitted = plaintext (http:// endpoints)'),
  username: z.string().optional().describe('etcd user name, for an etcd with auth enabled'),
  password: z.string().optional().describe("the etcd user's password"),
  dialTimeoutMs: durationMs.default(5000).describe('how long to wait for a connection to etcd: milliseconds, or a duration such as 5s'),
  serverName: dnsName
    .optional()
    .describe("TLS server name (SNI) to send and to verify the server certificate against, instead of the endpoint's host: a peer's export store reached through its gateway answers as exports.<cluster>.cw1.<trust-domain>"),
});
export type EtcdConnection = z.infer<typeof EtcdConnection>;

const httpsEndpoint = z.string().superRefine((v, ctx) => {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'not a URL; expected https://host:port of the export store' });
    return;
  }
  if (u.protocol !== 'https:') {
    ctx.addIssue({ code: 'custom', message: 'the export store serves TLS with client certificates only: use https:// (its certificates come from `causeway federation init`)' });
  }
});

const requiredFile = (what: string) => z.string({ error: `required: ${what}` }).min(1, `required: ${what}`);

/**
 * The controller's login to this cluster's export store (docs/architecture.md "Ports",
 * federation/README.md "The export store"): TLS with a client certificate, always.
 */
export const ExportStoreConfig = z.strictObject({
  endpoints: z
    .array(httpsEndpoint)
    .min(1, 'list at least one export-store endpoint URL (https://host:2479)')
    .describe("the export store's client URLs, https:// only (default port 2479), as this cluster's controller reaches it"),
  tls: z
    .strictObject(
      {
        ca: requiredFile("the export store's CA (export-store-ca.pem from `causeway federation init`)").describe("the export store's CA (export-store-ca.pem from `causeway federation init`): verifies its server certificate"),
        cert: requiredFile("the controller's client certificate (controller-at-export-store.pem from `causeway federation init`)").describe(
          "the controller's client certificate, CN=root (controller-at-export-store.pem from `causeway federation init`)",
        ),
        key: requiredFile("its key (controller-at-export-store-key.pem from `causeway federation init`)").describe("the controller's client key (controller-at-export-store-key.pem)"),
      },
      { error: 'required: ca, cert and key from `causeway federation init` (the export store requires a client certificate)' },
    )
    .describe('TLS to the export store with the client certificate `causeway federation init` made'),
  dialTimeoutMs: durationMs.default(5000).describe('how long to wait for a connection to the export store (ms, or a duration)'),
});
export type ExportStoreConfig = z.infer<typeof ExportStoreConfig>;

export const ObservabilityConfig = z.strictObject({
  host: host.default('0.0.0.0').describe('address the readiness and metrics servers bind'),
  readyPort: portOrZero.default(15021).describe('port of `/healthz/ready`; 0 picks a free port'),
  metricsPort: portOrZero.default(15090).describe('port of the Prometheus `/metrics`; 0 picks a free port; may equal readyPort'),
});
export type ObservabilityConfig = z.infer<typeof ObservabilityConfig>;
const observabilityDefaults = () => ObservabilityConfig.parse({});

const gatewayAddress = z.string().regex(/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/, 'expected host:port');

export const LinkConfig = z
  .strictObject({
    peer: clusterName.describe("the peer cluster's name, as in its own cluster.name"),
    gateways: z
      .array(gatewayAddress)
      .min(1, "list at least one of the peer's gateways (host:port)")
      .optional()
      .describe("the peer's gateway(s) as host:port: the link reaches the peer's export store through them by SNI; several = failover"),
    tls: z
      .strictObject({
        ca: requiredFile("the peer export store's CA (ca.pem written by `causeway federation grant` at the peer)").describe("the peer export store's CA (ca.pem from the peer's `causeway federation grant`)"),
        cert: requiredFile('the client certificate `causeway federation grant` issued (cert.pem)').describe('the client certificate the peer issued with `causeway federation grant` (cert.pem)'),
        key: requiredFile('its key (key.pem)').describe('its key (key.pem)'),
      })
      .optional()
      .describe('with gateways: the credentials `causeway federation grant` wrote at the peer'),
    etcd: EtcdConnection.optional().describe("instead of gateways, the peer's etcd directly (tests, development), with the read-only credentials `causeway federation grant` made there"),
  })
  .superRefine((link, ctx) => {
    if (link.gateways !== undefined && link.etcd !== undefined) ctx.addIssue({ code: 'custom', path: ['etcd'], message: 'give either gateways (with tls) or etcd, not both' });
    else if (link.gateways === undefined && link.etcd === undefined) ctx.addIssue({ code: 'custom', path: ['gateways'], message: "required: the peer's gateways (host:port, with tls) — or etcd for a direct link" });
    if (link.gateways !== undefined && link.tls === undefined) ctx.addIssue({ code: 'custom', path: ['tls'], message: 'required with gateways: ca, cert and key from `causeway federation grant` at the peer' });
    if (link.etcd !== undefined && link.tls !== undefined) ctx.addIssue({ code: 'custom', path: ['tls'], message: 'with etcd, put the TLS files under etcd.tls' });
  });
export type LinkConfig = z.infer<typeof LinkConfig>;

export const FederationConfig = z.strictObject({
  staleAfterMs: durationMs.default(15_000).describe("a peer's imports are marked stale when its heartbeat is older than this (ms, or a duration such as 15s)"),
  expireAfterMs: durationMs.default(300_000).describe("a peer's imports are removed when its heartbeat is older than this (ms, or a duration such as 5m)"),
  initialSyncTimeoutMs: durationMs.default(30_000).describe("how long readiness waits for a link's first full copy of the peer's exports; after it the link reports ready without it (ms, or a duration)"),
  heartbeatIntervalMs: durationMs.default(2_000).describe("how often this cluster writes its heartbeat for peers to read (ms, or a duration)"),
});
export type FederationConfig = z.infer<typeof FederationConfig>;

export const GatewayConfig = z.strictObject({
  host: host.default('0.0.0.0').describe('address the SNI passthrough listener binds'),
  port: portOrZero.default(15443).describe('port of the SNI passthrough listener; 0 picks a free port'),
  advertiseAddress: host.optional().describe('address peers and off-network workloads use to reach this gateway (default: host)'),
  inspectTimeoutMs: durationMs.default(5_000).describe('how long a new connection may take to send its TLS ClientHello before it is closed (ms, or a duration)'),
  connectTimeoutMs: durationMs.default(2_000).describe('TCP connect timeout to one endpoint; on timeout the next is tried (ms, or a duration)'),
  idleTimeoutMs: durationMs.default(3_600_000).describe('a relayed connection with no bytes either way for this long is closed (ms, or a duration)'),
  maxConnections: z.number().int().positive().default(100_000).describe('open connections at most; beyond it new ones are refused'),
  drainTimeoutMs: durationMs.default(30_000).describe('on SIGTERM, how long open connections may finish before they are closed (ms, or a duration)'),
  balancer: z.enum(['round-robin', 'least-connections']).default('least-connections').describe('how an endpoint is chosen among the healthy ones: least-connections (the default; connections through a gateway are long-lived HTTP/2 sessions and pooled connections) or round-robin'),
  connectAttempts: z.number().int().min(1).max(10).default(3).describe('endpoints tried per connection before it is refused (1-10)'),
});
export type GatewayConfig = z.infer<typeof GatewayConfig>;

export const ControllerConfig = z.strictObject({
  host: host.default('0.0.0.0').describe('address the gRPC server (discovery, registration, CA) binds'),
  grpcPort: portOrZero.default(15012).describe('port of the mTLS gRPC server; 0 picks a free port'),
  caDir: z
    .string()
    .min(1)
    .optional()
    .describe("directory holding this cluster's intermediate CA from `causeway ca intermediate` (ca-key.pem, ca-cert.pem, cert-chain.pem, trust-bundle.pem)"),
  endpointLeaseTtlSeconds: z.number().int().min(2).max(60).default(10).describe("seconds a registered endpoint outlives its sidecar's last keep-alive (2-60)"),
  leaseTtlSeconds: z
    .number()
    .int()
    .min(2)
    .max(60)
    .default(10)
    .describe("seconds this controller's own registration (/causeway/v1/controllers/) outlives it: a controller that dies unannounced leaves the cluster record's controllers within it (2-60)"),
  pushDebounceMs: durationMs.default(100).describe('catalog changes within this window go out as one discovery push (ms, or a duration)'),
  dns: z
    .strictObject({
      port: portOrZero.default(15053).describe('port of the operator DNS server; 0 picks a free port'),
      host: host.default('127.0.0.1').describe('address the operator DNS server binds'),
    })
    .optional()
    .describe('operator DNS: answers mesh names from the catalog; omitted = off'),
});
export type ControllerConfig = z.infer<typeof ControllerConfig>;

/** The mesh view (`causeway ui`, ui/README.md); in a controller's config it also runs inside the controller. */
export const UiConfig = z.strictObject({
  host: host.default('127.0.0.1').describe('address of the page; anything but loopback also needs allowRemote (the page has no login)'),
  port: portOrZero.default(15080).describe('port of the page; 0 picks a free port'),
  allowRemote: z.boolean().default(false).describe('allow a non-loopback host: everyone who reaches it sees the mesh topology'),
  prometheus: z.url({ protocol: /^https?$/ }).optional().describe('a Prometheus server scraping the sidecars, for request rate, 5xx ratio and p99 between clusters, and certificate expiries'),
  scrape: z.array(z.url({ protocol: /^https?$/ })).optional().describe("instead of prometheus: the sidecars' /metrics URLs, scraped on every read for the traffic numbers (default: the metrics ports the local catalog's endpoints registered)"),
  refreshMs: z.number().int().min(100).max(60_000).default(1000).describe('how often the view reads the local etcd, in ms'),
});
export type UiConfig = z.infer<typeof UiConfig>;

/** A cluster's config: shared by `causeway controller`, `federation` and `gateway`. */
export const ClusterConfig = z.strictObject({
  cluster: z
    .strictObject({
      name: clusterName.describe("this cluster's name, unique in the mesh; it appears in SNIs and in peers' imports"),
      locality: Locality.describe("this cluster's region and zone, for locality-aware failover"),
      network: dnsLabel.default('default').describe("the network this cluster's endpoints are in; endpoints in another network are reached through its gateway"),
    })
    .describe('who this cluster is'),
  trustDomain: dnsName.default('causeway.internal').describe('SPIFFE trust domain of every identity in the mesh (spiffe://<trustDomain>/ns/…/sa/…)'),
  meshDomain: dnsName.default('causeway.internal').describe('DNS domain of mesh names: <service>.<namespace>.svc.<meshDomain>'),
  etcd: EtcdConnection.describe("this cluster's own etcd: the catalog and registry (and the exports, when there is no exportStore)"),
  exportStore: ExportStoreConfig.optional().describe(
    "this cluster's export store, the peer-facing etcd (port 2479) that holds only what peers may read: the controller writes the exports there, peers read them through the gateway. Omitted = exports in the main etcd",
  ),
  links: z.array(LinkConfig).default([]).describe('peer clusters whose exports this cluster imports, one link each'),
  federation: FederationConfig.default(() => FederationConfig.parse({})).describe('timing of the federation links: heartbeats, staleness, expiry'),
  controller: ControllerConfig.default(() => ControllerConfig.parse({})).describe('the controller (`causeway controller`)'),
  gateway: GatewayConfig.default(() => GatewayConfig.parse({})).describe('the east-west gateway (`causeway gateway`)'),
  observability: ObservabilityConfig.default(observabilityDefaults).describe('readiness and Prometheus metrics endpoints'),
  ui: UiConfig.optional().describe('the live mesh view: `causeway ui` reads its defaults here, and the controller serves it too when this section is present (off when omitted)'),
});
export type ClusterConfig = z.infer<typeof ClusterConfig>;

export const UpstreamConfig = z.strictObject({
  service: z.string().regex(/^[a-z0-9-]+\.[a-z0-9-]+$/, 'expected <service>.<namespace>').describe('the mesh service, as <service>.<namespace>'),
  port: port.describe("the service's port"),
  localPort: port.describe('port the app connects to on localAddress to reach the service'),
  localAddress: host.default('127.0.0.1').describe('address of the fixed local listener for this upstream'),
});

/** A workload's sidecar config (containers, VMs and bare-metal hosts alike). */
export const WorkloadConfig = z.strictObject({
  cluster: clusterName.describe('the cluster this workload belongs to'),
  locality: Locality.describe("this workload's region and zone, for locality-aware failover"),
  trustDomain: dnsName.default('causeway.internal').describe("the mesh's SPIFFE trust domain, as in the cluster config"),
  meshDomain: dnsName.default('causeway.internal').describe("the mesh's DNS domain, as in the cluster config"),
  namespace: dnsLabel.describe("the workload's namespace"),
  service: dnsLabel.describe('the service this workload serves'),
  serviceAccount: z
    .string()
    .regex(/^[A-Za-z0-9._-]+$/, 'service account may contain only letters, digits, ".", "-" and "_"')
    .describe("the workload's identity: spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>"),
  workloadGroup: dnsLabel
    .optional()
    .describe('the workload group a VM or bare-metal host was onboarded into (`causeway workload bundle`); its endpoint is then named <group>-<advertiseAddress>'),
  labels: z.record(z.string(), z.string()).default({}).describe("labels of this workload's endpoint (e.g. version: v2), matched by service subsets"),
  ports: z.array(ServicePort).default([]).describe('the ports this workload serves'),
  controller: z
    .strictObject({
      address: z.string().regex(/^[^\s:]+:\d+$/, 'expected host:port').describe("the controller's gRPC address host:port, or a gateway's with viaGateway"),
      viaGateway: z.boolean().default(false).describe("address is an east-west gateway: reach the controller through it by the controller's SNI"),
    })
    .describe('where the sidecar gets certificates and discovery, and registers'),
  networkGateway: z
    .string()
    .regex(/^[^\s:]+:\d+$/, 'expected host:port')
    .optional()
    .describe(
      "this cluster's east-west gateway as this workload reaches it (host:port), for a workload whose network differs from some of its cluster's endpoints (a VM outside the cluster networks, or the cluster's workloads calling such a VM): endpoints whose causeway.io/network label differs from this workload's own are reached through it",
    ),
  advertiseAddress: host.describe("where peers reach this workload's sidecar (its inbound address)"),
  inboundPort: portOrZero.default(15006).describe('port of the inbound mTLS listener; 0 picks a free port'),
  dnsPort: portOrZero.default(15053).describe("port of the sidecar's DNS server for the app; 0 picks a free port"),
  stateDir: z.string().min(1).describe("directory for the sidecar's state: its key and certificates"),
  joinTokenFile: z.string().optional().describe('join token file (`causeway ca token`): proves the identity when the sidecar has no valid certificate yet'),
  trustBundleFile: z.string().optional().describe("the mesh's trust bundle (PEM file path) to verify the controller with (default: <stateDir>/trust-bundle.pem)"),
  mtlsMode: z.enum(['strict', 'permissive']).default('strict').describe('strict: inbound accepts only mTLS; permissive: plaintext too (for migration)'),
  upstreams: z.array(UpstreamConfig).default([]).describe('fixed local listeners for services the app reaches by port rather than by mesh name'),
  probe: AppProbe.optional().describe("how the sidecar checks the app's health; omitted = healthy when registered"),
  observability: ObservabilityConfig.default(observabilityDefaults).describe("the sidecar's readiness and Prometheus metrics endpoints"),
});
export type WorkloadConfig = z.infer<typeof WorkloadConfig>;

export const ConfigSchemas = { cluster: ClusterConfig, workload: WorkloadConfig } as const;
export type ConfigKind = keyof typeof ConfigSchemas;
