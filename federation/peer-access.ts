import { EtcdKeys } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';

/**
 * Least privilege for peers (docs/architecture.md "etcd key layout"): a peer's etcd user may read
 * `/causeway/v1/exports/` and nothing else, and write nothing. With `--client-cert-auth`
 * etcd takes the client certificate's CN as the user, so the user is password-less.
 */
export interface PeerAccess {
  readonly peer: string;
  /** The etcd user: the CN of the client certificate issued to the peer. */
  readonly user: string;
  readonly role: string;
  readonly prefix: string;
  /** False when etcd auth is off: the grant exists but nothing enforces it yet. */
  readonly authEnabled: boolean;
}

export function peerUserName(peer: string): string {
  return `causeway-peer-${peer}`;
}

export function peerRoleName(peer: string): string {
  return `causeway-peer-${peer}-exports-read`;
}

export async function grantPeerAccess(store: EtcdStore, options: { peer: string; user?: string }): Promise<PeerAccess> {
  EtcdKeys.peerImportsPrefix(options.peer); // validates the peer name
  const user = options.user ?? peerUserName(options.peer);
  const role = peerRoleName(options.peer);
  await store.grantPrefix({ user, role, prefix: EtcdKeys.exportsPrefix, permission: 'read' });
  return { peer: options.peer, user, role, prefix: EtcdKeys.exportsPrefix, authEnabled: await store.authEnabled() };
}

export async function revokePeerAccess(store: EtcdStore, options: { peer: string; user?: string }): Promise<void> {
  await store.revokeUser({ user: options.user ?? peerUserName(options.peer), role: peerRoleName(options.peer) });
}
