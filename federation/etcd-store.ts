import type { Etcd3, IWatchResponse, Lease } from 'etcd3';
import type { EtcdConnection } from '../mesh/index.js';
import { EtcdErrorTranslator, connectEtcd } from '../mesh/etcd-client.js';
import { FederationError, FederationErrorCodes } from './errors.js';

/**
 * The federation's view of an etcd: the few operations it needs, with revisions as
 * decimal strings. etcd3 stays behind this interface: its Watcher resumes
 * from the response header revision, which can skip events of an unsynced watch and
 * hides compaction, so watching is done here on the raw stream.
 */
export interface StoredValue {
  readonly key: string;
  readonly value: Buffer;
  readonly modRevision: string;
}

export interface Listing {
  /** The store revision the listing is consistent at. */
  readonly revision: string;
  readonly entries: StoredValue[];
}

export interface ChangeEvent {
  readonly type: 'put' | 'delete';
  readonly key: string;
  /** Empty for deletes. */
  readonly value: Buffer;
  readonly modRevision: string;
}

export interface ChangeBatch {
  /** Events of one watch response, in revision order. */
  readonly events: ChangeEvent[];
  /** Highest revision this batch proves complete (last event's, or the progress header's). */
  readonly revision: string;
  /** Local clock when the response arrived (for sync lag). */
  readonly receivedAtMs: number;
}

export interface PrefixWatchHandlers {
  onBatch(batch: ChangeBatch): void;
  /** The start revision was compacted; the watch is over and the caller must re-list. */
  onCompacted(compactRevision: string): void;
  /** The stream broke or was canceled; the watch is over, resume from the last revision seen. */
  onBroken(error: Error): void;
}

export interface PrefixWatch {
  /** Asks etcd for a progress notification (a liveness probe of the stream). */
  requestProgress(): void;
  close(): void;
}

export type WriteOp = { readonly put: string; readonly value: string } | { readonly delete: string };

export type Permission = 'read' | 'write' | 'readwrite';

export interface CatalogStore {
  /** Lists every key under `prefix` at one revision, paging so that large catalogs fit gRPC's message limit. */
  list(prefix: string, options?: { pageSize?: number }): Promise<Listing>;
  get(key: string): Promise<StoredValue | undefined>;
  /** Watches `prefix` from `startRevision` (inclusive). */
  watchPrefix(prefix: string, startRevision: string, handlers: PrefixWatchHandlers): PrefixWatch;
  /** Applies the ops atomically in one transaction (callers keep batches ≤ etcd's --max-txn-ops); returns the new revision. */
  commit(ops: readonly WriteOp[]): Promise<string>;
  /** A key kept alive by a lease of `ttlSeconds`, re-granted when lost. */
  leasedKey(key: string, ttlSeconds: number): LeasedKey;
  /** etcd RBAC: a role with one prefix permission, and a password-less user (its client-cert CN) holding it. */
  grantPrefix(options: { user: string; role: string; prefix: string; permission: Permission }): Promise<void>;
  revokeUser(options: { user: string; role: string }): Promise<void>;
  authEnabled(): Promise<boolean>;
  close(): void;
}

export interface LeasedKey {
  put(value: string): Promise<void>;
  /** Revokes the lease, deleting the key. */
  revoke(): Promise<void>;
}

/** etcd's default --max-txn-ops is 128. */
export const MAX_TXN_OPS = 128;

/** The first key after every key starting with `prefix` (etcd's range_end for a prefix). */
export function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** etcd3's errors, cast into ours: the message names the endpoints and the setting to check. */
function cast(errors: EtcdErrorTranslator, error: unknown, what: string): FederationError {
  if (error instanceof FederationError) return error;
  const failure = errors.explain(error, what);
  const code = failure.kind === 'refused' ? FederationErrorCodes.etcdPermissionDenied : FederationErrorCodes.etcdUnavailable;
  return new FederationError(code, failure.message, { cause: error, retryable: code === FederationErrorCodes.etcdUnavailable });
}

export interface Etcd3CatalogStoreOptions {
  /**
   * Deadline of each unary call. gRPC has none by default, so without one a call into a
   * partitioned peer would hang — and with it the link's loop and its shutdown.
   */
  readonly callTimeoutMs?: number;
}

export class Etcd3CatalogStore implements CatalogStore {
  readonly #client: Etcd3;
  readonly #leases = new Set<Lease>();
  readonly #callTimeoutMs: number;

  readonly #errors: EtcdErrorTranslator;

  constructor(client: Etcd3, connection: EtcdConnection, options: Etcd3CatalogStoreOptions = {}) {
    this.#client = client;
    this.#errors = new EtcdErrorTranslator(connection);
    this.#callTimeoutMs = options.callTimeoutMs ?? 10_000;
  }

  static connect(connection: EtcdConnection, options: Etcd3CatalogStoreOptions = {}): Etcd3CatalogStore {
    return new Etcd3CatalogStore(connectEtcd(connection), connection, options);
  }

  #deadline(): { deadline: number } {
    return { deadline: Date.now() + this.#callTimeoutMs };
  }

  async list(prefix: string, options: { pageSize?: number } = {}): Promise<Listing> {
    const pageSize = options.pageSize ?? 2000;
    const end = prefixEnd(prefix);
    const entries: StoredValue[] = [];
    let from: Buffer = Buffer.from(prefix);
    let revision: string | undefined;
    try {
      for (;;) {
        const res = await this.#client.kv.range({ key: from, range_end: end, limit: pageSize, ...(revision ? { revision } : {}) }, this.#deadline());
        revision ??= res.header.revision;
        for (const kv of res.kvs) entries.push({ key: kv.key.toString('utf8'), value: kv.value, modRevision: kv.mod_revision });
        const last = res.kvs.at(-1);
        if (!res.more || !last) break;
        from = Buffer.concat([last.key, Buffer.from([0])]);
      }
    } catch (error) {
      throw cast(this.#errors, error, `listing ${prefix}`);
    }
    return { revision: revision ?? '0', entries };
  }

  async get(key: string): Promise<StoredValue | undefined> {
    try {
      const res = await this.#client.kv.range({ key: Buffer.from(key) }, this.#deadline());
      const kv = res.kvs[0];
      return kv ? { key, value: kv.value, modRevision: kv.mod_revision } : undefined;
    } catch (error) {
      throw cast(this.#errors, error, `reading ${key}`);
    }
  }

  watchPrefix(prefix: string, startRevision: string, handlers: PrefixWatchHandlers): PrefixWatch {
    let over = false;
    let stream: Awaited<ReturnType<Etcd3['watchClient']['watch']>> | undefined;
    const finish = (report: () => void) => {
      if (over) return;
      over = true;
      try {
        (stream as unknown as { cancel?: () => void } | undefined)?.cancel?.();
      } catch {
        // already gone
      }
      report();
    };
    const onData = (res: IWatchResponse) => {
      if (over) return;
      if (res.compact_revision && res.compact_revision !== '0') {
        finish(() => handlers.onCompacted(res.compact_revision));
        return;
      }
      if (res.canceled) {
        finish(() => handlers.onBroken(cast(this.#errors, new Error(res.cancel_reason || 'watch canceled by etcd'), `watching ${prefix}`)));
        return;
      }
      if (res.created) return;
      const events: ChangeEvent[] = (res.events ?? []).map((ev) => ({
        type: ev.type === 'Delete' ? 'delete' : 'put',
        key: ev.kv.key.toString('utf8'),
        value: ev.kv.value ?? Buffer.alloc(0),
        modRevision: ev.kv.mod_revision,
      }));
      // An unsynced watcher's header revision runs ahead of the events it has sent, so only
      // an event-less (progress) response vouches for its header revision.
      const revision = events.length > 0 ? events[events.length - 1]!.modRevision : res.header.revision;
      handlers.onBatch({ events, revision, receivedAtMs: Date.now() });
    };
    this.#client.watchClient.watch().then(
      (s) => {
        stream = s;
        if (over) {
          // Closed before the stream existed: cancel it (its CANCELLED error needs a listener).
          s.on('error', () => undefined);
          (s as unknown as { cancel?: () => void }).cancel?.();
          return;
        }
        s.on('data', onData);
        s.on('error', (error: Error) => finish(() => handlers.onBroken(cast(this.#errors, error, `watching ${prefix}`))));
        s.on('end', () => finish(() => handlers.onBroken(cast(this.#errors, new Error('watch stream ended'), `watching ${prefix}`))));
        s.write({
          create_request: { key: Buffer.from(prefix), range_end: prefixEnd(prefix), start_revision: Number(startRevision), progress_notify: true },
        });
      },
      (error: unknown) => finish(() => handlers.onBroken(cast(this.#errors, error, `watching ${prefix}`))),
    );
    return {
      requestProgress: () => {
        if (!over && stream) {
          try {
            stream.write({ progress_request: {} });
          } catch (error) {
            finish(() => handlers.onBroken(cast(this.#errors, error, `watching ${prefix}`)));
          }
        }
      },
      close: () => finish(() => undefined),
    };
  }

  async commit(ops: readonly WriteOp[]): Promise<string> {
    if (ops.length > MAX_TXN_OPS) throw new FederationError(FederationErrorCodes.internal, `a transaction of ${ops.length} ops exceeds etcd's ${MAX_TXN_OPS}`);
    try {
      const res = await this.#client.kv.txn({
        success: ops.map((op) =>
          'put' in op
            ? { request_put: { key: Buffer.from(op.put), value: Buffer.from(op.value) } }
            : { request_delete_range: { key: Buffer.from(op.delete) } },
        ),
      }, this.#deadline());
      return res.header.revision;
    } catch (error) {
      throw cast(this.#errors, error, `writing ${ops.length} keys`);
    }
  }

  leasedKey(key: string, ttlSeconds: number): LeasedKey {
    let lease: Lease | undefined;
    const drop = () => {
      if (!lease) return;
      lease.release();
      this.#leases.delete(lease);
      lease = undefined;
    };
    return {
      put: async (value: string) => {
        if (!lease) {
          lease = this.#client.lease(ttlSeconds, { autoKeepAlive: true });
          this.#leases.add(lease);
          const mine = lease;
          // etcd3 reports a lease lost only after ~2×TTL; a failed put below re-grants sooner.
          lease.on('lost', () => {
            if (lease === mine) drop();
          });
        }
        try {
          await lease.put(key).value(value).exec();
        } catch (error) {
          drop();
          throw cast(this.#errors, error, `writing ${key} on a lease`);
        }
      },
      revoke: async () => {
        const current = lease;
        lease = undefined;
        if (!current) return;
        this.#leases.delete(current);
        try {
          await current.revoke();
        } catch {
          current.release();
        }
      },
    };
  }

  async grantPrefix(options: { user: string; role: string; prefix: string; permission: Permission }): Promise<void> {
    const auth = this.#client.auth;
    const permType = ({ read: 'Read', write: 'Write', readwrite: 'Readwrite' } as const)[options.permission];
    try {
      await tolerating(/already exists/i, auth.roleAdd({ name: options.role }, this.#deadline()));
      // Make the role hold exactly this one permission, whatever an earlier grant left.
      const existing = await auth.roleGet({ role: options.role }, this.#deadline());
      for (const perm of existing.perm ?? []) {
        await auth.roleRevokePermission({ role: options.role, key: perm.key, range_end: perm.range_end }, this.#deadline());
      }
      await auth.roleGrantPermission({ name: options.role, perm: { permType, key: Buffer.from(options.prefix), range_end: prefixEnd(options.prefix) } }, this.#deadline());
      await tolerating(/already exists/i, auth.userAdd({ name: options.user, options: { no_password: true } }, this.#deadline()));
      await auth.userGrantRole({ user: options.user, role: options.role }, this.#deadline());
    } catch (error) {
      throw cast(this.#errors, error, `granting ${options.user} ${options.permission} on ${options.prefix}`);
    }
  }

  async revokeUser(options: { user: string; role: string }): Promise<void> {
    const auth = this.#client.auth;
    try {
      await tolerating(/not found/i, auth.userDelete({ name: options.user }, this.#deadline()));
      await tolerating(/not found/i, auth.roleDelete({ role: options.role }, this.#deadline()));
    } catch (error) {
      throw cast(this.#errors, error, `revoking ${options.user}`);
    }
  }

  async authEnabled(): Promise<boolean> {
    // etcd 3.4 has no AuthStatus RPC; authenticating as nobody tells the two states apart.
    try {
      await this.#client.auth.authenticate({ name: 'causeway-auth-probe', password: 'x' }, this.#deadline());
      return true;
    } catch (error) {
      const message = (error as Error).message;
      if (/not enabled/i.test(message)) return false;
      if (/authentication failed|invalid user|password/i.test(message)) return true;
      throw cast(this.#errors, error, 'reading etcd auth state');
    }
  }

  close(): void {
    for (const lease of this.#leases) lease.release();
    this.#leases.clear();
    this.#client.close();
  }
}

/** Awaits `p`, treating an error whose message matches `benign` (e.g. "already exists") as done. */
async function tolerating<T>(benign: RegExp, p: Promise<T>): Promise<T | undefined> {
  try {
    return await p;
  } catch (error) {
    if (benign.test((error as Error).message)) return undefined;
    throw error;
  }
}
