import { grpcFailure, settingName, type EtcdConnection } from '../mesh/index.js';

export type EtcdFailureKind = 'unreachable' | 'refused' | 'failed';

export interface EtcdFailure {
  readonly kind: EtcdFailureKind;
  /** One sentence: which etcd, what happened, what to check. */
  readonly message: string;
}

const CIRCUIT_OPEN = /circuit breaker is open/i;
const PERMISSION = /permission denied|authentication failed|user name is empty|invalid auth token|auth: /i;
const TLS = /certificate|SSL|TLS|handshake|self.signed/i;
/** The server's TLS alert about the client certificate: the login itself is refused, not the network. */
const CLIENT_CERTIFICATE_REFUSED = /alert (bad certificate|unknown ca|certificate (unknown|revoked|expired|required))|tlsv1 alert (unknown ca|certificate)|sslv3 alert (bad|certificate)/i;

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

  /** `setting` names the config setting behind the endpoints when they are not `connection.endpoints` of a loaded config (a link's gateways). */
  constructor(connection: EtcdConnection, setting?: string) {
    this.#endpoints = connection.endpoints.join(', ');
    this.#setting = setting ?? settingName(connection, 'endpoints', 'etcd.endpoints in the config');
  }

  /** `during` names the operation, e.g. `listing /causeway/v1/services/`. */
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
    if (CLIENT_CERTIFICATE_REFUSED.test(reason)) {
      return { kind: 'refused', message: `${at} refused this client's certificate (${reason}${when}); check the client certificate next to ${this.#setting}: its CA must be the one the server trusts` };
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
