import { fileURLToPath } from 'node:url';
import { loadPackageDefinition, type GrpcObject, type ServiceClientConstructor, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/** api/ca.proto, loaded at runtime: field names camelCase, int64 as number. */
const definition = loadSync('ca.proto', {
  includeDirs: [fileURLToPath(new URL('../api/', import.meta.url))],
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
});
const loaded = loadPackageDefinition(definition) as unknown as { causeway: { ca: { v1: GrpcObject } } };

export const CertificateServiceClient = loaded.causeway.ca.v1.CertificateService as ServiceClientConstructor;
export const certificateServiceDefinition: ServiceDefinition = CertificateServiceClient.service;
export const CREATE_CERTIFICATE_PATH = '/causeway.ca.v1.CertificateService/CreateCertificate';

export interface CreateCertificateRequest {
  csr: string;
  validitySeconds: number;
}

export interface CreateCertificateResponse {
  certChain: string[];
  trustBundle: string[];
}
