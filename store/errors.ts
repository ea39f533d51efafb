import { CausewayError } from '../mesh/index.js';

/** Stable codes of the store's errors (logs, metrics and callers match on them). */
export const StoreErrorCodes = {
  /** etcd could not be reached, timed out or failed the call; retryable. */
  unavailable: 'CW_ETCD_UNAVAILABLE',
  /** etcd refused the call: authentication or RBAC (the user's role lacks the key range). */
  permissionDenied: 'CW_ETCD_PERMISSION_DENIED',
  /** The TLS files of an etcd connection cannot be read. */
  tlsUnreadable: 'CW_ETCD_TLS_UNREADABLE',
  /** A transaction holds more operations than etcd's --max-txn-ops. */
  transactionTooLarge: 'CW_ETCD_TXN_TOO_LARGE',
} as const;

/**
 * An etcd call that failed. `message` names the endpoints, the operation, the cause and
 * the setting to check (see {@link EtcdErrorTranslator}); `cause` is etcd3's error.
 */
export class StoreError extends CausewayError {}
