/**
 * The bench's own eyes on the mesh: one watch per etcd on the catalog keys it times — a
 * cluster's imports (what its federation wrote) or its export store's exports (what its
 * controller wrote). Each put of a service is handed on with its healthy total; a broken
 * stream resumes after the last revision seen.
 */
import { parseEtcdKey } from '../mesh/index.js';
import type { EtcdStore, PrefixWatch } from '../store/index.js';

export interface ServicePut {
  /** The exporting cluster: the import's peer, or the export store's owner. */
  readonly from: string;
  readonly service: string;
  /** Sum of `healthy` over the localities; undefined unless values are parsed. */
  readonly healthy: number | undefined;
}

export class ServiceWatch {
  readonly #store: EtcdStore;
  readonly #prefix: string;
  /** The cluster whose exports these are (export store), or undefined for imports (the key names the peer). */
  readonly #owner: string | undefined;
  readonly #onPut: (put: ServicePut) => void;
  #watch: PrefixWatch | undefined;
  #revision = '0';
  #closed = false;
  /** Decode values (healthy totals): only while latencies are timed, so convergence does not pay for it. */
  parseValues = false;

  constructor(store: EtcdStore, prefix: string, owner: string | undefined, onPut: (put: ServicePut) => void) {
    this.#store = store;
    this.#prefix = prefix;
    this.#owner = owner;
    this.#onPut = onPut;
  }

  /** Watches from the store's current revision on (what exists now is not reported). */
  async start(): Promise<void> {
    this.#revision = (await this.#store.list(this.#prefix, { pageSize: 1 })).revision;
    this.#follow();
  }

  close(): void {
    this.#closed = true;
    this.#watch?.close();
  }

  #follow(): void {
    if (this.#closed) return;
    this.#watch = this.#store.watchPrefix(this.#prefix, String(BigInt(this.#revision) + 1n), {
      onBatch: (batch) => {
        for (const event of batch.events) {
          if (event.type === 'put') this.#put(event.key, event.value);
          this.#revision = event.modRevision;
        }
      },
      onCompacted: () => {
        process.stderr.write(`bench watch on ${this.#prefix}: start revision compacted; figures after it may be missing\n`);
        this.#revision = '0';
      },
      onBroken: (error) => {
        if (this.#closed) return;
        process.stderr.write(`bench watch on ${this.#prefix} broke (${error.message}); resuming\n`);
        setTimeout(() => this.#follow(), 500);
      },
    });
  }

  #put(key: string, value: Buffer): void {
    const parsed = parseEtcdKey(key);
    let from: string;
    if (parsed.kind === 'imported-service') from = parsed.peer;
    else if (parsed.kind === 'exported-service' && this.#owner) from = this.#owner;
    else return;
    let healthy: number | undefined;
    if (this.parseValues) {
      const decoded = JSON.parse(value.toString('utf8')) as { healthy: Array<{ healthy: number }> };
      healthy = decoded.healthy.reduce((sum, h) => sum + h.healthy, 0);
    }
    this.#onPut({ from, service: parsed.name, healthy });
  }
}
