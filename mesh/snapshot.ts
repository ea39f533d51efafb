import { z } from 'zod';
import { AuthorizationPolicy, Locality, ServicePort, TrafficPolicy } from './catalog.js';
import { clusterName, dnsLabel, host, port, spiffeIdText } from './validation.js';

/**
 * What the controller pushes to a node on the discovery stream (api/discovery.proto
 * carries it as JSON). Both ends validate with this schema.
 */

/** Locality priority: lower is preferred (docs/architecture.md "The parts and the path of one request"). */
export const Priority = { sameCluster: 0, sameRegion: 1, otherRegion: 2 } as const;

export const SnapshotTarget = z.strictObject({
  /** `endpoint`: a local sidecar's inbound port; `gateway`: a peer cluster's gateway. */
  kind: z.enum(['endpoint', 'gateway']),
  cluster: clusterName,
  address: host,
  port,
  locality: Locality,
  priority: z.number().int().min(0),
  /** Healthy instances behind the target (1 for an endpoint; the peer's healthy count for a gateway). */
  weight: z.number().int().nonnegative(),
  labels: z.record(z.string(), z.string()).default({}),
  /** The endpoint's SPIFFE ID (endpoints only; through a gateway the service's allowed IDs apply). */
  identity: spiffeIdText.optional(),
  endpointId: z.string().optional(),
  healthy: z.boolean(),
  stale: z.boolean().default(false),
});
export type SnapshotTarget = z.infer<typeof SnapshotTarget>;

export const SnapshotService = z.strictObject({
  name: dnsLabel,
  namespace: dnsLabel,
  ports: z.array(ServicePort),
  serviceAccounts: z.array(spiffeIdText),
  subsets: z.record(dnsLabel, z.record(z.string(), z.string())).default({}),
  targets: z.array(SnapshotTarget),
});
export type SnapshotService = z.infer<typeof SnapshotService>;

export const Snapshot = z.strictObject({
  schema: z.literal(1),
  version: z.string().min(1),
  cluster: clusterName,
  trustDomain: z.string().min(1),
  trustBundle: z.array(z.string()),
  services: z.array(SnapshotService),
  authorization: z.array(AuthorizationPolicy),
  traffic: z.array(TrafficPolicy),
});
export type Snapshot = z.infer<typeof Snapshot>;
