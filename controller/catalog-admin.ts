import { parseAllDocuments } from 'yaml';
import {
  AuthorizationPolicy,
  CATALOG_SCHEMA_VERSION,
  EtcdKeys,
  ServiceSpec,
  TrafficPolicy,
  UsageError,
  ValidationError,
  ErrorCodes,
  decodeCatalogValue,
  encodeCatalogValue,
  type PolicyKind,
} from '../mesh/index.js';
import { ControllerError, ControllerErrorCodes } from './errors.js';
import type { EtcdStore } from './etcd-store.js';

/**
 * What operators change in a cluster's catalog (`causeway service apply`, `export`,
 * `unexport`, `policy apply`). Everything is validated with the catalog schemas before
 * it is written, so readers never meet a value an operator command produced and they
 * refuse. Writes go straight to etcd; every controller picks them up by watch.
 */
export class CatalogAdmin {
  constructor(private readonly store: EtcdStore) {}

  /** Creates or replaces a service. `createdAt` is kept from the stored spec. */
  async applyService(input: unknown, source = 'service'): Promise<ServiceSpec> {
    const draft = withSchema(input);
    const key = serviceKeyOf(draft, source);
    for (;;) {
      const kv = await this.store.get(key);
      const previous = kv ? decodeCatalogValue(ServiceSpec, key, kv.value) : undefined;
      const createdAt = previous?.ok ? previous.value.createdAt : undefined;
      const value = encode(ServiceSpec, source, { ...draft, createdAt: (draft.createdAt as string | undefined) ?? createdAt ?? new Date().toISOString() });
      if (await this.store.putIfUnchanged(key, JSON.stringify(value), kv?.modRevision ?? '0')) return value;
    }
  }

  /** Sets `exported` on a stored service. */
  async setExported(name: string, namespace: string, exported: boolean): Promise<ServiceSpec> {
    const key = EtcdKeys.service(namespace, name);
    for (;;) {
      const kv = await this.store.get(key);
      if (!kv) throw new ControllerError(ControllerErrorCodes.notFound, `service ${name}.${namespace} is not in the catalog; apply it first (causeway service apply -f)`);
      const decoded = decodeCatalogValue(ServiceSpec, key, kv.value);
      if (!decoded.ok) throw decoded.error;
      const value = { ...decoded.value, exported };
      if (await this.store.putIfUnchanged(key, encodeCatalogValue(ServiceSpec, key, value), kv.modRevision)) return value;
    }
  }

  async deleteService(name: string, namespace: string): Promise<boolean> {
    const key = EtcdKeys.service(namespace, name);
    const kv = await this.store.get(key);
    if (!kv) return false;
    await this.store.delete(key);
    return true;
  }

  /** Validates and stores an authorization or traffic policy. */
  async applyPolicy(kind: PolicyKind, input: unknown, source = 'policy'): Promise<AuthorizationPolicy | TrafficPolicy> {
    const draft = withSchema(input);
    const value = kind === 'authorization' ? encode(AuthorizationPolicy, source, draft) : encode(TrafficPolicy, source, draft);
    if ('split' in value && value.split) await this.#checkSplitSubsets(value, source);
    const key = EtcdKeys.policy(kind, value.namespace, value.name);
    await this.store.put(key, JSON.stringify(value));
    return value;
  }

  /**
   * A split may only name subsets the service defines here. (A service this cluster only
   * imports is not checked: its subsets are its owner's; a sidecar refuses an unknown one
   * per request, naming it.)
   */
  async #checkSplitSubsets(policy: TrafficPolicy, source: string): Promise<void> {
    const key = EtcdKeys.service(policy.namespace, policy.service);
    const kv = await this.store.get(key);
    if (!kv) return;
    const decoded = decodeCatalogValue(ServiceSpec, key, kv.value);
    if (!decoded.ok) return;
    const defined = Object.keys(decoded.value.subsets);
    const issues = (policy.split ?? []).flatMap((s, i) =>
      decoded.value.subsets[s.subset] === undefined
        ? [{ path: `split.${i}.subset`, message: `service ${policy.service}.${policy.namespace} has no subset "${s.subset}" (it has: ${defined.join(', ') || 'none'}); add it to the service's subsets first` }]
        : [],
    );
    if (issues.length > 0) throw new ValidationError(ErrorCodes.catalogValueInvalid, source, issues);
  }

  async deletePolicy(kind: PolicyKind, name: string, namespace: string): Promise<boolean> {
    const key = EtcdKeys.policy(kind, namespace, name);
    const kv = await this.store.get(key);
    if (!kv) return false;
    await this.store.delete(key);
    return true;
  }

  async listServices(): Promise<ServiceSpec[]> {
    const listing = await this.store.list(EtcdKeys.servicesPrefix);
    const out: ServiceSpec[] = [];
    for (const kv of listing.values) {
      const decoded = decodeCatalogValue(ServiceSpec, kv.key, kv.value);
      if (decoded.ok) out.push(decoded.value);
    }
    return out;
  }
}

/** The `kind:` values a policy file may use, mapped to storage kinds. */
const POLICY_KINDS: Record<string, PolicyKind> = {
  authorization: 'authorization',
  authorizationpolicy: 'authorization',
  traffic: 'traffic',
  trafficpolicy: 'traffic',
};

export interface ManifestDocument {
  readonly kind: 'service' | PolicyKind;
  readonly body: Record<string, unknown>;
  /** `file#index` for messages. */
  readonly source: string;
}

/**
 * Parses a YAML manifest (one or more `---` documents). Each policy document names its
 * `kind` (`AuthorizationPolicy` / `TrafficPolicy`); service documents may say
 * `kind: Service` or omit it. The `kind` key is removed before validation.
 */
export function parseManifest(text: string, file: string, expect: 'service' | 'policy'): ManifestDocument[] {
  const docs = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: true });
  const list = Array.isArray(docs) ? docs : [docs];
  const out: ManifestDocument[] = [];
  list.forEach((doc, index) => {
    const source = list.length > 1 ? `${file}#${index}` : file;
    if (doc.errors.length > 0) {
      throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: '', message: `not valid YAML (${doc.errors[0]!.message.split('\n')[0]})` }]);
    }
    const value = doc.toJS() as unknown;
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value)) throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: '', message: 'expected a mapping' }]);
    const { kind, ...body } = value as Record<string, unknown>;
    const kindText = typeof kind === 'string' ? kind.toLowerCase() : undefined;
    if (expect === 'service') {
      if (kindText !== undefined && kindText !== 'service') throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: 'kind', message: `expected Service (got ${String(kind)})` }]);
      out.push({ kind: 'service', body, source });
    } else {
      const policyKind = kindText ? POLICY_KINDS[kindText] : undefined;
      if (!policyKind) throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: 'kind', message: 'must be AuthorizationPolicy or TrafficPolicy' }]);
      out.push({ kind: policyKind, body, source });
    }
  });
  if (out.length === 0) throw new UsageError(`${file} holds no documents`);
  return out;
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
    throw new ValidationError(ErrorCodes.catalogValueInvalid, source, [{ path: 'name/namespace', message: (error as Error).message }]);
  }
}

function encode<S extends typeof ServiceSpec | typeof AuthorizationPolicy | typeof TrafficPolicy>(schema: S, source: string, value: unknown): ReturnType<S['parse']> {
  const result = schema.safeParse(value);
  if (!result.success) {
    throw new ValidationError(
      ErrorCodes.catalogValueInvalid,
      source,
      result.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })),
    );
  }
  return result.data as ReturnType<S['parse']>;
}
