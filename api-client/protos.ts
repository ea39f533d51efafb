import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/**
 * The gRPC contracts of api/*.proto, loaded once at runtime: the one source of truth for
 * both ends (the controller and its signing service serve them, sidecars and gateways
 * call them). Field names are camelCase; 64-bit integers arrive as numbers. This file
 * imports nothing of Causeway's, so the server side may import it without the client.
 */
// One folder below the checkout root, like a bundle in dist/ (scripts/bundles.mjs): the
// same URL finds api/ from the sources and from a bundle.
const API_DIR = fileURLToPath(new URL('../api/', import.meta.url));

const definition = loadSync(['registry.proto', 'discovery.proto', 'ca.proto'], {
  includeDirs: [API_DIR],
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const loaded = loadPackageDefinition(definition) as unknown as {
  causeway: { registry: { v1: GrpcObject }; discovery: { v1: GrpcObject }; ca: { v1: GrpcObject } };
};

export const RegistrationClientConstructor = loaded.causeway.registry.v1.Registration as ServiceClientConstructor;
export const DiscoveryClientConstructor = loaded.causeway.discovery.v1.Discovery as ServiceClientConstructor;
export const registrationService: ServiceDefinition = RegistrationClientConstructor.service;
export const CertificateServiceClient = loaded.causeway.ca.v1.CertificateService as ServiceClientConstructor;
export const certificateServiceDefinition: ServiceDefinition = CertificateServiceClient.service;
export const CREATE_CERTIFICATE_PATH = '/causeway.ca.v1.CertificateService/CreateCertificate';

const PRESERIALIZED = Symbol('causeway.preserialized');
const streamMethod = DiscoveryClientConstructor.service.Stream!;

/**
 * Wraps a DiscoveryResponse whose protobuf encoding is computed once: a snapshot version
 * goes to every node of its view, and encoding a large message per node would copy it
 * once per node.
 */
export function preserializedResponse(message: DiscoveryResponse): DiscoveryResponse {
  return Object.assign({ ...message }, { [PRESERIALIZED]: streamMethod.responseSerialize(message) });
}

/** The Discovery service definition, serialising {@link preserializedResponse} messages as they are. */
export const discoveryService: ServiceDefinition = {
  ...DiscoveryClientConstructor.service,
  Stream: {
    ...streamMethod,
    responseSerialize: (value: DiscoveryResponse & { [PRESERIALIZED]?: Buffer }) => value[PRESERIALIZED] ?? streamMethod.responseSerialize(value),
  },
};

export interface LocalityMessage {
  region: string;
  zone: string;
}

export interface RegisterRequest {
  service: string;
  namespace: string;
  endpointId: string;
  address: string;
  inboundPort: number;
  labels: Record<string, string>;
  locality: LocalityMessage | null;
  health: string;
  /** 0 (the proto default) when the sidecar serves no /metrics. */
  metricsPort?: number;
}
export interface RegisterResponse {
  endpointId: string;
  leaseTtlSeconds: number;
}
export interface HeartbeatRequest {
  service: string;
  namespace: string;
  endpointId: string;
  health: string;
}
export interface HeartbeatResponse {
  leaseTtlSeconds: number;
}
export interface DeregisterRequest {
  service: string;
  namespace: string;
  endpointId: string;
}

export interface HelloMessage {
  nodeKind: string;
  nodeId: string;
  cluster: string;
  region: string;
  zone: string;
  lastVersion: string;
  acceptEncodings: string[];
}
export interface DiscoveryRequest {
  hello?: HelloMessage | null;
  ack?: { version: string } | null;
  nack?: { version: string; reason: string } | null;
  message?: 'hello' | 'ack' | 'nack';
}
export interface DiscoveryResponse {
  version: string;
  snapshot: Buffer;
  encoding: string;
}

export interface CreateCertificateRequest {
  csr: string;
  validitySeconds: number;
}
export interface CreateCertificateResponse {
  certChain: string[];
  trustBundle: string[];
}
