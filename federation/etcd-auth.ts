import type { Etcd3 } from 'etcd3';
import { connectEtcd, EtcdErrorTranslator } from '../mesh/etcd-client.js';
import type { EtcdConnection } from '../mesh/index.js';
import { FederationError, FederationErrorCodes } from './errors.js';

export interface RolePermission {
  readonly permission: 'read' | 'write' | 'readwrite';
  readonly key: string;
  /** etcd's range end: the key after the last one covered ('' for one key, `\0` for every key from `key` on). */
  readonly rangeEnd: string;
}

const PERMISSIONS = { Read: 'read', Write: 'write', Readwrite: 'readwrite' } as const;
const NOT_FOUND = /not found/i;

/**
 * What etcd's auth store says about a login (its users, their roles, what the roles hold),
 * and what the login is refused — for `causeway federation grant`, which must know what a
 * user already holds before it hands that user to a peer (federation/README.md
 * "etcd security settings").
 */
export class EtcdAuthInspector {
  readonly #client: Etcd3;
  readonly #errors: EtcdErrorTranslator;
  readonly #callTimeoutMs: number;

  constructor(connection: EtcdConnection, options: { callTimeoutMs?: number } = {}) {
    this.#client = connectEtcd(connection);
    this.#errors = new EtcdErrorTranslator(connection);
    this.#callTimeoutMs = options.callTimeoutMs ?? 10_000;
  }

  /** The user's roles; undefined when etcd has no such user. */
  async userRoles(user: string): Promise<readonly string[] | undefined> {
    try {
      return (await this.#client.auth.userGet({ name: user }, this.#deadline())).roles ?? [];
    } catch (error) {
      if (NOT_FOUND.test((error as Error).message)) return undefined;
      throw this.#cast(error, `reading etcd user ${user}`);
    }
  }

  /** The role's permissions; undefined when etcd has no such role. */
  async rolePermissions(role: string): Promise<readonly RolePermission[] | undefined> {
    try {
      const res = await this.#client.auth.roleGet({ role }, this.#deadline());
      return (res.perm ?? []).map((p) => ({ permission: PERMISSIONS[p.permType], key: p.key.toString('utf8'), rangeEnd: p.range_end.toString('utf8') }));
    } catch (error) {
      if (NOT_FOUND.test((error as Error).message)) return undefined;
      throw this.#cast(error, `reading etcd role ${role}`);
    }
  }

  /**
   * Whether etcd refuses this login a put of `key` (permission denied). Writes nothing
   * either way: the put sits in a transaction behind a comparison that never holds (a
   * version below 0), and etcd checks the permissions of every branch before it compares.
   */
  async writeRefused(key: string): Promise<boolean> {
    try {
      await this.#client.kv.txn(
        {
          compare: [{ key: Buffer.from(key), target: 'Version', result: 'Less', version: 0 }],
          success: [{ request_put: { key: Buffer.from(key), value: Buffer.from('{}') } }],
        },
        this.#deadline(),
      );
      return false;
    } catch (error) {
      const failure = this.#errors.explain(error, `probing a write to ${key}`);
      if (failure.kind === 'refused') return true;
      throw this.#cast(error, `probing a write to ${key}`);
    }
  }

  close(): void {
    this.#client.close();
  }

  #deadline(): { deadline: number } {
    return { deadline: Date.now() + this.#callTimeoutMs };
  }

  #cast(error: unknown, during: string): FederationError {
    const failure = this.#errors.explain(error, during);
    const code = failure.kind === 'refused' ? FederationErrorCodes.etcdPermissionDenied : FederationErrorCodes.etcdUnavailable;
    return new FederationError(code, failure.message, { cause: error, retryable: code === FederationErrorCodes.etcdUnavailable });
  }
}
