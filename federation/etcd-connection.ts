import type { EtcdConnection } from '../mesh/index.js';
import { Etcd3Store, StoreErrorCodes, type EtcdStore } from '../store/index.js';
import { FederationError, FederationErrorCodes } from './errors.js';

/**
 * An etcd client for the federation (a peer's, or this cluster's when no controller
 * shares its own): calls fail after 10 s without a second try, so that a link sees a
 * partitioned peer as such, and errors are {@link FederationError}s.
 */
export function connectFederationStore(connection: EtcdConnection): EtcdStore {
  return new Etcd3Store(connection, {
    callTimeoutMs: 10_000,
    retryTransient: false,
    castError: (error) => {
      const code =
        error.code === StoreErrorCodes.permissionDenied
          ? FederationErrorCodes.etcdPermissionDenied
          : error.code === StoreErrorCodes.unavailable
            ? FederationErrorCodes.etcdUnavailable
            : FederationErrorCodes.internal;
      return new FederationError(code, error.message, { cause: error.cause ?? error, retryable: error.retryable });
    },
  });
}
