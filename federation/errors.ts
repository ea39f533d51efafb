import { CausewayError } from '../mesh/index.js';

/** Stable codes of the federation's errors (for logs, metrics and callers to match on). */
export const FederationErrorCodes = {
  etcdUnavailable: 'CW_FEDERATION_ETCD_UNAVAILABLE',
  etcdPermissionDenied: 'CW_FEDERATION_ETCD_PERMISSION_DENIED',
  peerMismatch: 'CW_FEDERATION_PEER_MISMATCH',
  /** `federation grant` refused a user (etcd's root, or one holding more than the peer's read role); nothing was changed. */
  grantRefused: 'CW_FEDERATION_GRANT_REFUSED',
  /** A peer credential, once issued, could do more (or less) than the grant says. */
  grantCheckFailed: 'CW_FEDERATION_GRANT_CHECK_FAILED',
  /** A file `federation init` would write exists already; nothing was written. */
  filesExist: 'CW_FEDERATION_FILES_EXIST',
  /** `federation probe` was given a certificate without its key, or the other way round. */
  probeInvalid: 'CW_FEDERATION_PROBE_INVALID',
  /** A peer's `exports/_links` was refused (too large, too many links, invalid, or about another cluster); the last good one is kept. */
  reportedLinksRefused: 'CW_FEDERATION_REPORTED_LINKS_REFUSED',
  internal: 'CW_FEDERATION_INTERNAL',
} as const;

export class FederationError extends CausewayError {}
