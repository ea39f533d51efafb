/**
 * The node side of the controller's gRPC API (api/*.proto), and the one loader of those
 * contracts that both ends use. See api-client/README.md.
 *
 * - {@link DiscoveryClient} / {@link RegistrationClient}: the discovery stream and endpoint
 *   registration, with reconnect + backoff — for sidecars and gateways.
 * - {@link SnapshotDecoder}: validates discovery snapshots, re-validating only what changed.
 * - {@link controllerChannel}: mTLS to the controller, checked by its SPIFFE ID.
 * - The loaded services and message types (protos.ts): the controller and the CA's
 *   signing service serve them; the clients here and `ca/certificate-client.ts` call them.
 */
export {
  DiscoveryClient,
  RegistrationClient,
  controllerCallError,
  type DiscoveryClientOptions,
  type DiscoveryHello,
  type EndpointRegistration,
  type RegistrationClientOptions,
} from './controller-client.js';
export { controllerChannel, spiffeIdOfCertificate, type ControllerConnection, type TlsIdentity } from './tls.js';
export { SnapshotDecoder, type DecodedSnapshot } from './snapshot-decoder.js';
export { ControllerError, ControllerErrorCodes } from './errors.js';
export {
  CertificateServiceClient,
  certificateServiceDefinition,
  CREATE_CERTIFICATE_PATH,
  DiscoveryClientConstructor,
  RegistrationClientConstructor,
  discoveryService,
  registrationService,
  preserializedResponse,
  type CreateCertificateRequest,
  type CreateCertificateResponse,
  type DeregisterRequest,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type HelloMessage,
  type LocalityMessage,
  type RegisterRequest,
  type RegisterResponse,
} from './protos.js';
