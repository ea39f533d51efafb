/**
 * The topology bench/mesh.ts and bench/grpc.ts measure, as files: one `echo` service
 * port, a server sidecar in west, a client sidecar in east whose one target is west's
 * gateway, the gateway's routes (echo.default → the server sidecar, echo-haproxy.default
 * → the HAProxy server side), and certificates from one root with an intermediate per
 * cluster — also for HAProxy as both sidecars.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createIntermediateCa, createRootCa, splitCertificates } from '../ca/index.js';
import { serviceSni } from '../mesh/index.js';

export const TD = 'causeway.internal';

export interface TwoClustersPorts {
  readonly app: number;
  readonly gateway: number;
  readonly serverInbound: number;
  readonly clientLocal: number;
  readonly dnsEast: number;
  readonly dnsWest: number;
  readonly haproxyInbound: number;
}

/**
 * Writes the sidecars' spec files (for bench/mesh-sidecar.mjs) and the gateway's routes
 * into `dir`; `port` is the echo service's port and `protocol` what it speaks.
 * `outboundRanges` keep the two sidecars (and other benchmarks' sidecars) apart.
 */
export async function writeTwoClusters(dir: string, port: { name: string; port: number; protocol: 'http' | 'grpc' }, ports: TwoClustersPorts, outboundRanges: { east: string; west: string }) {
  const rootCa = await createRootCa({ trustDomain: TD });
  const eastCa = await createIntermediateCa(rootCa, { cluster: 'east' });
  const westCa = await createIntermediateCa(rootCa, { cluster: 'west' });
  const echo = { name: 'echo', namespace: 'default', ports: [port], serviceAccounts: [`spiffe://${TD}/ns/default/sa/echo`], subsets: {} };
  const snapshot = (cluster: string, targets: unknown[]) => ({ schema: 1, version: '1', cluster, trustDomain: TD, trustBundle: [], services: [{ ...echo, targets }], authorization: [], traffic: [] });
  const sidecarSpec = async (name: string, cluster: 'east' | 'west', extra: Record<string, unknown>, snap: unknown) => {
    const cert = await (cluster === 'east' ? eastCa : westCa).issue({ spiffeId: `spiffe://${TD}/ns/default/sa/${name}` });
    const file = join(dir, `${name}.json`);
    const config = {
      cluster,
      locality: { region: cluster === 'east' ? 'eu' : 'us', zone: 'z1' },
      namespace: 'default',
      service: name,
      serviceAccount: name,
      controller: { address: '127.0.0.1:1' },
      advertiseAddress: '127.0.0.1',
      stateDir: join(dir, name),
      sidecar: { inboundHost: '127.0.0.1', accessLog: false, dns: { outside: 'refuse' }, outboundRange: outboundRanges[cluster] },
      ...extra,
    };
    writeFileSync(file, JSON.stringify({ config, keyPem: cert.privateKeyPem, chainPem: [...cert.certChain], trustBundlePem: splitCertificates(cert.trustBundlePem), snapshot: snap }));
    return file;
  };
  const serverFile = await sidecarSpec('echo', 'west', { ports: [{ ...port, targetPort: ports.app }], inboundPort: ports.serverInbound, dnsPort: ports.dnsWest }, snapshot('west', []));
  const gatewayTarget = { kind: 'gateway', cluster: 'west', address: '127.0.0.1', port: ports.gateway, locality: { region: 'us', zone: 'z1' }, priority: 2, weight: 1, labels: {}, healthy: true, stale: false };
  const clientFile = await sidecarSpec('load', 'east', { inboundPort: 0, dnsPort: ports.dnsEast, upstreams: [{ service: 'echo.default', port: port.port, localPort: ports.clientLocal }] }, snapshot('east', [gatewayTarget]));
  const routesFile = join(dir, 'routes.yaml');
  // echo-haproxy.default: the same app behind the HAProxy "server sidecar".
  writeFileSync(routesFile, `cluster: west\ntrustDomain: ${TD}\nroutes:\n  - service: echo.default\n    endpoints: [127.0.0.1:${ports.serverInbound}]\n  - service: echo-haproxy.default\n    endpoints: [127.0.0.1:${ports.haproxyInbound}]\n`);

  /** Certificates for HAProxy as both sidecars: the same kinds as the sidecars', from the same intermediates. */
  const haproxyFiles = async () => {
    const clientCert = await eastCa.issue({ spiffeId: `spiffe://${TD}/ns/default/sa/load-haproxy` });
    const sni = serviceSni({ port: port.port, subset: undefined, service: 'echo-haproxy', namespace: 'default', cluster: 'west', trustDomain: TD });
    // HAProxy checks a server's name against the SNI, by DNS SAN or CN, not by SPIFFE
    // URI: the CN carries the SNI so that the client side verifies whom it reached.
    const serverCert = await westCa.issue({ spiffeId: `spiffe://${TD}/ns/default/sa/echo-haproxy`, commonName: sni });
    const pem = (c: typeof clientCert, name: string) => {
      const file = join(dir, name);
      writeFileSync(file, [...c.certChain, c.privateKeyPem].join('\n'), { mode: 0o600 });
      return file;
    };
    const caFile = join(dir, 'haproxy-trust.pem');
    writeFileSync(caFile, clientCert.trustBundlePem);
    return { sni, clientPem: pem(clientCert, 'haproxy-client.pem'), serverPem: pem(serverCert, 'haproxy-server.pem'), caFile };
  };
  return { serverFile, clientFile, routesFile, haproxyFiles };
}
