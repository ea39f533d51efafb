import { createHash } from 'node:crypto';
import { gzip } from 'node:zlib';
import { promisify } from 'node:util';
import { Priority, type Locality, type SnapshotService, type SnapshotTarget } from '../mesh/index.js';
import type { CatalogCache, CatalogChanges, ServiceKey, StoredEndpoint } from './catalog-cache.js';

const gzipAsync = promisify(gzip);

interface Fragment {
  readonly json: Buffer;
  readonly digest: Buffer;
  readonly targets: number;
}

/** One built snapshot, shared (bytes and all) by every node of the same view. */
export class BuiltSnapshot {
  #gzipped: Promise<Buffer> | undefined;
  constructor(
    readonly version: string,
    /** JSON of mesh/snapshot.ts `Snapshot`. */
    readonly json: Buffer,
    readonly builtAt: number,
    readonly serviceCount: number,
    readonly targetCount: number,
  ) {}

  /** The JSON gzipped once (level 1: fast, and large snapshots shrink ~10×). */
  gzip(): Promise<Buffer> {
    this.#gzipped ??= gzipAsync(this.json, { level: 1 });
    return this.#gzipped;
  }
}

export interface SnapshotSource {
  readonly cluster: string;
  readonly trustDomain: string;
  readonly locality: Locality;
  trustBundle(): readonly string[];
  /** Whether an endpoint takes traffic (lease alive is implied by its presence). */
  endpointHealthy(endpoint: StoredEndpoint): boolean;
}

/**
 * Builds discovery snapshots per *view* — the node's region, the only node property a
 * snapshot depends on (it sets the priority of imported targets). Each service is
 * serialised once per view and cached until that service changes, so a change to one
 * endpoint among 10,000 re-serialises one service and concatenates the rest.
 */
export class SnapshotBuilder {
  readonly #fragments = new Map<ServiceKey, Map<string, Fragment | null>>();
  #policiesJson: string | undefined;
  readonly #built = new Map<string, BuiltSnapshot>();

  readonly #catalog: CatalogCache;
  readonly #source: SnapshotSource;

  constructor(
    catalog: CatalogCache,
    source: SnapshotSource,
  ) {
    this.#catalog = catalog;
    this.#source = source;
  }

  /** Forgets what `changes` touched; the next {@link snapshot} call rebuilds it. */
  invalidate(changes: CatalogChanges): void {
    if (!changes.affectsSnapshots) return;
    if (changes.everything || changes.cluster) {
      this.#fragments.clear();
      this.#policiesJson = undefined;
    } else {
      for (const s of changes.services) this.#fragments.delete(s);
      if (changes.policies) this.#policiesJson = undefined;
    }
    this.#built.clear();
  }

  /** Drops everything (e.g. the trust bundle changed). */
  invalidateAll(): void {
    this.#fragments.clear();
    this.#policiesJson = undefined;
    this.#built.clear();
  }

  isBuilt(viewRegion: string): boolean {
    return this.#built.has(viewRegion);
  }

  /** The current snapshot of a view (region), built on demand. */
  snapshot(viewRegion: string): BuiltSnapshot {
    const cached = this.#built.get(viewRegion);
    if (cached) return cached;
    const keys = new Set<ServiceKey>([...this.#catalog.services.keys(), ...this.#catalog.imports.keys()]);
    const sorted = [...keys].sort();
    const parts: Buffer[] = [];
    // The version hashes the fragments' own digests, not the megabytes they add up to.
    const digest = createHash('sha256');
    let targets = 0;
    let count = 0;
    const comma = Buffer.from(',');
    for (const key of sorted) {
      const fragment = this.#fragment(key, viewRegion);
      if (!fragment) continue;
      if (count++ > 0) parts.push(comma);
      parts.push(fragment.json);
      digest.update(fragment.digest);
      targets += fragment.targets;
    }
    this.#policiesJson ??= this.#policies();
    const head = `"cluster":${JSON.stringify(this.#source.cluster)},"trustDomain":${JSON.stringify(this.#source.trustDomain)},"trustBundle":${JSON.stringify(this.#source.trustBundle())},"services":[`;
    const tail = `],${this.#policiesJson}}`;
    const version = digest.update(head).update(tail).digest('hex').slice(0, 20);
    const json = Buffer.concat([Buffer.from(`{"schema":1,"version":"${version}",${head}`), ...parts, Buffer.from(tail)]);
    const snapshot = new BuiltSnapshot(version, json, Date.now(), count, targets);
    this.#built.set(viewRegion, snapshot);
    return snapshot;
  }

  #policies(): string {
    const byName = <T extends { namespace: string; name: string }>(a: T, b: T) => (a.namespace === b.namespace ? a.name.localeCompare(b.name) : a.namespace.localeCompare(b.namespace));
    const authorization = [...this.#catalog.authorization.values()].map((v) => v.value).sort(byName);
    const traffic = [...this.#catalog.traffic.values()].map((v) => v.value).sort(byName);
    return `"authorization":${JSON.stringify(authorization)},"traffic":${JSON.stringify(traffic)}`;
  }

  #fragment(key: ServiceKey, viewRegion: string): Fragment | null {
    let byView = this.#fragments.get(key);
    if (!byView) this.#fragments.set(key, (byView = new Map()));
    let fragment = byView.get(viewRegion);
    if (fragment === undefined) {
      const service = this.service(key, viewRegion);
      if (service) {
        const json = Buffer.from(JSON.stringify(service));
        fragment = { json, digest: createHash('sha256').update(json).digest(), targets: service.targets.length };
      } else {
        fragment = null;
      }
      byView.set(viewRegion, fragment);
    }
    return fragment;
  }

  /** One mesh service: local spec and endpoints plus every peer's import of the same name (namespace sameness). */
  service(key: ServiceKey, viewRegion: string): SnapshotService | undefined {
    const local = this.#catalog.services.get(key)?.value;
    const imports = [...(this.#catalog.imports.get(key)?.values() ?? [])]
      .map((v) => v.value)
      .filter((i) => i.conflict === undefined)
      .sort((a, b) => a.exportedAt.localeCompare(b.exportedAt) || a.peer.localeCompare(b.peer));
    const spec = local ?? imports[0]?.service;
    if (!spec) return undefined;
    const accounts = new Set(spec.serviceAccounts);
    for (const i of imports) for (const a of i.service.serviceAccounts) accounts.add(a);
    const targets: SnapshotTarget[] = [];
    if (local) {
      const endpoints = [...this.#catalog.endpointsOf(key).values()].sort((a, b) => (a.value.id < b.value.id ? -1 : a.value.id > b.value.id ? 1 : 0));
      for (const stored of endpoints) {
        const e = stored.value;
        const healthy = this.#source.endpointHealthy(stored);
        targets.push({
          kind: 'endpoint',
          cluster: e.cluster,
          address: e.address,
          port: e.inboundPort,
          locality: e.locality,
          priority: Priority.sameCluster,
          weight: healthy ? 1 : 0,
          labels: e.labels,
          identity: e.identity,
          endpointId: e.id,
          healthy,
          stale: false,
        });
      }
    }
    for (const i of imports) {
      if (i.peer === this.#source.cluster) continue;
      const weight = i.healthy.reduce((n, h) => n + h.healthy, 0);
      const priority = i.peerLocality.region === viewRegion ? Priority.sameRegion : Priority.otherRegion;
      for (const gw of i.gateways) {
        targets.push({
          kind: 'gateway',
          cluster: i.peer,
          address: gw.address,
          port: gw.port,
          locality: i.peerLocality,
          priority,
          weight,
          labels: {},
          healthy: !i.stale && weight > 0,
          stale: i.stale,
        });
      }
    }
    return {
      name: spec.name,
      namespace: spec.namespace,
      ports: spec.ports,
      serviceAccounts: [...accounts].sort(),
      subsets: spec.subsets,
      targets,
    };
  }
}
