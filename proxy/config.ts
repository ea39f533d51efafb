import { z } from 'zod';
import { WorkloadConfig, configFileContent, durationMs, host, loadYamlWithSchema, parseWithSchema, port, portOrZero } from '../mesh/index.js';

/**
 * Sidecar tuning that the shared WorkloadConfig does not carry. It lives under the
 * optional `sidecar:` key of the workload file; every field has a default, so a plain
 * WorkloadConfig file is a valid sidecar config.
 */
export const SidecarTuning = z.strictObject({
  /** Address the inbound mTLS listener binds (peers reach it at `advertiseAddress`). */
  inboundHost: host.default('0.0.0.0'),
  /** Where the app listens; inbound traffic goes to `<appHost>:<targetPort>`. */
  appHost: host.default('127.0.0.1'),
  /**
   * Loopback range the sidecar takes outbound listener addresses from, one address per
   * mesh service (and per service pinned to a cluster). Two sidecars sharing one network
   * namespace need disjoint ranges.
   */
  outboundRange: z.string().regex(/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}\/(8|9|1[0-9]|2[0-4])$/, 'expected a loopback CIDR such as 127.1.0.0/16').default('127.1.0.0/16'),
  dns: z
    .strictObject({
      host: host.default('127.0.0.1'),
      /** Names outside the mesh domain: `forward` to `upstream` (default: the host's first resolver), or `refuse`. */
      outside: z.enum(['forward', 'refuse']).default('forward'),
      upstream: z.string().regex(/^[^\s]+:\d+$/, 'expected host:port').optional(),
      ttlSeconds: z.number().int().min(0).max(3600).default(5),
    })
    .default(() => ({ host: '127.0.0.1', outside: 'forward' as const, ttlSeconds: 5 })),
  /** TCP connect plus mTLS handshake to one target (a refused connect moves on at once regardless). */
  connectTimeoutMs: durationMs.default(2_000),
  /** Attempts per request or connection, across targets (a failed connect always moves on). */
  maxAttempts: z.number().int().min(1).max(10).default(4),
  outlier: z
    .strictObject({
      consecutiveFailures: z.number().int().min(1).default(3),
      baseEjectionMs: durationMs.default(5_000),
      maxEjectionMs: durationMs.default(60_000),
    })
    .default(() => ({ consecutiveFailures: 3, baseEjectionMs: 5_000, maxEjectionMs: 60_000 })),
  circuit: z
    .strictObject({ maxConnections: z.number().int().positive().default(10_000), maxPendingConnects: z.number().int().positive().default(1_000) })
    .default(() => ({ maxConnections: 10_000, maxPendingConnects: 1_000 })),
  /** Outbound HTTP proxy for apps that honour HTTP_PROXY (DESIGN.md: 15001, optional); absent = off, 0 = any port. */
  httpProxy: z.strictObject({ host: host.default('127.0.0.1'), port: portOrZero.default(15001) }).optional(),
  /** App target ports (TCP) that receive a PROXY protocol v2 header carrying the caller's SPIFFE ID. */
  proxyProtocolPorts: z.array(port).default([]),
  /** Requested certificate lifetime; 0 = the CA's default. */
  certificateTtlSeconds: z.number().int().min(0).default(0),
  /** Health probe period for the local app. */
  probeIntervalMs: durationMs.default(2_000),
  /** Log every connection and request at debug (access log). */
  accessLog: z.boolean().default(true),
});
export type SidecarTuning = z.infer<typeof SidecarTuning>;

export const SidecarConfig = WorkloadConfig.extend({ sidecar: SidecarTuning.default(() => SidecarTuning.parse({})) });
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
