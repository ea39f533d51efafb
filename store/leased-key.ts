import { logger, type Logger } from '../mesh/index.js';
import type { EtcdStore } from './etcd-store.js';

export interface LeasedKeyOptions {
  readonly store: EtcdStore;
  readonly key: string;
  /** The value to write; called at every (re-)registration and {@link LeasedKey.write}. */
  readonly value: () => string;
  readonly ttlSeconds: number;
  readonly logger?: Logger;
}

/**
 * Keeps one key on a lease of its own while its owner lives: the key is gone within one
 * TTL of the owner dying, however it died (SIGKILL, lost host), since nothing refreshes the
 * lease then. While alive, the lease is refreshed every third of its TTL; when etcd says it
 * expired (a partition longer than the TTL) or no longer knows it, a new lease is granted and
 * the key written again, and {@link ensure} puts the key back when it vanished under a live
 * lease (deleted by hand, an etcd restored from a backup). The refresh goes through the
 * store's own keep-alive calls, not etcd3's `lease()` helper, which reports a lost lease only
 * after ~2×TTL.
 */
export class LeasedKey {
  readonly #options: LeasedKeyOptions;
  readonly #log: Logger;
  #lease: string | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #unreachable = false;
  /** Every etcd call of this key runs in this chain, one after another. */
  #queue: Promise<void> = Promise.resolve();

  constructor(options: LeasedKeyOptions) {
    this.#options = options;
    this.#log = options.logger ?? logger('leased-key', { key: options.key });
  }

  /** Grants the lease and writes the key; rejects when etcd cannot. */
  async start(): Promise<void> {
    await this.#serial(() => this.#register());
    this.#schedule();
  }

  /** Writes the key again under the current lease (or a new one): for when it vanished. */
  ensure(): void {
    void this.#serial(async () => {
      if (this.#closed || this.#lease === undefined) return;
      const current = await this.#options.store.get(this.#options.key);
      if (current?.lease === this.#lease) return; // a watch that has not caught up yet
      try {
        await this.#options.store.put(this.#options.key, this.#options.value(), { lease: this.#lease });
        this.#log.warn('key was gone while its lease lived; written again');
      } catch {
        await this.#register();
      }
    }).catch((error: Error) => this.#log.warn({ err: error.message }, 'cannot write the key again; retrying at the next refresh'));
  }

  /**
   * Writes the current value under the lease now (a heartbeat); when that fails, grants a
   * new lease and writes again. Rejects when etcd cannot take the value.
   */
  write(): Promise<void> {
    return this.#serial(async () => {
      if (this.#closed) return;
      if (this.#lease === undefined) return this.#register();
      try {
        await this.#options.store.put(this.#options.key, this.#options.value(), { lease: this.#lease });
      } catch {
        await this.#register();
      }
    });
  }

  /**
   * Stops refreshing and revokes the lease, which deletes the key at once. With `revoke:
   * false` the key stays until its lease expires (a process handing over to its successor).
   */
  async close(options: { revoke?: boolean } = {}): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    const lease = this.#lease;
    this.#lease = undefined;
    if (lease !== undefined && (options.revoke ?? true)) await this.#options.store.revokeLease(lease);
  }

  #serial(work: () => Promise<void>): Promise<void> {
    const next = this.#queue.then(work);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #register(): Promise<void> {
    if (this.#closed) return;
    const { store, key, ttlSeconds } = this.#options;
    const lease = await store.grantLease(ttlSeconds);
    await store.put(key, this.#options.value(), { lease });
    const previous = this.#lease;
    this.#lease = lease;
    if (this.#closed) {
      await store.revokeLease(lease).catch(() => undefined);
      return;
    }
    if (previous !== undefined && previous !== lease) await store.revokeLease(previous).catch(() => undefined);
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => void this.#serial(() => this.#refresh()).finally(() => this.#schedule()), (this.#options.ttlSeconds * 1000) / 3);
    this.#timer.unref();
  }

  async #refresh(): Promise<void> {
    if (this.#closed || this.#lease === undefined) return;
    try {
      const left = await this.#options.store.keepAlive(this.#lease);
      if (left <= 0) {
        this.#log.warn({ lease: this.#lease }, 'lease expired (etcd was out of reach longer than its TTL); registering again');
        await this.#register();
      }
      if (this.#unreachable) this.#log.info('etcd reachable again; lease refreshed');
      this.#unreachable = false;
    } catch (error) {
      if (!this.#unreachable) this.#log.warn({ err: (error as Error).message }, 'cannot refresh the lease; retrying');
      this.#unreachable = true;
      // A lease etcd no longer knows (not merely an etcd out of reach): register anew.
      if (/lease not found|requested lease not found/i.test((error as Error).message)) await this.#register().catch(() => undefined);
    }
  }
}
