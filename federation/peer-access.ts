import { EtcdKeys } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';
import { FederationError, FederationErrorCodes } from './errors.js';

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
  const refusal = user === ETCD_ROOT_USER ? peerUserRefusal({ peer: options.peer, user, roles: undefined }) : undefined;
  if (refusal !== undefined) throw new FederationError(FederationErrorCodes.grantRefused, `${refusal}; nothing was changed`);
  await store.grantPrefix({ user, role, prefix: EtcdKeys.exportsPrefix, permission: 'read' });
  return { peer: options.peer, user, role, prefix: EtcdKeys.exportsPrefix, authEnabled: await store.authEnabled() };
}

export async function revokePeerAccess(store: EtcdStore, options: { peer: string; user?: string }): Promise<void> {
  await store.revokeUser({ user: options.user ?? peerUserName(options.peer), role: peerRoleName(options.peer) });
}

/** etcd's superuser: it holds role `root`, which may do everything, whatever its roles say. */
export const ETCD_ROOT_USER = 'root';

/**
 * Why `user` may not become `peer`'s login, given the roles etcd already gives it
 * (undefined: no such user yet); undefined when it may. The grant adds the peer's role
 * and resets that role to exactly the read on exports, so a user holding any other role
 * would hand the peer that role's permissions too — and `root` is everything.
 */
export function peerUserRefusal(options: { peer: string; user: string; roles: readonly string[] | undefined }): string | undefined {
  const { peer, user, roles } = options;
  const role = peerRoleName(peer);
  if (user === ETCD_ROOT_USER) {
    return `--user ${ETCD_ROOT_USER}: "${ETCD_ROOT_USER}" is etcd's superuser (every key, read and write); a peer needs a user of its own — drop --user (the default is ${peerUserName(peer)}) or name another one`;
  }
  const others = (roles ?? []).filter((r) => r !== role);
  if (others.length > 0) {
    return (
      `etcd user "${user}" already exists with role${others.length === 1 ? '' : 's'} ${others.map((r) => `"${r}"`).join(', ')} besides "${role}": ` +
      `the peer would get ${others.length === 1 ? 'its' : 'their'} permissions too — pick another --user, or take ${others.length === 1 ? 'it' : 'them'} away first (etcdctl user revoke-role ${user} ${others[0]})`
    );
  }
  return undefined;
}

/**
 * Refuses (with {@link FederationErrorCodes.grantRefused}) a user that may not become the
 * peer's login, reading its roles from etcd; changes nothing. Run before {@link grantPeerAccess}.
 */
export async function checkPeerUser(auth: { userRoles(user: string): Promise<readonly string[] | undefined> }, options: { peer: string; user?: string }): Promise<void> {
  const user = options.user ?? peerUserName(options.peer);
  // root is refused without asking etcd: its name alone says enough.
  const roles = user === ETCD_ROOT_USER ? undefined : await auth.userRoles(user);
  const refusal = peerUserRefusal({ peer: options.peer, user, roles });
  if (refusal !== undefined) throw new FederationError(FederationErrorCodes.grantRefused, `${refusal}; nothing was changed`);
}
