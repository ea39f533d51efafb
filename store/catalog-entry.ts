import type { z } from 'zod';
import {
  AuthorizationPolicy,
  ClusterInfo,
  ControllerRegistration,
  Endpoint,
  ExportedCluster,
  ExportedService,
  Gateway,
  Heartbeat,
  ImportedService,
  LinkStatus,
  PeerReportedLinks,
  ReportedLinks,
  ServiceSpec,
  TrafficPolicy,
  WorkloadGroup,
  decodeCatalogValue,
  parseEtcdKey,
  type EtcdKey,
} from '../mesh/index.js';

type KeyOf<K extends EtcdKey['kind']> = Extract<EtcdKey, { kind: K }>;

interface Entry<K extends EtcdKey['kind'], V> {
  readonly kind: K;
  readonly key: string;
  /** What the key names (docs/architecture.md "etcd key layout"). */
  readonly name: KeyOf<K>;
  readonly value: V;
  readonly modRevision: string;
  /** `'0'` for none. */
  readonly lease: string;
}

/** One catalog value that parsed, validated against its schema and matches its key. */
export type CatalogEntry =
  | Entry<'cluster', ClusterInfo>
  | Entry<'service', ServiceSpec>
  | Entry<'endpoint', Endpoint>
  | Entry<'controller', ControllerRegistration>
  | Entry<'gateway', Gateway>
  | Entry<'exported-cluster', ExportedCluster>
  | Entry<'heartbeat', Heartbeat>
  | Entry<'reported-links', ReportedLinks>
  | Entry<'exported-service', ExportedService>
  | Entry<'imported-service', ImportedService>
  | Entry<'link-status', LinkStatus>
  | Entry<'peer-reported-links', PeerReportedLinks>
  | Entry<'policy', AuthorizationPolicy | TrafficPolicy>
  | Entry<'workload-group', WorkloadGroup>;

const SCHEMAS = {
  cluster: ClusterInfo,
  service: ServiceSpec,
  endpoint: Endpoint,
  controller: ControllerRegistration,
  gateway: Gateway,
  'exported-cluster': ExportedCluster,
  heartbeat: Heartbeat,
  'reported-links': ReportedLinks,
  'exported-service': ExportedService,
  'imported-service': ImportedService,
  'link-status': LinkStatus,
  'peer-reported-links': PeerReportedLinks,
  'workload-group': WorkloadGroup,
} satisfies Record<Exclude<EtcdKey['kind'], 'policy'>, z.ZodType>;

/** What of the value must repeat what the key names; `undefined` when it does. */
function mismatch(entry: CatalogEntry): string | undefined {
  switch (entry.kind) {
    case 'service':
    case 'policy':
      return entry.value.namespace !== entry.name.namespace || entry.value.name !== entry.name.name ? 'namespace/name' : undefined;
    case 'endpoint': {
      const { value: v, name: k } = entry;
      return v.namespace !== k.namespace || v.service !== k.name || v.id !== k.endpointId ? 'namespace/service/id' : undefined;
    }
    case 'controller':
      return entry.value.id !== entry.name.controllerId ? 'id' : undefined;
    case 'imported-service': {
      const { value: v, name: k } = entry;
      return v.peer !== k.peer || v.service.namespace !== k.namespace || v.service.name !== k.name ? 'peer/namespace/name' : undefined;
    }
    case 'peer-reported-links':
      return entry.value.cluster !== entry.name.peer ? 'cluster' : undefined;
    default:
      return undefined;
  }
}

/**
 * Validates one stored catalog value (docs/architecture.md "etcd key layout": a value that
 * fails validation is skipped, never crashes a reader): the key must be of the layout, the
 * value valid JSON of its kind's schema, and what it repeats of the key equal to the key.
 */
export function decodeCatalogEntry(kv: { readonly key: string; readonly value: Buffer; readonly modRevision: string; readonly lease: string }): { ok: true; entry: CatalogEntry } | { ok: false; error: Error } {
  let name: EtcdKey;
  try {
    name = parseEtcdKey(kv.key);
  } catch (error) {
    return { ok: false, error: error as Error };
  }
  const schema = name.kind === 'policy' ? (name.policyKind === 'authorization' ? AuthorizationPolicy : TrafficPolicy) : SCHEMAS[name.kind];
  const decoded = decodeCatalogValue(schema as z.ZodType, kv.key, kv.value);
  if (!decoded.ok) return { ok: false, error: decoded.error };
  const entry = { kind: name.kind, key: kv.key, name, value: decoded.value, modRevision: kv.modRevision, lease: kv.lease } as CatalogEntry;
  const wrong = mismatch(entry);
  return wrong === undefined ? { ok: true, entry } : { ok: false, error: new Error(`${wrong} in the value does not match the key`) };
}
