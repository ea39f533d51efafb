import type { EtcdConnection } from '../mesh/index.js';
import { Etcd3Store, type EtcdStore } from '../store/index.js';
import { EtcdUnavailableError } from './errors.js';

/**
 * The controller's one etcd client (its catalog, registrations, exports and the hosted
 * federation's local writes share it): the store's errors become
 * {@link EtcdUnavailableError}s, which travel as gRPC UNAVAILABLE.
 */
export function connectControllerStore(connection: EtcdConnection): EtcdStore {
  return new Etcd3Store(connection, { castError: (error) => new EtcdUnavailableError(error.message, error.cause) });
}
