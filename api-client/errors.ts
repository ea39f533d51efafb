import { status } from '@grpc/grpc-js';
import { CausewayError } from '../mesh/index.js';

/**
 * Stable codes of the controller's errors, on both ends of its API: the controller
 * refuses with them (each travels with the gRPC status below) and its node-side client
 * fails with them. Logs, metrics and callers match on them.
 */
export const ControllerErrorCodes = {
  etcdUnavailable: 'CW_CTRL_ETCD_UNAVAILABLE',
  unauthenticated: 'CW_CTRL_UNAUTHENTICATED',
  permissionDenied: 'CW_CTRL_PERMISSION_DENIED',
  invalidRequest: 'CW_CTRL_INVALID_REQUEST',
  unknownService: 'CW_CTRL_UNKNOWN_SERVICE',
  endpointNotFound: 'CW_CTRL_ENDPOINT_NOT_FOUND',
  wrongCluster: 'CW_CTRL_WRONG_CLUSTER',
  conflict: 'CW_CTRL_CONFLICT',
  tlsMissing: 'CW_CTRL_TLS_MISSING',
  notFound: 'CW_CTRL_NOT_FOUND',
  clientClosed: 'CW_CTRL_CLIENT_CLOSED',
  snapshotRejected: 'CW_CTRL_SNAPSHOT_REJECTED',
  /** A call to the controller failed on the way (not a refusal by the controller). */
  unreachable: 'CW_CTRL_UNREACHABLE',
  // Workload groups and bundles (`causeway workload …`; raised on the controller's side only).
  workloadGroupNotFound: 'CW_WORKLOAD_GROUP_NOT_FOUND',
  workloadIdentityNotAllowed: 'CW_WORKLOAD_IDENTITY_NOT_ALLOWED',
  workloadPortsMismatch: 'CW_WORKLOAD_PORTS_MISMATCH',
  workloadBundleInvalid: 'CW_WORKLOAD_BUNDLE_INVALID',
  workloadBundleWriteFailed: 'CW_WORKLOAD_BUNDLE_WRITE_FAILED',
} as const;

const GRPC_STATUS: Record<string, status> = {
  [ControllerErrorCodes.etcdUnavailable]: status.UNAVAILABLE,
  [ControllerErrorCodes.unauthenticated]: status.UNAUTHENTICATED,
  [ControllerErrorCodes.permissionDenied]: status.PERMISSION_DENIED,
  [ControllerErrorCodes.invalidRequest]: status.INVALID_ARGUMENT,
  [ControllerErrorCodes.unknownService]: status.FAILED_PRECONDITION,
  [ControllerErrorCodes.endpointNotFound]: status.NOT_FOUND,
  [ControllerErrorCodes.wrongCluster]: status.FAILED_PRECONDITION,
  [ControllerErrorCodes.conflict]: status.ABORTED,
};

/** An error of the controller; `grpcStatus` is the precise status a refusal travels with. */
export class ControllerError extends CausewayError {
  get grpcStatus(): status {
    return GRPC_STATUS[this.code] ?? status.INTERNAL;
  }
}
