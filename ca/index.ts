/**
 * The shared-root CA of a Causeway mesh: an offline root, one intermediate per cluster,
 * SPIFFE X.509-SVID workload certificates, and trust bundles.
 *
 * Quick use (tooling, tests, static hosts):
 * ```ts
 * const root = await createRootCa({ trustDomain: 'causeway.internal' });
 * const east = await createIntermediateCa(root, { cluster: 'east' });
 * const svid = await east.issue({ spiffeId: 'spiffe://causeway.internal/ns/default/sa/reviews' });
 * tls.createServer({ key: svid.privateKeyPem, cert: svid.certChainPem, ca: svid.trustBundlePem, requestCert: true });
 * ```
 * Directories: `writeRootCa` / `loadRootCa` (root-key.pem 0600, root-cert.pem,
 * trust-bundle.pem), `writeIntermediateCa` / `loadIntermediateCa` (ca-key.pem 0600,
 * ca-cert.pem, cert-chain.pem, trust-bundle.pem — a controller's `caDir`),
 * `writeWorkloadCertificate` (key.pem 0600, cert.pem, cert-chain.pem, trust-bundle.pem).
 *
 * How the controller hosts the signing service (`causeway.ca.v1.CertificateService`) on
 * its own gRPC server:
 * ```ts
 * const ca = await loadIntermediateCa(config.controller.caDir);
 * const own = await ca.issue({ spiffeId: controllerIdentity(ca.trustDomain) });
 * const tls = createCertificateServiceCredentials({ privateKeyPem: own.privateKeyPem, certChainPem: own.certChainPem, trustBundlePem: ca.trustBundlePem });
 * const server = new grpc.Server();
 * addCertificateService(server, { ca, registry });        // + the controller's own services
 * server.bindAsync(`${host}:${grpcPort}`, tls.credentials, done);
 * tls.update({...});                                      // on renewal of `own` or a bundle change
 * ```
 * The credentials REQUEST but do not REQUIRE a client certificate (first-time callers
 * have only a join token). In any handler, `call.getAuthContext().sslPeerCertificate` is
 * the caller's certificate only when it verified against the trust bundle (grpc-js
 * 1.14.7 checks `socket.authorized`); `spiffeIdFromSubjectAltName(cert.subjectaltname)`
 * gives its SPIFFE ID. Workloads use {@link WorkloadCertificateClient}. See ca/README.md.
 */
export { CaError, CaErrorCodes, type CaErrorCode } from './errors.js';
export { KeyTypes, DEFAULT_KEY_TYPE, parseKeyType, generatePrivateKey, keyTypeOf, describeKey, privateKeyPem, loadPrivateKey, type KeyType } from './keys.js';
export {
  CaFiles,
  Defaults as CaDefaults,
  DEFAULT_ALLOWED_KEY_TYPES,
  createRootCa,
  createIntermediateCa,
  writeRootCa,
  loadRootCa,
  writeIntermediateCa,
  loadIntermediateCa,
  writeWorkloadCertificate,
  writeWorkloadPkcs12,
  type RootCa,
  type RootCaFiles,
  type IntermediateCa,
  type IntermediateCaFiles,
  type IssueOptions,
  type SignCsrOptions,
  type SignedCertificate,
  type WorkloadCertificate,
  type WorkloadCertificateFiles,
  type CredentialFiles,
} from './authority.js';
export { issueClientCertificate, MAX_CLIENT_CERTIFICATE_DAYS, type ClientCertificate, type ClientCertificateOptions } from './client-certificate.js';
export { createInfrastructureCa, issueInfrastructureCertificate, MAX_INFRASTRUCTURE_CA_DAYS, type InfrastructureKeyPair, type InfrastructureLeafOptions } from './infrastructure-certificates.js';
export { createCsr, parseAndVerifyCsr, MAX_CSR_PEM_BYTES, type VerifiedCsr } from './csr.js';
export { buildTrustBundle, trustBundleCertificates, spiffeIdOf, spiffeIdFromSubjectAltName, verifyCertificateChain, verifyCaChain, trustDomainOfCa, type ChainVerification } from './trust-bundle.js';
export { splitCertificates } from './pem.js';
export { encodePkcs12, generatePkcs12Password, type Pkcs12Input } from './pkcs12.js';
export { mintJoinToken, verifyJoinToken, joinTokenAudience, DEFAULT_JOIN_TOKEN_TTL_SECONDS, MAX_JOIN_TOKEN_TTL_SECONDS, type JoinTokenClaims } from './join-token.js';
export {
  addCertificateService,
  certificateRefusalInterceptor,
  createCertificateServiceCredentials,
  RefusalReasons,
  ERROR_CODE_METADATA_KEY,
  type CertificateServiceOptions,
  type CertificateServiceHandle,
  type ServerTlsMaterial,
  type SwappableServerCredentials,
} from './certificate-service.js';
export {
  WorkloadCertificateClient,
  certificateIssuedAt,
  requestCertificate,
  signingServiceChannelCredentials,
  type SigningServiceEndpoint,
  type SigningCredentials,
  type CurrentCertificate,
  type WorkloadCertificateClientOptions,
  type WorkloadCertificateClientEvents,
} from './certificate-client.js';
export { inspectCertificates, formatInspection, summarizeCertificate, type InspectionReport, type CertificateSummary } from './inspect.js';
