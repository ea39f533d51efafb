/**
 * The one view of etcd every part uses (docs/architecture.md "etcd key layout"): the
 * operations Causeway needs, with our own types and revisions as decimal strings, so that
 * etcd3 stays behind one file ({@link Etcd3Store}).
 */
export interface StoredValue {
  readonly key: string;
  readonly value: Buffer;
  readonly modRevision: string;
  /** The etcd lease the key is attached to, `'0'` for none. */
  readonly lease: string;
}

export interface Listing {
  /** The store revision the listing is consistent at; a watch resumes after it. */
  readonly revision: string;
  readonly entries: StoredValue[];
}

export interface ChangeEvent {
  readonly type: 'put' | 'delete';
  readonly key: string;
  /** Empty for deletes. */
  readonly value: Buffer;
  readonly modRevision: string;
  /** `'0'` for none, and for deletes. */
  readonly lease: string;
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
  /** etcd created the watch: from here on the stream delivers. */
  onCreated?(): void;
}

export interface PrefixWatch {
  /** Asks etcd for a progress notification (a liveness probe of the stream). */
  requestProgress(): void;
  close(): void;
}

export type WriteOp = { readonly put: string; readonly value: string } | { readonly delete: string };

export type Permission = 'read' | 'write' | 'readwrite';

export interface PutOptions {
  /** Attach the key to this lease (it dies with the lease). */
  readonly lease?: string;
}

export interface EtcdStore {
  /** Lists every key under `prefix` at one revision, paging so that large catalogs fit gRPC's message limit. */
  list(prefix: string, options?: { pageSize?: number }): Promise<Listing>;
  get(key: string): Promise<StoredValue | undefined>;
  /** Every key of the store, whatever its prefix (keys only): for a store that must hold nothing but what its owner wrote. */
  listAllKeys(): Promise<string[]>;
  put(key: string, value: string, options?: PutOptions): Promise<void>;
  /**
   * Writes only when the key's mod revision still equals `modRevision` (`'0'` = the key
   * must be absent). Returns false when someone else wrote first.
   */
  putIfUnchanged(key: string, value: string, modRevision: string, options?: PutOptions): Promise<boolean>;
  /** Writes many keys in transactions of at most {@link MAX_TXN_OPS} puts. */
  putMany(entries: ReadonlyArray<{ key: string; value: string }>, options?: PutOptions): Promise<void>;
  delete(key: string): Promise<void>;
  deleteIfUnchanged(key: string, modRevision: string): Promise<boolean>;
  /** Applies the ops atomically in one transaction (at most {@link MAX_TXN_OPS}); returns the new revision. */
  commit(ops: readonly WriteOp[]): Promise<string>;
  /**
   * The lossless watch: every change under `prefix` from `startRevision` (inclusive), in
   * order, on etcd's raw watch stream; a compacted start revision is reported as such,
   * never skipped over (store/README.md "Watching").
   */
  watchPrefix(prefix: string, startRevision: string, handlers: PrefixWatchHandlers): PrefixWatch;
  grantLease(ttlSeconds: number): Promise<string>;
  /** Refreshes any lease by id (also one another process granted); returns the TTL left, 0 when expired. */
  keepAlive(leaseId: string): Promise<number>;
  /** Revokes a lease (deleting its keys); an already expired lease is not an error. */
  revokeLease(leaseId: string): Promise<void>;
  /** etcd RBAC: a role with one prefix permission, and a password-less user (its client-cert CN) holding it. */
  grantPrefix(options: { user: string; role: string; prefix: string; permission: Permission }): Promise<void>;
  revokeUser(options: { user: string; role: string }): Promise<void>;
  authEnabled(): Promise<boolean>;
  /**
   * Turns etcd auth on with the documented bootstrap: user `root` (password-less: the
   * client certificate's CN), role `root`, `auth enable`. Run it as that `CN=root` login.
   */
  enableAuth(): Promise<void>;
  /** The user's roles; undefined when etcd has no such user. */
  userRoles(user: string): Promise<readonly string[] | undefined>;
  /** The role's permissions; undefined when etcd has no such role. */
  rolePermissions(role: string): Promise<readonly RolePermission[] | undefined>;
  /**
   * Whether etcd refuses this login a put of `key` (permission denied). Writes nothing
   * either way: the put sits in a transaction behind a comparison that never holds.
   */
  writeRefused(key: string): Promise<boolean>;
  close(): Promise<void>;
}

export interface RolePermission {
  readonly permission: Permission;
  readonly key: string;
  /** etcd's range end: the key after the last one covered ('' for one key, `\0` for every key from `key` on). */
  readonly rangeEnd: string;
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
