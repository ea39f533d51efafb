import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions } from 'etcd3';
import { settingName } from './config-origin.js';
import type { EtcdConnection } from './config/schemas.js';
import { CausewayError } from './errors.js';
import { grpcFailure } from './grpc-failure.js';

/**
 * Opens an etcd3 client for a validated {@link EtcdConnection}. With TLS files, the
 * client certificate's CN is the etcd user (federation/README.md "etcd security settings").
 * etcd3 1.1.2 does not handle compaction on watch resume: callers re-list on `error`.
 */
export function connectEtcd(connection: EtcdConnection): Etcd3 {
  const options: IOptions = { hosts: [...connection.endpoints], dialTimeout: connection.dialTimeoutMs };
  if (connection.tls) {
    try {
      options.credentials = {
        rootCertificate: readFileSync(connection.tls.ca),
        ...(connection.tls.cert ? { certChain: readFileSync(connection.tls.cert) } : {}),
        ...(connection.tls.key ? { privateKey: readFileSync(connection.tls.key) } : {}),
      };
    } catch (error) {
      throw new CausewayError('CW_ETCD_TLS_UNREADABLE', `cannot read etcd TLS files (${(error as Error).message}); check etcd.tls paths`, { cause: error });
    }
  }
  if (connection.username) options.auth = { username: connection.username, password: connection.password ?? '' };
  return new Etcd3(options);
}

export type EtcdFailureKind = 'unreachable' | 'refused' | 'failed';

export interface EtcdFailure {
  readonly kind: EtcdFailureKind;
  /** One sentence: which etcd, what happened, what to check. */
  readonly message: string;
}

const CIRCUIT_OPEN = /circuit breaker is open/i;
const PERMISSION = /permission denied|authentication failed|user name is empty|invalid auth token|auth: /i;
const TLS = /certificate|SSL|TLS|handshake|self.signed/i;

/**
 * Casts etcd3's errors into sentences that name the configured endpoints and the setting
 * listing them: `etcd at http://127.0.0.1:2379 is unreachable (connection refused); check
 * that etcd runs and etcd.endpoints in east.yaml`. One per etcd client: after a few failed
 * calls etcd3 stops calling for a while and throws its own "circuit breaker is open"
 * instead, whose real cause is the failure before it — kept here.
 */
export class EtcdErrorTranslator {
  readonly #endpoints: string;
  readonly #setting: string;
  #lastUnreachable: string | undefined;

  constructor(connection: EtcdConnection) {
    this.#endpoints = connection.endpoints.join(', ');
    this.#setting = settingName(connection, 'endpoints', 'etcd.endpoints in the config');
  }

  /** `during` names the operation, e.g. `list /causeway/v1/services/`. */
  explain(error: unknown, during?: string): EtcdFailure {
    const at = `etcd at ${this.#endpoints}`;
    const when = during === undefined ? '' : `, during ${during}`;
    const text = (error as Error | undefined)?.message ?? String(error);
    if (CIRCUIT_OPEN.test(text) || (error as Error | undefined)?.name === 'BrokenCircuitError') {
      const reason = this.#lastUnreachable ?? 'the last few calls failed';
      return { kind: 'unreachable', message: `${at} is unreachable (${reason}${when}); check that etcd runs and ${this.#setting}` };
    }
    const { unreachable, reason } = grpcFailure(error);
    if (PERMISSION.test(reason)) {
      return { kind: 'refused', message: `${at} refused the request (${reason}${when}); check the etcd user this connection logs in as (client certificate CN or username, next to ${this.#setting}) and its role` };
    }
    if (TLS.test(reason)) {
      this.#lastUnreachable = `TLS: ${reason}`;
      return { kind: 'unreachable', message: `${at} failed the TLS handshake (${reason}${when}); check the etcd TLS files next to ${this.#setting}` };
    }
    if (unreachable) {
      this.#lastUnreachable = reason;
      return { kind: 'unreachable', message: `${at} is unreachable (${reason}${when}); check that etcd runs and ${this.#setting}` };
    }
    return { kind: 'failed', message: `${at} failed (${reason}${when})` };
  }
}
