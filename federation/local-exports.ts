import { EtcdKeys, ExportedService, decodeCatalogValue, parseEtcdKey, type Logger } from '../mesh/index.js';
import type { CatalogStore, PrefixWatch, StoredValue } from './etcd-store.js';
import type { PortConflictBoard } from './port-conflicts.js';

export interface LocalExportClaimsOptions {
  readonly cluster: string;
  readonly store: CatalogStore;
  readonly conflicts: PortConflictBoard;
  readonly onConflictsChanged: (clusters: readonly string[], serviceKey: string) => void;
  readonly log: Logger;
}

/**
 * This cluster's own exports take part in namespace sameness too: when this cluster
 * exported `reviews.default` first, a peer's import of it with other ports is the one in
 * conflict. Follows the local `/causeway/v1/exports/` (re-listing after any break: it is
 * the local etcd, and a re-list also covers compaction).
 */
export class LocalExportClaims {
  readonly #o: LocalExportClaimsOptions;
  readonly #claimed = new Set<string>();
  #watch: PrefixWatch | undefined;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;

  constructor(options: LocalExportClaimsOptions) {
    this.#o = options;
  }

  async start(): Promise<void> {
    await this.#listAndWatch().catch((error: unknown) => this.#broken(error as Error));
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
    this.#watch?.close();
  }

  async #listAndWatch(): Promise<void> {
    const listing = await this.#o.store.list(EtcdKeys.exportsPrefix);
    if (this.#stopped) return;
    const seen = new Set<string>();
    for (const entry of listing.entries) {
      const key = this.#apply(entry);
      if (key) seen.add(key);
    }
    for (const key of [...this.#claimed]) if (!seen.has(key)) this.#claim(key, undefined);
    this.#watch = this.#o.store.watchPrefix(EtcdKeys.exportsPrefix, (BigInt(listing.revision) + 1n).toString(), {
      onBatch: (batch) => {
        for (const ev of batch.events) {
          if (ev.type === 'put') this.#apply(ev);
          else {
            const key = serviceKeyOf(ev.key);
            if (key) this.#claim(key, undefined);
          }
        }
      },
      onCompacted: () => this.#broken(new Error('local exports compacted')),
      onBroken: (error) => this.#broken(error),
    });
  }

  #broken(error: Error): void {
    this.#watch = undefined;
    if (this.#stopped) return;
    this.#o.log.debug({ err: error }, 'local exports watch broken; re-listing');
    this.#retry = setTimeout(() => void this.#listAndWatch().catch((e: unknown) => this.#broken(e as Error)), 1000);
  }

  #apply(entry: Pick<StoredValue, 'key' | 'value'>): string | undefined {
    const key = serviceKeyOf(entry.key);
    if (!key) return undefined;
    const decoded = decodeCatalogValue(ExportedService, entry.key, entry.value);
    if (!decoded.ok) {
      this.#o.log.warn({ key: entry.key, err: decoded.error }, 'skipping an invalid local export');
      return undefined;
    }
    this.#claim(key, decoded.value);
    return key;
  }

  #claim(key: string, value: ExportedService | undefined): void {
    if (value) this.#claimed.add(key);
    else this.#claimed.delete(key);
    const service = key.split('/').reverse().join('.');
    const changed = this.#o.conflicts.claim(this.#o.cluster, service, value && { ports: value.service.ports, exportedAt: value.exportedAt });
    if (changed.length > 0) this.#o.onConflictsChanged(changed, key);
  }
}

function serviceKeyOf(etcdKey: string): string | undefined {
  try {
    const parsed = parseEtcdKey(etcdKey);
    return parsed.kind === 'exported-service' ? `${parsed.namespace}/${parsed.name}` : undefined;
  } catch {
    return undefined;
  }
}
