import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { Registry } from 'prom-client';
import {
  addCertificateService,
  createCertificateServiceCredentials,
  type CertificateServiceHandle,
  type CertificateServiceOptions,
  type IntermediateCa,
  type SigningServiceEndpoint,
  type SwappableServerCredentials,
} from '../../ca/index.js';
import { controllerIdentity } from '../../mesh/index.js';

export interface RunningSigningService {
  readonly endpoint: SigningServiceEndpoint;
  readonly handle: CertificateServiceHandle;
  readonly registry: Registry;
  readonly tls: SwappableServerCredentials;
  readonly port: number;
  readonly server: Server;
}

/** A real gRPC server on loopback hosting the signing service, as a controller would. */
export async function startSigningService(t: ExecutionContext, ca: IntermediateCa, options: Omit<CertificateServiceOptions, 'ca'> & { ca?: CertificateServiceOptions['ca'] } = {}): Promise<RunningSigningService> {
  const controller = await ca.issue({ spiffeId: controllerIdentity(ca.trustDomain) });
  const registry = new Registry();
  const server = new Server();
  const handle = addCertificateService(server, { ca, registry, ...options });
  const tls = createCertificateServiceCredentials({ privateKeyPem: controller.privateKeyPem, certChainPem: controller.certChainPem, trustBundlePem: ca.trustBundlePem });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', tls.credentials satisfies ServerCredentials, (error, bound) => (error ? reject(error) : resolve(bound))));
  t.teardown(() => server.forceShutdown());
  return { endpoint: { address: `127.0.0.1:${port}`, trustBundlePem: ca.trustBundlePem, controllerSpiffeId: controllerIdentity(ca.trustDomain) }, handle, registry, tls, port, server };
}

export async function counterValue(handle: CertificateServiceHandle, name: 'refusals' | 'issued', label: string): Promise<number> {
  const metric = await handle[name].get();
  return metric.values.find((v) => Object.values(v.labels).includes(label))?.value ?? 0;
}
