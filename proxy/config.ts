import { z } from 'zod';
import { WorkloadConfig, configFileContent, durationMs, host, loadYamlWithSchema, parseWithSchema, port, portOrZero } from '../mesh/index.js';

/**
 * Sidecar tuning that the shared WorkloadConfig does not carry. It lives under the
 * optional `sidecar:` key of the workload file; every field has a default, so a plain
 * WorkloadConfig file is a valid sidecar config.
 */
export const SidecarTuning = z.strictObject({
  inboundHost: host.default('0.0.0.0').describe('address the inbound mTLS listener binds (peers reach it at advertiseAddress)'),
  appHost: host.default('127.0.0.1').describe('where the app listens; inbound traffic goes to <appHost>:<targetPort>'),
  outboundRange: z
    .string()
    .regex(/^(auto|127\.\d{1,3}\.\d{1,3}\.\d{1,3}\/(8|9|1[0-9]|2[0-4]))$/, 'expected a loopback CIDR such as 127.1.0.0/16, or "auto"')
    .default('auto')
    .describe(
      'loopback range the sidecar takes outbound listener addresses from, one address per mesh service (and per service pinned to a cluster); "auto" claims a free /16 in 127.64.0.0-127.254.0.0, the same one for the same workload after a restart; an explicit CIDR that another sidecar on the host claims fails start-up',
    ),
  dns: z
    .strictObject({
      host: host.default('127.0.0.1').describe('address the DNS server binds (its port is dnsPort)'),
      outside: z.enum(['forward', 'refuse']).default('forward').describe("names outside the mesh domain: forward to upstream (default: the host's first resolver), or refuse"),
      upstream: z.string().regex(/^[^\s]+:\d+$/, 'expected host:port').optional().describe("resolver host:port for names outside the mesh domain (default: the host's first resolver)"),
      ttlSeconds: z.number().int().min(0).max(3600).default(5).describe('TTL of mesh answers, in seconds (0-3600)'),
    })
    .default(() => ({ host: '127.0.0.1', outside: 'forward' as const, ttlSeconds: 5 }))
    .describe("the sidecar's DNS server for the app: mesh names answer with outbound listener addresses"),
  connectTimeoutMs: durationMs.default(2_000).describe('TCP connect plus mTLS handshake to one target (a refused connect moves on at once regardless); ms, or a duration'),
  maxAttempts: z
    .number()
    .int()
    .min(1)
    .max(10)
    .default(3)
    .describe("tries per request or connection, each on another target, when the traffic policy sets no retries (default 3: a first try and Istio's 2 retries); 1-10"),
  retryBudget: z
    .strictObject({
      percent: z.number().min(0).max(100).default(20).describe('retries in flight may be at most this share of the requests in flight to a service (0-100)'),
      minConcurrent: z.number().int().min(0).default(3).describe('retries in flight always allowed, however few requests there are'),
    })
    .default(() => ({ percent: 20, minConcurrent: 3 }))
    .describe('keeps retries from multiplying the load on a failing service (retries after a failed connect do not count: they put no load on any app)'),
  outlier: z
    .strictObject({
      consecutiveFailures: z.number().int().min(1).default(5).describe('5xx failures in a row that eject a target (a failed connect or handshake ejects at once)'),
      baseEjectionMs: durationMs.default(30_000).describe('ejection time per ejection: the nth ejection in a row lasts n × this (ms, or a duration)'),
      maxEjectionMs: durationMs.default(300_000).describe('longest ejection (ms, or a duration)'),
      gatewayMaxEjectionMs: durationMs
        .default(2_000)
        .describe("longest ejection of a remote cluster's gateway, so traffic returns soon after a region comes back (ms, or a duration)"),
    })
    .default(() => ({ consecutiveFailures: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, gatewayMaxEjectionMs: 2_000 }))
    .describe('ejecting failing targets for a while (a traffic policy may override)'),
  circuit: z
    .strictObject({
      maxConnections: z.number().int().positive().default(10_000).describe('open outbound connections at most; beyond it new ones are refused'),
      maxPendingConnects: z.number().int().positive().default(1_000).describe('outbound connects in progress at most; beyond it new ones are refused'),
    })
    .default(() => ({ maxConnections: 10_000, maxPendingConnects: 1_000 }))
    .describe('limits that keep a failing upstream from exhausting the sidecar'),
  httpProxy: z
    .strictObject({
      host: host.default('127.0.0.1').describe('address the HTTP proxy binds'),
      port: portOrZero.default(15001).describe('port of the HTTP proxy; 0 picks a free port'),
    })
    .optional()
    .describe('outbound HTTP proxy for apps that honour HTTP_PROXY (docs/architecture.md "Ports": 15001); omitted = off'),
  proxyProtocolPorts: z.array(port).default([]).describe("app target ports (TCP) that receive a PROXY protocol v2 header carrying the caller's SPIFFE ID"),
  certificateTtlSeconds: z.number().int().min(0).default(0).describe("requested workload certificate lifetime in seconds; 0 = the CA's default"),
  pkcs12: z
    .strictObject({ passwordFile: z.string().min(1).describe("file whose first line is the keystore's password (printable ASCII)") })
    .optional()
    .describe('also keep <stateDir>/workload.p12 (0600): the key, chain and trust bundle as a PKCS#12 keystore for a JVM or .NET app, rewritten on every renewal'),
  probeIntervalMs: durationMs.default(2_000).describe('how often the app is probed (see probe); ms, or a duration'),
  accessLog: z
    .union([
      z.boolean(),
      z.strictObject({ enabled: z.boolean().default(true).describe('write the access log') }),
    ])
    .default(false)
    .describe(
      'access log: one line per request and TCP connection at info level (logger field log: "access"), Envoy\'s default-format fields and response flags first (proxy/README.md "Access log"); true or { enabled: true } turns it on; off by default',
    ),
  tracing: z
    .strictObject({
      otlpEndpoint: z.url({ protocol: /^https?$/, error: 'expected an http(s) URL such as http://127.0.0.1:4318' }).optional().describe("OTLP/HTTP collector base URL (spans go to <otlpEndpoint>/v1/traces as JSON), e.g. Jaeger's or Tempo's :4318; omitted = spans are not exported (trace context is still carried on)"),
      sampling: z.number().min(0).max(1).default(0.01).describe("share of new traces (requests without a traceparent) recorded, 0-1; a caller's traceparent keeps its own sampled flag"),
      serviceName: z.string().min(1).optional().describe('service.name of the exported spans (default <service>.<namespace>)'),
      maxQueuedSpans: z.number().int().min(1).default(2048).describe('spans waiting for export at most; beyond it new spans are dropped (counted in causeway_sidecar_spans_dropped_total)'),
      exportIntervalMs: durationMs.default(1_000).describe('how often queued spans are sent (sooner when 512 are waiting); ms, or a duration'),
    })
    .optional()
    .describe('W3C trace context and spans for each HTTP request and HTTP/2 stream (proxy/README.md "Tracing"); omitted = off: traceparent passes through untouched'),
  requestId: z
    .strictObject({ generate: z.boolean().default(true).describe("give an outbound request without a valid x-request-id (1-128 visible ASCII characters) a new UUID v4; the app's valid one is kept") })
    .default({ generate: true })
    .describe('x-request-id of outbound HTTP requests (proxy/README.md "Access log")'),
});
export type SidecarTuning = z.infer<typeof SidecarTuning>;

export const SidecarConfig = WorkloadConfig.extend({
  sidecar: SidecarTuning.default(() => SidecarTuning.parse({})).describe('sidecar tuning; every key has a default, so the section may be left out'),
});
export type SidecarConfig = z.infer<typeof SidecarConfig>;
export type SidecarConfigInput = z.input<typeof SidecarConfig>;

/** Validates a sidecar config object (a WorkloadConfig plus the optional `sidecar:` tuning); frozen. */
export function parseSidecarConfig(value: unknown, source = 'sidecar config'): SidecarConfig {
  return parseWithSchema(SidecarConfig, value, source);
}

/** Reads and validates a sidecar config file, with the same errors as every other config file. */
export function loadSidecarConfig(file: string): SidecarConfig {
  return loadYamlWithSchema(SidecarConfig, file, configFileContent('workload'));
}
