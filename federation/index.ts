/**
 * Federation: links to peers, export → import mirroring, staleness, conflicts
 * (docs/architecture.md "Federation rules"). What other parts may use.
 */
export { Federation, type FederationOptions, type FederationStatus } from './federation.js';
export type { PeerLinkStatus, LinkTimings } from './peer-link.js';
export { HeartbeatPublisher, publishExportedCluster, type HeartbeatPublisherOptions } from './heartbeat-publisher.js';
export { grantPeerAccess, revokePeerAccess, peerUserName, peerRoleName, type PeerAccess } from './peer-access.js';
export { readClusterStatus, renderClusterStatus, type ClusterStatus, type LinkStatusView } from './cluster-status.js';
export { connectFederationStore } from './etcd-connection.js';
export { PortConflictBoard, portsSignature, type PortConflict } from './port-conflicts.js';
export { FederationMetrics } from './metrics.js';
export { FederationError, FederationErrorCodes } from './errors.js';
