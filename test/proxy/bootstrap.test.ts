import test from 'ava';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { mintJoinToken } from '../../ca/index.js';
import { CatalogAdmin, Controller } from '../../controller/index.js';
import { Etcd3Store } from '../../store/index.js';
import { parseConfig } from '../../mesh/index.js';
import { parseSidecarConfig, runSidecar, type certificatePart, type Sidecar } from '../../proxy/index.js';
import { startEtcd } from '../../testkit/etcd.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { spiffe, startEchoApp } from './helpers/mesh.js'
import { waitFor } from '../../testkit/ports.js';

function ready(sidecar: Sidecar): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: sidecar.observability!.readyPort, path: '/healthz/ready', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

test('join token → first certificate from the controller CA; persisted certificate and snapshot survive a restart without token or controller; renewal hot-swaps without dropping connections', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-proxy-boot-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const pki = await createMeshPki(join(dir, 'pki'));
  const east = await pki.cluster('east');
  const clusterConfig = parseConfig('cluster', {
    cluster: { name: 'east', locality: { region: 'eu', zone: 'eu-1' } },
    etcd: { endpoints: etcd.endpoints },
    controller: { host: '127.0.0.1', grpcPort: 0, endpointLeaseTtlSeconds: 3, pushDebounceMs: 20 },
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
  });
  let controller = new Controller({ config: clusterConfig, intermediate: east.ca, observability: false });
  await controller.start();
  t.teardown(() => controller.stop());
  const store = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => store.close());
  await new CatalogAdmin(store).applyService({ name: 'reviews', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: [spiffe('default', 'reviews')] });
  const app = await startEchoApp('reviews');
  t.teardown(() => app.close());

  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, mintJoinToken(east.ca, { spiffeId: spiffe('default', 'reviews'), ttlSeconds: 600 }), { mode: 0o600 });
  const grpcPort = controller.grpcPort;
  const config = parseSidecarConfig({
    cluster: 'east',
    locality: { region: 'eu', zone: 'eu-1' },
    namespace: 'default',
    service: 'reviews',
    serviceAccount: 'reviews',
    ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }],
    controller: { address: `127.0.0.1:${grpcPort}` },
    advertiseAddress: '127.0.0.1',
    inboundPort: 0,
    dnsPort: 0,
    stateDir: join(dir, 'state'),
    joinTokenFile: tokenFile,
    trustBundleFile: pki.trustBundleFile,
    probe: { tcp: { port: app.port } },
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
    sidecar: { inboundHost: '127.0.0.1', outboundRange: '127.200.1.0/24', dns: { outside: 'refuse' } },
  });
  let sidecar = await runSidecar(config, { endpointId: 'reviews-boot' });
  t.teardown(() => sidecar.close());
  t.is(sidecar.identity.spiffeId, spiffe('default', 'reviews'));
  await waitFor(() => sidecar.snapshot?.services.some((s) => s.name === 'reviews' && s.targets.some((x) => x.endpointId === 'reviews-boot' && x.healthy)) ?? false, { what: 'own endpoint registered and healthy', timeoutMs: 20_000 });
  t.is(await ready(sidecar), 200);
  t.is(statSync(join(config.stateDir, 'key.pem')).mode & 0o777, 0o600);

  // Renewal through the CA (mTLS with the current certificate): an open connection stays up, new handshakes get the new certificate.
  const first = sidecar.identity.certificate!.chainPem[0]!;
  const open = tlsConnect({ port: sidecar.inboundPort, host: '127.0.0.1', servername: '9080.all.reviews.default.east.cw1.causeway.internal', secureContext: sidecar.identity.secureContext, checkServerIdentity: () => undefined });
  await new Promise((resolve, reject) => open.once('secureConnect', resolve).once('error', reject));
  const renewed = new Promise((resolve) => sidecar.identity.once('change', resolve));
  const certificates = sidecar.part('certificates') as ReturnType<typeof certificatePart>;
  await certificates.client()!.renewNow();
  await renewed;
  t.not(sidecar.identity.certificate!.chainPem[0], first);
  t.false(open.destroyed);
  open.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
  const answer = await new Promise<string>((resolve) => open.once('data', (d: Buffer) => resolve(d.toString())));
  t.regex(answer, /^HTTP\/1.1 200/);
  open.destroy();
  // After the renewal the discovery stream and registration run on new channels: the endpoint outlives a lease TTL.
  await new Promise((r) => setTimeout(r, 3500));
  await waitFor(() => sidecar.snapshot?.services.some((s) => s.targets.some((x) => x.endpointId === 'reviews-boot' && x.healthy)) ?? false, { what: 'endpoint still registered after renewal', timeoutMs: 20_000 });

  // Restart with no token and the controller down: the saved certificate and snapshot serve.
  await sidecar.close();
  rmSync(tokenFile);
  await controller.stop();
  sidecar = await runSidecar(config, { endpointId: 'reviews-boot' });
  t.is(sidecar.identity.spiffeId, spiffe('default', 'reviews'));
  t.true(existsSync(join(config.stateDir, 'last-snapshot.json')));
  t.is(await ready(sidecar), 200);
  t.truthy(sidecar.outbound.lookup('default', 'reviews'));
  controller = new Controller({ config: parseConfig('cluster', { ...clusterConfig, controller: { ...clusterConfig.controller, grpcPort } }), intermediate: east.ca, observability: false });
  await controller.start();
});
