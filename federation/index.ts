/**
 * Federation: links to peers, export → import mirroring, staleness, conflicts
 * (docs/architecture.md "Federation rules"). What other parts may use.
 */
export { Federation, type FederationOptions, type FederationStatus } from './federation.js';
export type { PeerLinkStatus, LinkTimings } from './peer-link.js';
export { HeartbeatPublisher, exportedClusterValue, publishExportedCluster, type ExportedClusterIdentity, type HeartbeatPublisherOptions } from './heartbeat-publisher.js';
export { StandaloneFederation, type StandaloneFederationOptions } from './run.js';
export { grantPeerAccess, revokePeerAccess, peerUserName, peerRoleName, checkPeerUser, peerUserRefusal, ETCD_ROOT_USER, type PeerAccess } from './peer-access.js';
export {
  createExportStorePki,
  exportStoreTlsFlags,
  exportStoreEtcdCommand,
  ExportStorePkiFiles,
  EXPORT_STORE_PORT,
  EXPORT_STORE_PEER_PORT,
  EXPORT_STORE_WRITER,
  type ExportStorePki,
  type ExportStorePkiOptions,
} from './export-store-pki.js';
export { readClusterStatus, renderClusterStatus, formatAge, formatTable, type ClusterStatus, type LinkStatusView, type ReportedLinkView } from './cluster-status.js';
export { decodeReportedLinks, ReportRefusals, type ReportRefusal } from './reported-links.js';
export { connectFederationStore, connectPeerStore, peerConnection } from './etcd-connection.js';
export { ensureExportStoreAuth } from './export-store.js';
export { probeExportStore, type ExportStoreProbeOptions, type ExportStoreProbeResult } from './export-store-probe.js';
export { PortConflictBoard, portsSignature, type PortConflict } from './port-conflicts.js';
export { FederationMetrics } from './metrics.js';
export { FederationError, FederationErrorCodes } from './errors.js';
