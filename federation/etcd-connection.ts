import { exportStoreSni, settingName, type EtcdConnection, type LinkConfig } from '../mesh/index.js';
import { Etcd3Store, StoreErrorCodes, type EtcdStore } from '../store/index.js';
import { FederationError, FederationErrorCodes } from './errors.js';

/**
 * An etcd client for the federation (a peer's, or this cluster's when no controller
 * shares its own): calls fail after 10 s without a second try, so that a link sees a
 * partitioned peer as such, and errors are {@link FederationError}s.
 */
export function connectFederationStore(connection: EtcdConnection, options: { setting?: string } = {}): EtcdStore {
  return new Etcd3Store(connection, {
    callTimeoutMs: 10_000,
    retryTransient: false,
    ...(options.setting ? { setting: options.setting } : {}),
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

/**
 * How a link reaches its peer: through the peer's gateway(s) to its export store, by the
 * export store's SNI (docs/architecture.md "Names"; several gateways are tried in turn),
 * or — the direct form, for tests and development — the peer etcd it names.
 */
export function peerConnection(link: LinkConfig, trustDomain: string): { connection: EtcdConnection; setting?: string } {
  if (link.etcd) return { connection: link.etcd };
  const gateways = link.gateways ?? [];
  const connection: EtcdConnection = {
    endpoints: gateways.map((g) => `https://${g}`),
    ...(link.tls ? { tls: { ...link.tls } } : {}),
    dialTimeoutMs: 5000,
    serverName: exportStoreSni(link.peer, trustDomain),
  };
  return { connection, setting: settingName(link, 'gateways', `links[].gateways of peer ${link.peer}`) };
}

/** Opens the federation's client to a link's peer ({@link peerConnection}). */
export function connectPeerStore(link: LinkConfig, trustDomain: string): EtcdStore {
  const { connection, setting } = peerConnection(link, trustDomain);
  return connectFederationStore(connection, setting ? { setting } : {});
}
