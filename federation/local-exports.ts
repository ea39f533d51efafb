import { EtcdKeys, type ExportedService, type Logger } from '../mesh/index.js';
import { CatalogMirror, type EtcdStore } from '../store/index.js';
import type { PortConflictBoard } from './port-conflicts.js';

export interface LocalExportClaimsOptions {
  readonly cluster: string;
  readonly store: EtcdStore;
  readonly conflicts: PortConflictBoard;
  readonly onConflictsChanged: (clusters: readonly string[], serviceKey: string) => void;
  readonly log: Logger;
}

/**
 * This cluster's own exports take part in namespace sameness too: when this cluster
 * exported `reviews.default` first, a peer's import of it with other ports is the one in
 * conflict. Follows the local `/causeway/v1/exports/` through the store's catalog mirror.
 */
export class LocalExportClaims {
  readonly #o: LocalExportClaimsOptions;
  readonly #mirror: CatalogMirror;

  constructor(options: LocalExportClaimsOptions) {
    this.#o = options;
    this.#mirror = new CatalogMirror({
      store: options.store,
      prefix: EtcdKeys.exportsPrefix,
      log: options.log,
      onUpdate: ({ changes }) => {
        for (const { type, entry } of changes) {
          if (entry.kind !== 'exported-service') continue;
          this.#claim(`${entry.name.namespace}/${entry.name.name}`, type === 'put' ? entry.value : undefined);
        }
      },
    });
  }

  /** Lists and follows the local exports; never rejects (a local etcd that is down is retried). */
  async start(): Promise<void> {
    await this.#mirror.follow();
  }

  stop(): void {
    this.#mirror.close();
  }

  #claim(key: string, value: ExportedService | undefined): void {
    const service = key.split('/').reverse().join('.');
    const changed = this.#o.conflicts.claim(this.#o.cluster, service, value && { ports: value.service.ports, exportedAt: value.exportedAt });
    if (changed.length > 0) this.#o.onConflictsChanged(changed, key);
  }
}
