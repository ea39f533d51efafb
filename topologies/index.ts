/** Causeway's topologies: run docker-compose files without Docker, drive scenarios, demo app. */
export { loadComposeFile, parseCompose, shellWords, parseComposeDurationMs, SupportedKeys } from './runner/compose-file.js';
export type { ComposeProject, ServiceSpec, NetworkSpec, HealthcheckSpec, VolumeMount, DependencyCondition } from './runner/compose-file.js';
export { planAddresses } from './runner/address-plan.js';
export type { AddressPlan, NamespacePlan, NetworkPlan, InterfacePlan } from './runner/address-plan.js';
export { imageMappingFor, SupportedImages, CHECKOUT_ROOT } from './runner/image-map.js';
export { TopologyRun, cleanUpRunState, requireRoot } from './runner/topology-run.js';
export type { ServiceView, ServiceStatus, HealthStatus, UpOptions } from './runner/topology-run.js';
export { readRunState, stateDir, type RunState } from './runner/run-state.js';
export { listNamespaces, namespacePids, isAlive as isProcessAlive } from './runner/network-namespaces.js';
export { execIn, type ExecResult } from './runner/service-process.js';
export { resolveTopology, TOPOLOGIES_DIR } from './runner/topology-files.js';
export { loadScenarioFile, parseScenario, runScenario, formatScenarioReport, unmetRequirements } from './runner/scenario.js';
export type { Scenario, ScenarioStep, ScenarioReport, StepResult } from './runner/scenario.js';
export { TopologyErrorCodes, TopologyFileError, TopologyNeedsRootError, TopologyRuntimeError } from './runner/errors.js';
export { startEchoServer, peerIdentityOf, PEER_IDENTITY_HEADER, PEER_CLUSTER_HEADER, type EchoOptions, type EchoReply } from './demo-app/echo-server.js';
export { runLoad, type LoadOptions, type LoadReport } from './demo-app/load-client.js';
