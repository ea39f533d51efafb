import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { logger, type EtcdConnection } from '../mesh/index.js';
import { EtcdErrorTranslator, connectEtcd } from '../mesh/etcd-client.js';
import { EtcdUnavailableError } from './errors.js';

/**
 * The controller's view of etcd: the few operations it needs, with our own types, so
 * that etcd3 (frozen since 2023) stays behind this one file.
 */
export interface StoredValue {
  readonly key: string;
  readonly value: Buffer;
  readonly modRevision: string;
  /** The etcd lease the key is attached to, `'0'` for none. */
  readonly lease: string;
}

export interface PrefixListing {
  readonly values: StoredValue[];
  /** The store revision the listing reflects; a watch resumes after it. */
  readonly revision: string;
}

export type WatchEvent = { readonly type: 'put'; readonly kv: StoredValue } | { readonly type: 'delete'; readonly key: string; readonly modRevision: string };

export interface PrefixWatch {
  cancel(): Promise<void>;
}

export interface WatchHandlers {
  /** Events of one etcd revision, in order. */
  events(events: WatchEvent[], revision: string): void;
  /** The watch cannot continue (e.g. its revision was compacted); the caller re-lists. */
  broken(error: Error): void;
  connected?(): void;
  disconnected?(error: Error): void;
}

export interface EtcdStore {
  list(prefix: string): Promise<PrefixListing>;
  get(key: string): Promise<StoredValue | undefined>;
  put(key: string, value: string, options?: { lease?: string }): Promise<void>;
  /**
   * Writes only when the key's mod revision still equals `modRevision` (`'0'` = the key
   * must be absent). Returns false when someone else wrote first.
   */
  putIfUnchanged(key: string, value: string, modRevision: string, options?: { lease?: string }): Promise<boolean>;
  /** Writes many keys in transactions of at most 128 puts (etcd's default --max-txn-ops). */
  putMany(entries: ReadonlyArray<{ key: string; value: string }>, options?: { lease?: string }): Promise<void>;
  delete(key: string): Promise<void>;
  deleteIfUnchanged(key: string, modRevision: string): Promise<boolean>;
  watchPrefix(prefix: string, afterRevision: string, handlers: WatchHandlers): Promise<PrefixWatch>;
  grantLease(ttlSeconds: number): Promise<string>;
  /** Refreshes any lease by id (also one another controller granted); returns the TTL left, 0 when expired. */
  keepAlive(leaseId: string): Promise<number>;
  revokeLease(leaseId: string): Promise<void>;
  close(): Promise<void>;
}

function toStored(kv: IKeyValue): StoredValue {
  return { key: kv.key.toString('utf8'), value: kv.value, modRevision: kv.mod_revision, lease: kv.lease || '0' };
}

/**
 * Keep-alives for leases by id over one LeaseKeepAlive stream. etcd answers in request
 * order, so responses are matched first-in first-out per lease id.
 */
class LeaseKeepAliveChannel {
  private stream: Awaited<ReturnType<Etcd3['leaseClient']['leaseKeepAlive']>> | undefined;
  private opening: Promise<NonNullable<LeaseKeepAliveChannel['stream']>> | undefined;
  private readonly pending = new Map<string, Array<{ resolve: (ttl: number) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>>();

  constructor(private readonly client: Etcd3) {}

  private open(): Promise<NonNullable<LeaseKeepAliveChannel['stream']>> {
    if (this.stream) return Promise.resolve(this.stream);
    this.opening ??= this.client.leaseClient.leaseKeepAlive().then((stream) => {
      this.stream = stream;
      this.opening = undefined;
      stream.on('data', (res: { ID: string; TTL: string }) => {
        const queue = this.pending.get(String(res.ID));
        const waiter = queue?.shift();
        if (queue && queue.length === 0) this.pending.delete(String(res.ID));
        if (waiter) {
          clearTimeout(waiter.timer);
          waiter.resolve(Math.max(0, Number(res.TTL)));
        }
      });
      const fail = (error: Error) => {
        if (this.stream !== stream) return;
        this.stream = undefined;
        for (const queue of this.pending.values()) for (const w of queue) {
          clearTimeout(w.timer);
          w.reject(error);
        }
        this.pending.clear();
      };
      stream.on('error', fail);
      stream.on('end', () => fail(new Error('lease keep-alive stream ended')));
      return stream;
    }, (error: unknown) => {
      this.opening = undefined;
      throw error;
    });
    return this.opening;
  }

  async keepAlive(leaseId: string, timeoutMs: number): Promise<number> {
    const stream = await this.open();
    return new Promise<number>((resolve, reject) => {
      const queue = this.pending.get(leaseId) ?? [];
      const timer = setTimeout(() => {
        const i = queue.findIndex((w) => w.timer === timer);
        if (i >= 0) queue.splice(i, 1);
        // A stream that stopped answering is dropped; the next keep-alive opens a new one.
        if (this.stream === stream) {
          this.stream = undefined;
          stream.end();
        }
        reject(new Error(`lease ${leaseId} keep-alive timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      queue.push({ resolve, reject, timer });
      this.pending.set(leaseId, queue);
      stream.write({ ID: leaseId });
    });
  }

  close(): void {
    const stream = this.stream;
    this.stream = undefined;
    stream?.end();
    for (const queue of this.pending.values()) for (const w of queue) {
      clearTimeout(w.timer);
      w.reject(new Error('closed'));
    }
    this.pending.clear();
  }
}

/** The etcd3-backed {@link EtcdStore}. */
export class Etcd3Store implements EtcdStore {
  private readonly client: Etcd3;
  private readonly keepAlives: LeaseKeepAliveChannel;
  private readonly log = logger('controller-etcd');
  private readonly watchers = new Set<Watcher>();
  private readonly timeoutMs: number;
  private readonly errors: EtcdErrorTranslator;

  constructor(connection: EtcdConnection) {
    this.client = connectEtcd(connection);
    this.errors = new EtcdErrorTranslator(connection);
    this.keepAlives = new LeaseKeepAliveChannel(this.client);
    this.timeoutMs = Math.max(connection.dialTimeoutMs, 3000);
  }

  private async call<T>(operation: string, run: () => Promise<T>): Promise<T> {
    // One more try with a fresh deadline: etcd3's own retries reuse the first deadline,
    // so a call delayed past it (a starved event loop, a channel still resolving) fails
    // at once ("Deadline exceeded after 0.000s"). Every caller tolerates a repeat:
    // CAS writes re-read, and a duplicate lease grant just expires.
    for (let attempt = 1; ; attempt++) {
      try {
        return await run();
      } catch (error) {
        // Explained on every attempt: the translator keeps the cause behind a later circuit-breaker refusal.
        const failure = this.errors.explain(error, operation);
        const transient = /DEADLINE_EXCEEDED|UNAVAILABLE/.test((error as Error)?.message ?? '');
        if (attempt >= 2 || !transient) throw new EtcdUnavailableError(failure.message, error);
      }
    }
  }

  list(prefix: string): Promise<PrefixListing> {
    return this.call(`list ${prefix}`, async () => {
      const res = await this.client.getAll().prefix(prefix).options({ deadline: Date.now() + this.timeoutMs }).exec();
      return { values: res.kvs.map(toStored), revision: res.header.revision };
    });
  }

  get(key: string): Promise<StoredValue | undefined> {
    return this.call(`get ${key}`, async () => {
      const res = await this.client.kv.range({ key: Buffer.from(key) }, { deadline: Date.now() + this.timeoutMs });
      const kv = res.kvs[0];
      return kv ? toStored(kv) : undefined;
    });
  }

  put(key: string, value: string, options: { lease?: string } = {}): Promise<void> {
    return this.call(`put ${key}`, async () => {
      await this.client.kv.put({ key: Buffer.from(key), value: Buffer.from(value), ...(options.lease ? { lease: options.lease } : {}) }, { deadline: Date.now() + this.timeoutMs });
    });
  }

  putIfUnchanged(key: string, value: string, modRevision: string, options: { lease?: string } = {}): Promise<boolean> {
    return this.call(`put ${key}`, async () => {
      const res = await this.client.kv.txn(
        {
          compare: [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: modRevision }],
          success: [{ request_put: { key: Buffer.from(key), value: Buffer.from(value), ...(options.lease ? { lease: options.lease } : {}) } }],
        },
        { deadline: Date.now() + this.timeoutMs },
      );
      return res.succeeded;
    });
  }

  putMany(entries: ReadonlyArray<{ key: string; value: string }>, options: { lease?: string } = {}): Promise<void> {
    return this.call(`put ${entries.length} keys`, async () => {
      for (let i = 0; i < entries.length; i += 128) {
        const success = entries.slice(i, i + 128).map((e) => ({ request_put: { key: Buffer.from(e.key), value: Buffer.from(e.value), ...(options.lease ? { lease: options.lease } : {}) } }));
        await this.client.kv.txn({ compare: [], success }, { deadline: Date.now() + this.timeoutMs });
      }
    });
  }

  delete(key: string): Promise<void> {
    return this.call(`delete ${key}`, async () => {
      await this.client.kv.deleteRange({ key: Buffer.from(key) }, { deadline: Date.now() + this.timeoutMs });
    });
  }

  deleteIfUnchanged(key: string, modRevision: string): Promise<boolean> {
    return this.call(`delete ${key}`, async () => {
      const res = await this.client.kv.txn(
        {
          compare: [{ key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: modRevision }],
          success: [{ request_delete_range: { key: Buffer.from(key) } }],
        },
        { deadline: Date.now() + this.timeoutMs },
      );
      return res.succeeded;
    });
  }

  async watchPrefix(prefix: string, afterRevision: string, handlers: WatchHandlers): Promise<PrefixWatch> {
    const start = String(BigInt(afterRevision) + 1n);
    const watcher = await this.call(`watch ${prefix}`, () => this.client.watch().prefix(prefix).startRevision(start).create());
    this.watchers.add(watcher);
    watcher.on('data', (res) => {
      if (res.events.length === 0) return;
      const events: WatchEvent[] = res.events.map((e) =>
        e.type === 'Put' ? { type: 'put' as const, kv: toStored(e.kv) } : { type: 'delete' as const, key: e.kv.key.toString('utf8'), modRevision: e.kv.mod_revision },
      );
      handlers.events(events, res.header.revision);
    });
    watcher.on('connected', () => handlers.connected?.());
    watcher.on('disconnected', (error) => handlers.disconnected?.(error));
    watcher.on('error', (error) => {
      this.watchers.delete(watcher);
      watcher.cancel().catch(() => undefined);
      handlers.broken(error);
    });
    return {
      cancel: async () => {
        this.watchers.delete(watcher);
        await watcher.cancel().catch(() => undefined);
      },
    };
  }

  grantLease(ttlSeconds: number): Promise<string> {
    return this.call('lease grant', async () => {
      const res = await this.client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }, { deadline: Date.now() + this.timeoutMs });
      return String(res.ID);
    });
  }

  keepAlive(leaseId: string): Promise<number> {
    return this.call(`lease keep-alive ${leaseId}`, () => this.keepAlives.keepAlive(leaseId, this.timeoutMs));
  }

  revokeLease(leaseId: string): Promise<void> {
    return this.call(`lease revoke ${leaseId}`, async () => {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: leaseId }, { deadline: Date.now() + this.timeoutMs });
      } catch (error) {
        // Revoking an already expired lease is the desired end state.
        if (/not found/i.test((error as Error).message)) return;
        throw error;
      }
    });
  }

  async close(): Promise<void> {
    this.keepAlives.close();
    await Promise.all([...this.watchers].map((w) => w.cancel().catch(() => undefined)));
    this.watchers.clear();
    this.client.close();
    this.log.debug('etcd client closed');
  }
}
