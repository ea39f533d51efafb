import { z } from 'zod';
import {
  CATALOG_SCHEMA_VERSION,
  CausewayError,
  ClusterInfo,
  ControllerRegistration,
  Endpoint,
  ErrorCodes,
  EtcdKeys,
  ServiceSpec,
  ValidationError,
  WorkloadGroup,
  configFileContent,
  decodeCatalogValue,
  encodeCatalogValue,
  formatSpiffeId,
  issuesOf,
  parseYamlDocuments,
  workloadGroupEndpointId,
} from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';
import { ControllerErrorCodes } from './errors.js';

/** A refusal of `causeway workload …`; the message says what to change; `code` is one of the `workload*` {@link ControllerErrorCodes}. */
export class WorkloadError extends CausewayError {}

/** What `apply` did to the group and to the service it serves. */
export interface AppliedWorkloadGroup {
  readonly group: WorkloadGroup;
  readonly created: boolean;
  /** `created`: the service did not exist and was made from the group; `checked`: it existed and allows the group. */
  readonly service: 'created' | 'checked';
  readonly identity: string;
}

/** A host registered from a group: an endpoint of the group's service named `<group>-<address>`. */
export interface WorkloadGroupHost {
  readonly endpointId: string;
  readonly address: string;
  readonly health: Endpoint['health'];
  readonly registeredAt: string | undefined;
}

/** The SPIFFE ID every host of `group` gets: `spiffe://<td>/ns/<ns>/sa/<serviceAccount>`. */
export function workloadGroupIdentity(group: WorkloadGroup, trustDomain: string): string {
  return formatSpiffeId({ trustDomain, namespace: group.namespace, serviceAccount: group.serviceAccount });
}

/** A workload group file as written (`causeway workload group apply -f`): `kind` and `schema` optional. */
export const WorkloadGroupDocument = WorkloadGroup.extend({
  kind: z.string().optional().describe('`WorkloadGroup` (any case), or omitted'),
  schema: WorkloadGroup.shape.schema.optional().describe(`catalog schema version, ${CATALOG_SCHEMA_VERSION}; filled in when omitted`),
});

/** The `kind:` value (any case) of a workload group file. */
export const WORKLOAD_GROUP_KIND = 'workloadgroup';

const groupContent = configFileContent('workload-group', 'a workload group (name, namespace, service, serviceAccount, ports…)');

/**
 * Parses a workload group file: one YAML document, `kind: WorkloadGroup` optional, the
 * `schema` field added. Errors name the file and each bad path.
 */
export function parseWorkloadGroupFile(text: string, file: string): WorkloadGroup {
  const list = parseYamlDocuments(text, file, groupContent);
  if (list.length !== 1) throw new ValidationError(ErrorCodes.configInvalid, file, [{ path: '', message: `expected one workload group document, found ${list.length}` }]);
  const value = list[0]!.value;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ValidationError(ErrorCodes.configInvalid, file, [{ path: '', message: 'expected a mapping' }]);
  const { kind, ...body } = value as Record<string, unknown>;
  if (kind !== undefined && String(kind).toLowerCase() !== WORKLOAD_GROUP_KIND) {
    throw new ValidationError(ErrorCodes.configInvalid, file, [{ path: 'kind', message: `expected WorkloadGroup (got ${String(kind)})` }]);
  }
  const result = WorkloadGroup.safeParse({ schema: CATALOG_SCHEMA_VERSION, ...body });
  if (!result.success) throw new ValidationError(ErrorCodes.configInvalid, file, issuesOf(result.error));
  return result.data;
}

/**
 * Workload groups in a cluster's etcd (`/causeway/v1/workloads/<ns>/<name>`): the template
 * VM and bare-metal hosts are onboarded from (Istio's WorkloadGroup). A group names the
 * service its hosts serve and the one service account they all run as; the controller's
 * registration refuses any host whose certificate is not that identity, because the
 * service's `serviceAccounts` decide who may serve it.
 */
export class WorkloadGroups {
  readonly #store: EtcdStore;
  readonly #trustDomain: string;

  constructor(
    store: EtcdStore,
    trustDomain: string,
  ) {
    this.#store = store;
    this.#trustDomain = trustDomain;
  }

  /**
   * Creates or replaces a group. The group's service must allow the group's identity and
   * carry the group's ports; a service that does not exist yet is created from the group
   * (ports, the one identity, `exported` as given) so that onboarding is one step.
   */
  async apply(input: WorkloadGroup | Record<string, unknown>, options: { exportService?: boolean; source?: string } = {}): Promise<AppliedWorkloadGroup> {
    const source = options.source ?? 'workload group';
    const result = WorkloadGroup.safeParse({ schema: CATALOG_SCHEMA_VERSION, ...input });
    if (!result.success) throw new ValidationError(ErrorCodes.configInvalid, source, issuesOf(result.error));
    const group = result.data;
    const identity = workloadGroupIdentity(group, this.#trustDomain);
    const service = await this.#ensureService(group, identity, options.exportService ?? false);
    const key = EtcdKeys.workloadGroup(group.namespace, group.name);
    const previous = await this.#store.get(key);
    await this.#store.put(key, encodeCatalogValue(WorkloadGroup, key, group));
    return { group, created: previous === undefined, service, identity };
  }

  async #ensureService(group: WorkloadGroup, identity: string, exported: boolean): Promise<'created' | 'checked'> {
    const key = EtcdKeys.service(group.namespace, group.service);
    for (;;) {
      const kv = await this.#store.get(key);
      if (!kv) {
        const spec = encodeCatalogValue(ServiceSpec, key, {
          schema: CATALOG_SCHEMA_VERSION,
          name: group.service,
          namespace: group.namespace,
          ports: group.ports,
          serviceAccounts: [identity],
          exported,
          createdAt: new Date().toISOString(),
        });
        if (await this.#store.putIfUnchanged(key, spec, '0')) return 'created';
        continue;
      }
      const decoded = decodeCatalogValue(ServiceSpec, key, kv.value);
      if (!decoded.ok) throw decoded.error;
      const spec = decoded.value;
      const ref = `${spec.name}.${spec.namespace}`;
      if (!spec.serviceAccounts.includes(identity)) {
        throw new WorkloadError(
          ControllerErrorCodes.workloadIdentityNotAllowed,
          `service ${ref} does not allow ${identity} (allowed: ${spec.serviceAccounts.join(', ')}); add it to the service's serviceAccounts, or give the group one of those service accounts`,
        );
      }
      for (const p of group.ports) {
        const match = spec.ports.find((s) => s.name === p.name);
        if (!match || match.port !== p.port) {
          throw new WorkloadError(ControllerErrorCodes.workloadPortsMismatch, `port ${p.name}/${p.port} of the group is not a port of service ${ref} (ports: ${spec.ports.map((s) => `${s.name}/${s.port}`).join(', ')}); make the group's ports match the service`);
        }
      }
      return 'checked';
    }
  }

  async get(namespace: string, name: string): Promise<WorkloadGroup> {
    const key = EtcdKeys.workloadGroup(namespace, name);
    const kv = await this.#store.get(key);
    if (!kv) throw new WorkloadError(ControllerErrorCodes.workloadGroupNotFound, `workload group ${name} in namespace ${namespace} does not exist; apply it first (causeway workload group apply -f group.yaml)`);
    const decoded = decodeCatalogValue(WorkloadGroup, key, kv.value);
    if (!decoded.ok) throw decoded.error;
    return decoded.value;
  }

  /** Every group (of one namespace, when given), by namespace then name; invalid values are skipped. */
  async list(namespace?: string): Promise<WorkloadGroup[]> {
    const prefix = namespace === undefined ? EtcdKeys.workloadsPrefix : `${EtcdKeys.workloadsPrefix}${namespace}/`;
    if (namespace !== undefined) EtcdKeys.workloadGroup(namespace, 'x');
    const listing = await this.#store.list(prefix);
    const out: WorkloadGroup[] = [];
    for (const kv of listing.entries) {
      const decoded = decodeCatalogValue(WorkloadGroup, kv.key, kv.value);
      if (decoded.ok) out.push(decoded.value);
    }
    return out.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  }

  /**
   * Removes a group. Hosts already onboarded keep their certificates and endpoints until
   * they stop (their leases end them); no new bundle can be made for the group.
   */
  async delete(namespace: string, name: string): Promise<boolean> {
    const key = EtcdKeys.workloadGroup(namespace, name);
    const kv = await this.#store.get(key);
    if (!kv) return false;
    return this.#store.deleteIfUnchanged(key, kv.modRevision);
  }

  /**
   * Where a new host should reach the controller when the operator does not say: the first
   * gateway (`viaGateway`) listed in `/causeway/v1/cluster`, or the first live controller
   * (`/causeway/v1/controllers/`, each on its lease; else the record's list).
   */
  async controllerAddress(viaGateway: boolean): Promise<string> {
    const [kv, registrations] = await Promise.all([this.#store.get(EtcdKeys.cluster), viaGateway ? undefined : this.#store.list(EtcdKeys.controllersPrefix)]);
    const decoded = kv ? decodeCatalogValue(ClusterInfo, EtcdKeys.cluster, kv.value) : undefined;
    const live = (registrations?.entries ?? []).flatMap((r) => {
      const d = decodeCatalogValue(ControllerRegistration, r.key, r.value);
      return d.ok ? [{ address: d.value.address, port: d.value.port }] : [];
    });
    const list = viaGateway ? (decoded?.ok ? decoded.value.gateways : []) : live.length > 0 ? live : decoded?.ok ? decoded.value.controllers : [];
    const first = list[0];
    if (!first) {
      throw new WorkloadError(
        ControllerErrorCodes.workloadBundleInvalid,
        `the cluster record lists no ${viaGateway ? 'gateway' : 'controller'} yet (is it running?); pass --controller <host:port>`,
      );
    }
    return `${first.address}:${first.port}`;
  }

  /** The hosts currently registered from `group` (endpoints of its service named `<group>-…` with its identity). */
  async hosts(group: WorkloadGroup): Promise<WorkloadGroupHost[]> {
    const identity = workloadGroupIdentity(group, this.#trustDomain);
    const listing = await this.#store.list(EtcdKeys.serviceEndpointsPrefix(group.namespace, group.service));
    const out: WorkloadGroupHost[] = [];
    for (const kv of listing.entries) {
      const decoded = decodeCatalogValue(Endpoint, kv.key, kv.value);
      if (!decoded.ok) continue;
      const e = decoded.value;
      if (e.identity !== identity || e.id !== workloadGroupEndpointId(group.name, e.address)) continue;
      out.push({ endpointId: e.id, address: e.address, health: e.health, registeredAt: e.registeredAt });
    }
    return out.sort((a, b) => a.endpointId.localeCompare(b.endpointId));
  }
}
