import { readFileSync } from 'node:fs';
import { Etcd3, type IKeyValue, type IOptions, type IWatchResponse } from 'etcd3';
import { logger, type EtcdConnection } from '../mesh/index.js';
import { EtcdErrorTranslator } from './etcd-failure.js';
import { StoreError, StoreErrorCodes } from './errors.js';
import {
  MAX_TXN_OPS,
  prefixEnd,
  type ChangeEvent,
  type EtcdStore,
  type Listing,
  type Permission,
  type PrefixWatch,
  type PrefixWatchHandlers,
  type PutOptions,
  type RolePermission,
  type StoredValue,
  type WriteOp,
} from './etcd-store.js';

/**
 * The only module that imports etcd3 (frozen since 2023; ~35 MB resident, which is why
 * the sidecar never loads `store/`). Everything etcd3 does wrong or hides is handled here
 * once: see store/README.md.
 */
export interface Etcd3StoreOptions {
  /**
   * Deadline of each call (default: the connection's `dialTimeoutMs`, at least 3 s). gRPC
   * has none by default, so without one a call into a partitioned etcd would hang.
   */
  readonly callTimeoutMs?: number;
  /**
   * Give a call that timed out or found etcd unavailable one more try with a fresh deadline
   * (default true): etcd3's own retries reuse the first deadline, so a call delayed past it
   * (a starved event loop, a channel still resolving) fails at once. Callers that measure
   * an etcd's liveness by how calls fail (a peer link) turn it off.
   */
  readonly retryTransient?: boolean;
  /** Casts the store's errors into the owning part's (so that their codes say whose etcd failed). */
  readonly castError?: (error: StoreError) => Error;
  /** The config setting that lists these endpoints, for error messages (default: found from the loaded config). */
  readonly setting?: string;
}

const PERMISSIONS = { Read: 'read', Write: 'write', Readwrite: 'readwrite' } as const;
const NOT_FOUND = /not found/i;

function toStored(kv: IKeyValue): StoredValue {
  return { key: kv.key.toString('utf8'), value: kv.value, modRevision: kv.mod_revision, lease: kv.lease || '0' };
}

function openClient(connection: EtcdConnection): Etcd3 {
  const options: IOptions = { hosts: [...connection.endpoints], dialTimeout: connection.dialTimeoutMs };
  if (connection.tls) {
    try {
      options.credentials = {
        rootCertificate: readFileSync(connection.tls.ca),
        ...(connection.tls.cert ? { certChain: readFileSync(connection.tls.cert) } : {}),
        ...(connection.tls.key ? { privateKey: readFileSync(connection.tls.key) } : {}),
      };
    } catch (error) {
      throw new StoreError(StoreErrorCodes.tlsUnreadable, `cannot read etcd TLS files (${(error as Error).message}); check etcd.tls paths`, { cause: error });
    }
  }
  if (connection.username) options.auth = { username: connection.username, password: connection.password ?? '' };
  if (connection.serverName) {
    // Through a gateway the endpoint is the gateway's address, while TLS (SNI, and the
    // certificate check) must name the export store behind it (docs/architecture.md "Names").
    options.grpcOptions = { 'grpc.ssl_target_name_override': connection.serverName, 'grpc.default_authority': connection.serverName };
  }
  return new Etcd3(options);
}

type KeepAliveStream = Awaited<ReturnType<Etcd3['leaseClient']['leaseKeepAlive']>>;
type WatchStream = Awaited<ReturnType<Etcd3['watchClient']['watch']>>;

/**
 * Keep-alives for leases by id over one LeaseKeepAlive stream. etcd answers in request
 * order, so responses are matched first-in first-out per lease id. (etcd3's `lease()`
 * helper reports a lost lease only after ~2×TTL.)
 */
class LeaseKeepAliveChannel {
  readonly #client: Etcd3;
  readonly #pending = new Map<string, Array<{ resolve: (ttl: number) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>>();
  #stream: KeepAliveStream | undefined;
  #opening: Promise<KeepAliveStream> | undefined;

  constructor(client: Etcd3) {
    this.#client = client;
  }

  #open(): Promise<KeepAliveStream> {
    if (this.#stream) return Promise.resolve(this.#stream);
    this.#opening ??= this.#client.leaseClient.leaseKeepAlive().then(
      (stream) => {
        this.#stream = stream;
        this.#opening = undefined;
        stream.on('data', (res: { ID: string; TTL: string }) => {
          const queue = this.#pending.get(String(res.ID));
          const waiter = queue?.shift();
          if (queue && queue.length === 0) this.#pending.delete(String(res.ID));
          if (waiter) {
            clearTimeout(waiter.timer);
            waiter.resolve(Math.max(0, Number(res.TTL)));
          }
        });
        const fail = (error: Error) => {
          if (this.#stream !== stream) return;
          this.#stream = undefined;
          this.#rejectAll(error);
        };
        stream.on('error', fail);
        stream.on('end', () => fail(new Error('lease keep-alive stream ended')));
        return stream;
      },
      (error: unknown) => {
        this.#opening = undefined;
        throw error;
      },
    );
    return this.#opening;
  }

  async keepAlive(leaseId: string, timeoutMs: number): Promise<number> {
    const stream = await this.#open();
    return new Promise<number>((resolve, reject) => {
      const queue = this.#pending.get(leaseId) ?? [];
      const timer = setTimeout(() => {
        const i = queue.findIndex((w) => w.timer === timer);
        if (i >= 0) queue.splice(i, 1);
        // A stream that stopped answering is dropped; the next keep-alive opens a new one.
        if (this.#stream === stream) {
          this.#stream = undefined;
          stream.end();
        }
        reject(new Error(`lease ${leaseId} keep-alive timed out after ${timeoutMs} ms`));
      }, timeoutMs);
      queue.push({ resolve, reject, timer });
      this.#pending.set(leaseId, queue);
      stream.write({ ID: leaseId });
    });
  }

  close(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    stream?.end();
    this.#rejectAll(new Error('closed'));
  }

  #rejectAll(error: Error): void {
    for (const queue of this.#pending.values()) {
      for (const w of queue) {
        clearTimeout(w.timer);
        w.reject(error);
      }
    }
    this.#pending.clear();
  }
}

/** The etcd3-backed {@link EtcdStore}: one client, one error translator, a deadline on every call. */
export class Etcd3Store implements EtcdStore {
  readonly #client: Etcd3;
  readonly #keepAlives: LeaseKeepAliveChannel;
  readonly #errors: EtcdErrorTranslator;
  readonly #callTimeoutMs: number;
  readonly #retryTransient: boolean;
  readonly #castError: (error: StoreError) => Error;
  readonly #watches = new Set<PrefixWatch>();
  readonly #log = logger('etcd-store');

  constructor(connection: EtcdConnection, options: Etcd3StoreOptions = {}) {
    this.#client = openClient(connection);
    this.#errors = new EtcdErrorTranslator(connection, options.setting);
    this.#keepAlives = new LeaseKeepAliveChannel(this.#client);
    this.#callTimeoutMs = options.callTimeoutMs ?? Math.max(connection.dialTimeoutMs, 3000);
    this.#retryTransient = options.retryTransient ?? true;
    this.#castError = options.castError ?? ((error) => error);
  }

  /** Same as the constructor. */
  static connect(connection: EtcdConnection, options: Etcd3StoreOptions = {}): Etcd3Store {
    return new Etcd3Store(connection, options);
  }

  #deadline(): { deadline: number } {
    return { deadline: Date.now() + this.#callTimeoutMs };
  }

  /** etcd3's errors, cast into ours: the message names the endpoints and the setting to check. */
  #cast(error: unknown, during: string): Error {
    if (error instanceof StoreError) return this.#castError(error);
    const failure = this.#errors.explain(error, during);
    const code = failure.kind === 'refused' ? StoreErrorCodes.permissionDenied : StoreErrorCodes.unavailable;
    return this.#castError(new StoreError(code, failure.message, { cause: error, retryable: code === StoreErrorCodes.unavailable }));
  }

  async #call<T>(during: string, run: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await run();
      } catch (error) {
        // Cast on every attempt: the translator keeps the cause behind a later circuit-breaker refusal.
        const cast = this.#cast(error, during);
        const transient = /DEADLINE_EXCEEDED|UNAVAILABLE/.test((error as Error)?.message ?? '');
        if (!this.#retryTransient || attempt >= 2 || !transient) throw cast;
      }
    }
  }

  list(prefix: string, options: { pageSize?: number } = {}): Promise<Listing> {
    const pageSize = options.pageSize ?? 2000;
    return this.#call(`listing ${prefix}`, async () => {
      const end = prefixEnd(prefix);
      const entries: StoredValue[] = [];
      let from: Buffer = Buffer.from(prefix);
      let revision: string | undefined;
      for (;;) {
        const res = await this.#client.kv.range({ key: from, range_end: end, limit: pageSize, ...(revision ? { revision } : {}) }, this.#deadline());
        revision ??= res.header.revision;
        for (const kv of res.kvs) entries.push(toStored(kv));
        const last = res.kvs.at(-1);
        if (!res.more || !last) break;
        from = Buffer.concat([last.key, Buffer.from([0])]);
      }
      return { revision: revision ?? '0', entries };
    });
  }

  listAllKeys(): Promise<string[]> {
    return this.#call('listing every key', async () => {
      // key \0 with range_end \0: every key from the smallest one on (etcd has no empty key).
      const res = await this.#client.kv.range({ key: Buffer.from([0]), range_end: Buffer.from([0]), keys_only: true }, this.#deadline());
      return res.kvs.map((kv) => kv.key.toString('utf8'));
    });
  }

  get(key: string): Promise<StoredValue | undefined> {
    return this.#call(`reading ${key}`, async () => {
      const kv = (await this.#client.kv.range({ key: Buffer.from(key) }, this.#deadline())).kvs[0];
      return kv ? toStored(kv) : undefined;
    });
  }

  put(key: string, value: string, options: PutOptions = {}): Promise<void> {
    return this.#call(`writing ${key}`, async () => {
      await this.#client.kv.put(putRequest(key, value, options), this.#deadline());
    });
  }

  putIfUnchanged(key: string, value: string, modRevision: string, options: PutOptions = {}): Promise<boolean> {
    return this.#call(`writing ${key}`, async () => {
      const compare = [{ key: Buffer.from(key), target: 'Mod' as const, result: 'Equal' as const, mod_revision: modRevision }];
      return (await this.#client.kv.txn({ compare, success: [{ request_put: putRequest(key, value, options) }] }, this.#deadline())).succeeded;
    });
  }

  putMany(entries: ReadonlyArray<{ key: string; value: string }>, options: PutOptions = {}): Promise<void> {
    return this.#call(`writing ${entries.length} keys`, async () => {
      for (let i = 0; i < entries.length; i += MAX_TXN_OPS) {
        const success = entries.slice(i, i + MAX_TXN_OPS).map((e) => ({ request_put: putRequest(e.key, e.value, options) }));
        await this.#client.kv.txn({ compare: [], success }, this.#deadline());
      }
    });
  }

  delete(key: string): Promise<void> {
    return this.#call(`deleting ${key}`, async () => {
      await this.#client.kv.deleteRange({ key: Buffer.from(key) }, this.#deadline());
    });
  }

  deleteIfUnchanged(key: string, modRevision: string): Promise<boolean> {
    return this.#call(`deleting ${key}`, async () => {
      const compare = [{ key: Buffer.from(key), target: 'Mod' as const, result: 'Equal' as const, mod_revision: modRevision }];
      return (await this.#client.kv.txn({ compare, success: [{ request_delete_range: { key: Buffer.from(key) } }] }, this.#deadline())).succeeded;
    });
  }

  commit(ops: readonly WriteOp[]): Promise<string> {
    if (ops.length > MAX_TXN_OPS) {
      return Promise.reject(this.#castError(new StoreError(StoreErrorCodes.transactionTooLarge, `a transaction of ${ops.length} ops exceeds etcd's ${MAX_TXN_OPS}`)));
    }
    return this.#call(`writing ${ops.length} keys`, async () => {
      const success = ops.map((op) => ('put' in op ? { request_put: putRequest(op.put, op.value, {}) } : { request_delete_range: { key: Buffer.from(op.delete) } }));
      return (await this.#client.kv.txn({ success }, this.#deadline())).header.revision;
    });
  }

  /**
   * On etcd's raw watch stream, not etcd3's Watcher: the Watcher resumes from the response
   * header revision, which can skip events of an unsynced watch, and hides compaction.
   */
  watchPrefix(prefix: string, startRevision: string, handlers: PrefixWatchHandlers): PrefixWatch {
    const during = `watching ${prefix}`;
    let over = false;
    let stream: WatchStream | undefined;
    const finish = (report: () => void) => {
      if (over) return;
      over = true;
      this.#watches.delete(watch);
      try {
        (stream as unknown as { cancel?: () => void } | undefined)?.cancel?.();
      } catch {
        // already gone
      }
      report();
    };
    const broken = (error: unknown) => finish(() => handlers.onBroken(this.#cast(error, during)));
    const onData = (res: IWatchResponse) => {
      if (over) return;
      if (res.compact_revision && res.compact_revision !== '0') {
        finish(() => handlers.onCompacted(res.compact_revision));
        return;
      }
      if (res.canceled) return broken(new Error(res.cancel_reason || 'watch canceled by etcd'));
      if (res.created) return handlers.onCreated?.();
      const events: ChangeEvent[] = (res.events ?? []).map((ev) => ({
        type: ev.type === 'Delete' ? 'delete' : 'put',
        key: ev.kv.key.toString('utf8'),
        value: ev.kv.value ?? Buffer.alloc(0),
        modRevision: ev.kv.mod_revision,
        lease: ev.kv.lease || '0',
      }));
      // An unsynced watcher's header revision runs ahead of the events it has sent, so only
      // an event-less (progress) response vouches for its header revision.
      const revision = events.length > 0 ? events[events.length - 1]!.modRevision : res.header.revision;
      handlers.onBatch({ events, revision, receivedAtMs: Date.now() });
    };
    const watch: PrefixWatch = {
      requestProgress: () => {
        if (over || !stream) return;
        try {
          stream.write({ progress_request: {} });
        } catch (error) {
          broken(error);
        }
      },
      close: () => finish(() => undefined),
    };
    this.#watches.add(watch);
    this.#client.watchClient.watch().then((s) => {
      stream = s;
      if (over) {
        // Closed before the stream existed: cancel it (its CANCELLED error needs a listener).
        s.on('error', () => undefined);
        (s as unknown as { cancel?: () => void }).cancel?.();
        return;
      }
      s.on('data', onData);
      s.on('error', broken);
      s.on('end', () => broken(new Error('watch stream ended')));
      s.write({ create_request: { key: Buffer.from(prefix), range_end: prefixEnd(prefix), start_revision: Number(startRevision), progress_notify: true } });
    }, broken);
    return watch;
  }

  grantLease(ttlSeconds: number): Promise<string> {
    return this.#call('granting a lease', async () => String((await this.#client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 }, this.#deadline())).ID));
  }

  keepAlive(leaseId: string): Promise<number> {
    return this.#call(`refreshing lease ${leaseId}`, () => this.#keepAlives.keepAlive(leaseId, this.#callTimeoutMs));
  }

  revokeLease(leaseId: string): Promise<void> {
    return this.#call(`revoking lease ${leaseId}`, () =>
      tolerating(/not found/i, this.#client.leaseClient.leaseRevoke({ ID: leaseId }, this.#deadline())).then(() => undefined),
    );
  }

  grantPrefix(options: { user: string; role: string; prefix: string; permission: Permission }): Promise<void> {
    const auth = this.#client.auth;
    const permType = ({ read: 'Read', write: 'Write', readwrite: 'Readwrite' } as const)[options.permission];
    return this.#call(`granting ${options.user} ${options.permission} on ${options.prefix}`, async () => {
      await tolerating(/already exists/i, auth.roleAdd({ name: options.role }, this.#deadline()));
      // Make the role hold exactly this one permission, whatever an earlier grant left.
      const existing = await auth.roleGet({ role: options.role }, this.#deadline());
      for (const perm of existing.perm ?? []) {
        await auth.roleRevokePermission({ role: options.role, key: perm.key, range_end: perm.range_end }, this.#deadline());
      }
      await auth.roleGrantPermission({ name: options.role, perm: { permType, key: Buffer.from(options.prefix), range_end: prefixEnd(options.prefix) } }, this.#deadline());
      await tolerating(/already exists/i, auth.userAdd({ name: options.user, options: { no_password: true } }, this.#deadline()));
      await auth.userGrantRole({ user: options.user, role: options.role }, this.#deadline());
    });
  }

  revokeUser(options: { user: string; role: string }): Promise<void> {
    const auth = this.#client.auth;
    return this.#call(`revoking ${options.user}`, async () => {
      await tolerating(/not found/i, auth.userDelete({ name: options.user }, this.#deadline()));
      await tolerating(/not found/i, auth.roleDelete({ role: options.role }, this.#deadline()));
    });
  }

  authEnabled(): Promise<boolean> {
    return this.#call('reading etcd auth state', async () => {
      // etcd 3.4 has no AuthStatus RPC; authenticating as nobody tells the two states apart.
      try {
        await this.#client.auth.authenticate({ name: 'causeway-auth-probe', password: 'x' }, this.#deadline());
        return true;
      } catch (error) {
        const message = (error as Error).message;
        if (/not enabled/i.test(message)) return false;
        if (/authentication failed|invalid user|password/i.test(message)) return true;
        throw error;
      }
    });
  }

  enableAuth(): Promise<void> {
    const auth = this.#client.auth;
    return this.#call('enabling etcd auth', async () => {
      await tolerating(/already exists/i, auth.userAdd({ name: 'root', options: { no_password: true } }, this.#deadline()));
      await auth.userGrantRole({ user: 'root', role: 'root' }, this.#deadline());
      await auth.authEnable(this.#deadline());
    });
  }

  async userRoles(user: string): Promise<readonly string[] | undefined> {
    try {
      return (await this.#client.auth.userGet({ name: user }, this.#deadline())).roles ?? [];
    } catch (error) {
      if (NOT_FOUND.test((error as Error).message)) return undefined;
      throw this.#cast(error, `reading etcd user ${user}`);
    }
  }

  async rolePermissions(role: string): Promise<readonly RolePermission[] | undefined> {
    try {
      const res = await this.#client.auth.roleGet({ role }, this.#deadline());
      return (res.perm ?? []).map((p) => ({ permission: PERMISSIONS[p.permType], key: p.key.toString('utf8'), rangeEnd: p.range_end.toString('utf8') }));
    } catch (error) {
      if (NOT_FOUND.test((error as Error).message)) return undefined;
      throw this.#cast(error, `reading etcd role ${role}`);
    }
  }

  async writeRefused(key: string): Promise<boolean> {
    const during = `probing a write to ${key}`;
    try {
      // etcd checks the permissions of every branch of a transaction before it compares:
      // a version below 0 never holds, so nothing is written either way.
      await this.#client.kv.txn(
        {
          compare: [{ key: Buffer.from(key), target: 'Version', result: 'Less', version: 0 }],
          success: [{ request_put: { key: Buffer.from(key), value: Buffer.from('{}') } }],
        },
        this.#deadline(),
      );
      return false;
    } catch (error) {
      if (this.#errors.explain(error, during).kind === 'refused') return true;
      throw this.#cast(error, during);
    }
  }

  async close(): Promise<void> {
    this.#keepAlives.close();
    for (const watch of [...this.#watches]) watch.close();
    this.#client.close();
    this.#log.debug('etcd client closed');
  }
}

function putRequest(key: string, value: string, options: PutOptions): { key: Buffer; value: Buffer; lease?: string } {
  return { key: Buffer.from(key), value: Buffer.from(value), ...(options.lease ? { lease: options.lease } : {}) };
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
