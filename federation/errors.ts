import { CausewayError } from '../mesh/index.js';

/** Stable codes of the federation's errors (for logs, metrics and callers to match on). */
export const FederationErrorCodes = {
  etcdUnavailable: 'CW_FEDERATION_ETCD_UNAVAILABLE',
  etcdPermissionDenied: 'CW_FEDERATION_ETCD_PERMISSION_DENIED',
  peerMismatch: 'CW_FEDERATION_PEER_MISMATCH',
  internal: 'CW_FEDERATION_INTERNAL',
} as const;

export class FederationError extends CausewayError {}
