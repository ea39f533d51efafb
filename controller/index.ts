/**
 * The cluster controller: what other parts and operators may use.
 *
 * - {@link Controller}: run the control plane in-process (`causeway controller` does).
 *   Its node-side client (discovery, registration) is api-client/.
 * - {@link CatalogAdmin}: validated writes of services, exports and policies.
 */
export { Controller, type ControllerOptions, type HostedComponent } from './controller.js';
export { CatalogAdmin, POLICY_KIND_VALUES, PolicyManifestDocument, SERVICE_KINDS, ServiceManifestDocument, parseManifest, parseServiceRef, type ManifestDocument } from './catalog-admin.js';
export { connectControllerStore } from './etcd-connection.js';
export { ControllerError, ControllerErrorCodes, EtcdUnavailableError } from './errors.js';
export { callerSpiffeId } from './caller-identity.js';
export type { NodeStatus } from './discovery-service.js';
export type { HealthCheckSettings } from './health-checker.js';
export { WorkloadGroups, WorkloadError, WORKLOAD_GROUP_KIND, WorkloadGroupDocument, parseWorkloadGroupFile, workloadGroupIdentity, type AppliedWorkloadGroup, type WorkloadGroupHost } from './workload-groups.js';
export { writeWorkloadBundle, systemdUnit, installScript, BundleFiles, BundleDefaults, type WorkloadBundle, type WorkloadBundleOptions } from './workload-bundle.js';
