import { z } from 'zod';
import {
  AuthorizationPolicy,
  CATALOG_SCHEMA_VERSION,
  EtcdKeys,
  ServiceSpec,
  TrafficPolicy,
  UsageError,
  ValidationError,
  ErrorCodes,
  configFileContent,
  decodeCatalogValue,
  encodeCatalogValue,
  formatPath,
  issuesOf,
  parseYamlDocuments,
  type PolicyKind,
} from '../mesh/index.js';
import { ControllerError, ControllerErrorCodes } from './errors.js';
import type { EtcdStore } from '../store/index.js';

/**
 * What operators change in a cluster's catalog (`causeway service apply`, `export`,
 * `unexport`, `policy apply`). Everything is validated with the catalog schemas before
 * it is written, so readers never meet a value an operator command produced and they
 * refuse. Writes go straight to etcd; every controller picks them up by watch.
 */
export class CatalogAdmin {
  readonly #store: EtcdStore;

  constructor(store: EtcdStore) {
    this.#store = store;
  }

  /** Creates or replaces a service. `createdAt` is kept from the stored spec. */
  async applyService(input: unknown, source = 'service'): Promise<ServiceSpec> {
    const draft = withSchema(input);
    const key = serviceKeyOf(draft, source);
    for (;;) {
      const kv = await this.#store.get(key);
      const previous = kv ? decodeCatalogValue(ServiceSpec, key, kv.value) : undefined;
      const createdAt = previous?.ok ? previous.value.createdAt : undefined;
      const value = encode(ServiceSpec, source, { ...draft, createdAt: (draft.createdAt as string | undefined) ?? createdAt ?? new Date().toISOString() });
      if (await this.#store.putIfUnchanged(key, JSON.stringify(value), kv?.modRevision ?? '0')) return value;
    }
  }

  /** Sets `exported` on a stored service. */
  async setExported(name: string, namespace: string, exported: boolean): Promise<ServiceSpec> {
    const key = EtcdKeys.service(namespace, name);
    for (;;) {
      const kv = await this.#store.get(key);
      if (!kv) throw new ControllerError(ControllerErrorCodes.notFound, `service ${name}.${namespace} is not in the catalog; apply it first (causeway service apply -f)`);
      const decoded = decodeCatalogValue(ServiceSpec, key, kv.value);
      if (!decoded.ok) throw decoded.error;
      const value = { ...decoded.value, exported };
      if (await this.#store.putIfUnchanged(key, encodeCatalogValue(ServiceSpec, key, value), kv.modRevision)) return value;
    }
  }

  async deleteService(name: string, namespace: string): Promise<boolean> {
    const key = EtcdKeys.service(namespace, name);
    const kv = await this.#store.get(key);
    if (!kv) return false;
    await this.#store.delete(key);
    return true;
  }

  /** Validates and stores an authorization or traffic policy. */
  async applyPolicy(kind: PolicyKind, input: unknown, source = 'policy'): Promise<AuthorizationPolicy | TrafficPolicy> {
    const draft = withSchema(input);
    const value = kind === 'authorization' ? encode(AuthorizationPolicy, source, draft) : encode(TrafficPolicy, source, draft);
    if (kind === 'traffic') await this.#checkSubsets(value as TrafficPolicy, source);
    const key = EtcdKeys.policy(kind, value.namespace, value.name);
    await this.#store.put(key, JSON.stringify(value));
    return value;
  }

  /**
   * Splits and routes may only name subsets the service defines here. (A service this
   * cluster only imports is not checked: its subsets are its owner's; a sidecar refuses an
   * unknown one per request, naming it.)
   */
  async #checkSubsets(policy: TrafficPolicy, source: string): Promise<void> {
    const named = subsetReferences(policy);
    if (named.length === 0) return;
    const key = EtcdKeys.service(policy.namespace, policy.service);
    const kv = await this.#store.get(key);
    if (!kv) return;
    const decoded = decodeCatalogValue(ServiceSpec, key, kv.value);
    if (!decoded.ok) return;
    const defined = Object.keys(decoded.value.subsets);
    const issues = named.flatMap(({ path, subset }) =>
      decoded.value.subsets[subset] === undefined
        ? [{ path: formatPath(path), message: `service ${policy.service}.${policy.namespace} has no subset "${subset}" (it has: ${defined.join(', ') || 'none'}); add it to the service's subsets first` }]
        : [],
    );
    if (issues.length > 0) throw new ValidationError(ErrorCodes.configInvalid, source, issues);
  }

  async deletePolicy(kind: PolicyKind, name: string, namespace: string): Promise<boolean> {
    const key = EtcdKeys.policy(kind, namespace, name);
    const kv = await this.#store.get(key);
    if (!kv) return false;
    await this.#store.delete(key);
    return true;
  }

  async listServices(): Promise<ServiceSpec[]> {
    const listing = await this.#store.list(EtcdKeys.servicesPrefix);
    const out: ServiceSpec[] = [];
    for (const kv of listing.entries) {
      const decoded = decodeCatalogValue(ServiceSpec, kv.key, kv.value);
      if (decoded.ok) out.push(decoded.value);
    }
    return out;
  }
}

/** Every subset a traffic policy names (its split, its routes' subsets and splits), with its path. */
function subsetReferences(policy: TrafficPolicy): { path: (string | number)[]; subset: string }[] {
  const out: { path: (string | number)[]; subset: string }[] = [];
  (policy.split ?? []).forEach((s, i) => out.push({ path: ['split', i, 'subset'], subset: s.subset }));
  (policy.routes ?? []).forEach((r, i) => {
    if (r.subset !== undefined) out.push({ path: ['routes', i, 'subset'], subset: r.subset });
    (r.split ?? []).forEach((s, j) => out.push({ path: ['routes', i, 'split', j, 'subset'], subset: s.subset }));
  });
  return out;
}

/** The `kind:` values a policy file may use, mapped to storage kinds. */
const POLICY_KINDS: Record<string, PolicyKind> = {
  authorization: 'authorization',
  authorizationpolicy: 'authorization',
  traffic: 'traffic',
  trafficpolicy: 'traffic',
};

/** The `kind:` values (any case) of a services manifest document; it may also be omitted. */
export const SERVICE_KINDS = ['service'] as const;
export const POLICY_KIND_VALUES = Object.keys(POLICY_KINDS);

const manifestSchemaVersion = ServiceSpec.shape.schema.optional().describe(`catalog schema version, ${CATALOG_SCHEMA_VERSION}; filled in when omitted`);

/** One document of a services manifest (`causeway service apply -f`), as written: `kind` and `schema` optional. */
export const ServiceManifestDocument = ServiceSpec.extend({
  kind: z.string().optional().describe('`Service` (any case), or omitted'),
  schema: manifestSchemaVersion,
});

/** One document of a policy file (`causeway policy apply -f`): an authorization or a traffic policy, named by `kind`. */
export const PolicyManifestDocument = z.union([
  AuthorizationPolicy.extend({ kind: z.string().describe('`AuthorizationPolicy` (any case; `authorization` too)'), schema: manifestSchemaVersion }),
  TrafficPolicy.extend({ kind: z.string().describe('`TrafficPolicy` (any case; `traffic` too)'), schema: manifestSchemaVersion }),
]);

const manifestContent = {
  service: configFileContent('service', 'a services manifest (one or more --- documents: name, namespace, ports, serviceAccounts…)'),
  policy: configFileContent('policy', 'a policy file (one or more --- documents, each with kind: AuthorizationPolicy or TrafficPolicy)'),
} as const;

export interface ManifestDocument {
  readonly kind: 'service' | PolicyKind;
  /** The document without `kind`, validated with its catalog schema. */
  readonly body: Record<string, unknown>;
  /** `file#index` for messages. */
  readonly source: string;
}

/**
 * Parses a YAML manifest (one or more `---` documents) and validates every document with
 * its catalog schema, so a bad file is refused before anything is written. Each policy
 * document names its `kind` (`AuthorizationPolicy` / `TrafficPolicy`); service documents
 * may say `kind: Service` or omit it. The `kind` key is removed from the body.
 */
export function parseManifest(text: string, file: string, expect: 'service' | 'policy'): ManifestDocument[] {
  return parseYamlDocuments(text, file, manifestContent[expect]).map(({ value, source }) => {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: '', message: `expected a mapping (got ${Array.isArray(value) ? 'a list' : typeof value})` }]);
    }
    const { kind, ...body } = value as Record<string, unknown>;
    const kindText = typeof kind === 'string' ? kind.toLowerCase() : undefined;
    if (expect === 'service') {
      if (kind !== undefined && kindText !== 'service') throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: 'kind', message: `expected Service (got ${String(kind)})` }]);
      encode(ServiceSpec, source, withSchema(body));
      return { kind: 'service', body, source };
    }
    const policyKind = kindText ? POLICY_KINDS[kindText] : undefined;
    if (!policyKind) throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: 'kind', message: `must be AuthorizationPolicy or TrafficPolicy (got ${kind === undefined ? 'none' : String(kind)})` }]);
    encode(policyKind === 'authorization' ? AuthorizationPolicy : TrafficPolicy, source, withSchema(body));
    return { kind: policyKind, body, source };
  });
}

/** Parses `<service>.<namespace>`. */
export function parseServiceRef(text: string): { name: string; namespace: string } {
  const match = /^([a-z0-9-]+)\.([a-z0-9-]+)$/.exec(text);
  if (!match) throw new UsageError(`expected <service>.<namespace> (got "${text}")`);
  return { name: match[1]!, namespace: match[2]! };
}

function withSchema(input: unknown): Record<string, unknown> {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return { schema: CATALOG_SCHEMA_VERSION };
  return { schema: CATALOG_SCHEMA_VERSION, ...(input as Record<string, unknown>) };
}

function serviceKeyOf(draft: Record<string, unknown>, source: string): string {
  try {
    return EtcdKeys.service(String(draft.namespace ?? ''), String(draft.name ?? ''));
  } catch (error) {
    throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: 'name/namespace', message: (error as Error).message }]);
  }
}

function encode<S extends typeof ServiceSpec | typeof AuthorizationPolicy | typeof TrafficPolicy>(schema: S, source: string, value: unknown): ReturnType<S['parse']> {
  const result = schema.safeParse(value);
  // What an operator wrote: a bad file (exit 2), its paths as every config error names them.
  if (!result.success) throw new ValidationError(ErrorCodes.configInvalid, source, issuesOf(result.error));
  return result.data as ReturnType<S['parse']>;
}
