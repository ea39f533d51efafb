/**
 * The sidecar (docs/architecture.md "The parts and the path of one request", steps 1, 2 and 4):
 * loopback listeners and DNS for the app, mTLS to targets chosen by locality and health,
 * the inbound mTLS listener with authorization, certificates and the controller hookup.
 */
export { Sidecar, type SidecarOptions, type SidecarPart } from './sidecar.js';
export { SidecarConfig, SidecarTuning, loadSidecarConfig, parseSidecarConfig, type SidecarConfigInput } from './config.js';
export { StaticSnapshotSource, parseSnapshot, type SnapshotSource } from './snapshot-source.js';
export { WorkloadIdentity, type WorkloadCertificate } from './workload-identity.js';
export { ProxyError, ProxyErrorCodes, SecureNamingError, UpstreamConnectError, type ProxyErrorCode } from './errors.js';
export { PEER_IDENTITY_HEADER, PEER_CLUSTER_HEADER, APP_UNAVAILABLE, APP_RESET } from './wire.js';
export { authorize, type Caller, type AuthorizationDecision } from './authorization.js';
export { encodeProxyV2, decodeProxyV2, PP2_TYPE_CAUSEWAY_SPIFFE_ID, PP2_TYPE_CAUSEWAY_CLUSTER } from './proxy-protocol.js';
export { pickSubset, planTargets, OutlierDetector, targetKey } from './target-balancer.js';
export { spiffeIdOf, clusterOfIssuer } from './peer-certificate.js';
export { sniFor } from './upstream-connector.js';
export { runSidecar, type RunSidecarOptions } from './run.js';
export { DiscoverySnapshotSource, certificatePart, registrationPart, probeApp, workloadSpiffeId, defaultEndpointId, controllerConnection } from './control-plane.js';
