import { EtcdKeys, parseEtcdKey, type LinkConfig } from '../mesh/index.js';
import { connectFederationStore, peerConnection } from './etcd-connection.js';
import { FederationError, FederationErrorCodes } from './errors.js';

export interface ExportStoreProbeOptions {
  /** The peer whose export store is probed (its name is in the SNI). */
  readonly peer: string;
  /** The peer's gateway(s), host:port, as a link names them. */
  readonly gateways: readonly string[];
  readonly trustDomain: string;
  /** The export store's CA; without it the probe cannot verify the server and refuses to start. */
  readonly ca: string;
  /** A client certificate and key; omitted = none, which the export store must refuse. */
  readonly cert?: string;
  readonly key?: string;
  readonly dialTimeoutMs?: number;
}

export interface ExportStoreProbeResult {
  readonly serverName: string;
  /** The exported services' keys under /causeway/v1/exports/ (`_cluster`, `_heartbeat`, `_links` and anything else not counted). */
  readonly exports: number;
  readonly keys: readonly string[];
  readonly revision: string;
}

function isExportedServiceKey(key: string): boolean {
  try {
    return parseEtcdKey(key).kind === 'exported-service';
  } catch {
    return false;
  }
}

/**
 * Lists a peer's exports the way its link does — through the peer's gateway, by the
 * export-store SNI, with the given credentials (docs/architecture.md "Names") — so an
 * operator, or a topology's scenario, can see what a certificate may read from where it
 * stands. A refusal (no certificate, one of another CA, a user without the grant) throws
 * the federation's error for it.
 */
export async function probeExportStore(options: ExportStoreProbeOptions): Promise<ExportStoreProbeResult> {
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new FederationError(FederationErrorCodes.probeInvalid, 'give both a client certificate and its key, or neither');
  }
  const link: LinkConfig = { peer: options.peer, gateways: [...options.gateways] };
  const { connection } = peerConnection(link, options.trustDomain);
  // The link's form, with whatever credentials are given — also none, to see them refused.
  const tls = { ca: options.ca, ...(options.cert !== undefined ? { cert: options.cert, key: options.key } : {}) };
  const store = connectFederationStore({ ...connection, tls, ...(options.dialTimeoutMs !== undefined ? { dialTimeoutMs: options.dialTimeoutMs } : {}) }, { setting: '--gateway' });
  try {
    const listing = await store.list(EtcdKeys.exportsPrefix);
    const keys = listing.entries.map((e) => e.key).filter(isExportedServiceKey);
    return { serverName: connection.serverName ?? '', exports: keys.length, keys, revision: listing.revision };
  } finally {
    await store.close();
  }
}
