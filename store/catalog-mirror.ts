import { Backoff, type BackoffOptions, type Logger } from '../mesh/index.js';
import { decodeCatalogEntry, type CatalogEntry } from './catalog-entry.js';
import type { ChangeBatch, EtcdStore, PrefixWatch, StoredValue } from './etcd-store.js';

/** One change of the mirror; a value that turns invalid is a `delete` of what the key held. */
export type CatalogChange = { readonly type: 'put'; readonly entry: CatalogEntry } | { readonly type: 'delete'; readonly entry: CatalogEntry };

export interface CatalogUpdate {
  /** In etcd's order. */
  readonly changes: readonly CatalogChange[];
  readonly revision: string;
  /** The prefix was listed again (start, compaction): `changes` hold every entry, and deletes of the vanished. */
  readonly relisted: boolean;
}

export interface CatalogMirrorOptions {
  readonly store: EtcdStore;
  /** A prefix of the layout: `KEY_ROOT`, `EtcdKeys.exportsPrefix`, … */
  readonly prefix: string;
  readonly log: Logger;
  readonly onUpdate: (update: CatalogUpdate) => void;
  /** A value that failed validation (it is logged with its key and skipped). */
  readonly onInvalid?: (key: string, error: Error) => void;
  /** Retries of a broken watch and of failed re-lists (default 200 ms up to 5 s). */
  readonly backoff?: BackoffOptions;
}

/**
 * A validated copy of one catalog prefix: one listing, then the store's lossless watch from
 * the listing's revision. A broken watch resumes from the last revision applied; a
 * compacted one lists again and reports the keys that vanished meanwhile as deletes.
 * Retries go by the shared {@link Backoff}. (store/README.md "The catalog mirror".)
 */
export class CatalogMirror {
  readonly #o: CatalogMirrorOptions;
  readonly #entries = new Map<string, CatalogEntry>();
  readonly #invalid = new Map<string, string>();
  readonly #backoff: Backoff;
  #watch: PrefixWatch | undefined;
  #retry: NodeJS.Timeout | undefined;
  #revision = '0';
  #loaded = false;
  #watching = false;
  #closed = false;

  constructor(options: CatalogMirrorOptions) {
    this.#o = options;
    this.#backoff = new Backoff(options.backoff ?? { initialMs: 200, maxMs: 5000 });
  }

  /** The valid entries by key. */
  get entries(): ReadonlyMap<string, CatalogEntry> {
    return this.#entries;
  }

  /** Keys whose values failed validation, with the reason. */
  get invalid(): ReadonlyMap<string, string> {
    return this.#invalid;
  }

  /** The store revision the mirror reflects. */
  get revision(): string {
    return this.#revision;
  }

  get loaded(): boolean {
    return this.#loaded;
  }

  /** Whether the watch stream is up (readiness). */
  get watching(): boolean {
    return this.#watching;
  }

  /** Lists the prefix and starts watching. Rejects when etcd cannot be reached. */
  async start(): Promise<void> {
    await this.#relist();
  }

  /**
   * Like {@link start}, for a reader that may start before its etcd: resolves after the
   * first listing either way, retrying a failed one in the background.
   */
  async follow(): Promise<void> {
    try {
      await this.#relist();
    } catch (error) {
      this.#o.log.debug({ err: (error as Error).message }, `listing ${this.#o.prefix} failed; retrying`);
      this.#retryLater(() => this.#relist());
    }
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#watch?.close();
    this.#watch = undefined;
    this.#watching = false;
  }

  async #relist(): Promise<void> {
    this.#watch?.close();
    this.#watch = undefined;
    this.#watching = false;
    const listing = await this.#o.store.list(this.#o.prefix);
    if (this.#closed) return;
    const changes: CatalogChange[] = [];
    const listed = new Set<string>();
    for (const kv of listing.entries) {
      listed.add(kv.key);
      this.#apply(kv, changes);
    }
    for (const [key, entry] of this.#entries) {
      if (listed.has(key)) continue;
      this.#entries.delete(key);
      changes.push({ type: 'delete', entry });
    }
    for (const key of this.#invalid.keys()) if (!listed.has(key)) this.#invalid.delete(key);
    this.#revision = listing.revision;
    this.#loaded = true;
    this.#watchFrom(listing.revision);
    this.#watching = true;
    this.#o.onUpdate({ changes, revision: listing.revision, relisted: true });
  }

  #watchFrom(revision: string): void {
    this.#watch = this.#o.store.watchPrefix(this.#o.prefix, String(BigInt(revision) + 1n), {
      onCreated: () => {
        this.#watching = true;
        this.#backoff.reset();
      },
      onBatch: (batch) => this.#onBatch(batch),
      onCompacted: (compactRevision) => {
        this.#o.log.warn({ revision: this.#revision, compactRevision }, `watch of ${this.#o.prefix} compacted; listing again`);
        this.#retryLater(() => this.#relist());
      },
      onBroken: (error) => {
        if (this.#watching) this.#o.log.warn({ err: error.message, revision: this.#revision }, `watch of ${this.#o.prefix} broke; resuming`);
        else this.#o.log.debug({ err: error.message }, `watch of ${this.#o.prefix} still broken`);
        this.#retryLater(async () => this.#watchFrom(this.#revision));
      },
    });
  }

  #retryLater(attempt: () => Promise<void>): void {
    this.#watch = undefined;
    this.#watching = false;
    if (this.#closed) return;
    clearTimeout(this.#retry);
    this.#retry = setTimeout(() => {
      attempt().catch((error: Error) => {
        this.#o.log.warn({ err: error.message }, `listing ${this.#o.prefix} failed; retrying`);
        this.#retryLater(attempt);
      });
    }, this.#backoff.next());
  }

  #onBatch(batch: ChangeBatch): void {
    const changes: CatalogChange[] = [];
    for (const event of batch.events) {
      if (event.type === 'put') this.#apply(event, changes);
      else {
        this.#invalid.delete(event.key);
        this.#drop(event.key, changes);
      }
    }
    this.#revision = batch.revision;
    if (changes.length > 0) this.#o.onUpdate({ changes, revision: batch.revision, relisted: false });
  }

  #apply(kv: StoredValue, changes: CatalogChange[]): void {
    const decoded = decodeCatalogEntry(kv);
    if (decoded.ok) {
      this.#invalid.delete(kv.key);
      this.#entries.set(kv.key, decoded.entry);
      changes.push({ type: 'put', entry: decoded.entry });
      return;
    }
    // A value that turns invalid replaces nothing: drop what the key held before.
    this.#drop(kv.key, changes);
    this.#invalid.set(kv.key, decoded.error.message);
    this.#o.log.warn({ key: kv.key, err: decoded.error.message }, 'skipping an invalid catalog value');
    this.#o.onInvalid?.(kv.key, decoded.error);
  }

  #drop(key: string, changes: CatalogChange[]): void {
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    changes.push({ type: 'delete', entry });
  }
}
