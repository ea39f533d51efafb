import { Writable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import test from 'ava';
import { runGateway } from '../../gateway/index.js';
import {
  ClusterInfo,
  Endpoint,
  EtcdKeys,
  ImportedService,
  ServiceSpec,
  createRootLogger,
  encodeCatalogValue,
  parseConfig,
} from '../../mesh/index.js';
import { Etcd3Store } from '../../store/index.js';
import { startEtcd, waitFor } from '../../testkit/index.js';
import { ECHO_SNI, TD, closed, makePki, startEchoServer, startGateway, echoRoutes } from './helpers.js';

const locality = { region: 'eu', zone: 'eu-a' };

test('routes from the etcd catalog: exports, endpoints, peers and controller, applied live without dropping connections', async (t) => {
  const pki = makePki([`controller.east.cw1.${TD}`]);
  t.teardown(() => pki.cleanup());
  const etcd = await startEtcd({ name: 'gw-etcd' });
  t.teardown(() => etcd.destroy());
  const client = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => client.close());
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const controller = await startEchoServer(pki);
  t.teardown(() => controller.close());
  const westEcho = await startEchoServer(pki);
  t.teardown(() => westEcho.close());
  const westGateway = await startGateway({ ...echoRoutes([westEcho.port]), cluster: 'west' });
  t.teardown(() => westGateway.gateway.close());

  const put = (key: string, schema: Parameters<typeof encodeCatalogValue>[0], value: unknown) => client.put(key, encodeCatalogValue(schema, key, value as never));
  const spiffe = `spiffe://${TD}/ns/default/sa/echo`;
  const service = (name: string, exported: boolean) => ({ schema: 1, name, namespace: 'default', ports: [{ name: 'tcp', port: 9080 }], serviceAccounts: [spiffe], exported });
  const endpoint = (id: string, port: number, health: 'healthy' | 'unhealthy') => ({
    schema: 1, id, service: 'echo', namespace: 'default', cluster: 'east', address: '127.0.0.1', inboundPort: port, locality, identity: spiffe, health,
  });
  await put(EtcdKeys.cluster, ClusterInfo, { schema: 1, name: 'east', locality, network: 'n1', trustDomain: TD, controllers: [{ address: '127.0.0.1', port: controller.port }] });
  await put(EtcdKeys.service('default', 'echo'), ServiceSpec, service('echo', true));
  await put(EtcdKeys.service('default', 'private'), ServiceSpec, service('private', false));
  await put(EtcdKeys.endpoint('default', 'echo', 'e1'), Endpoint, endpoint('e1', echo.port, 'healthy'));
  await put(EtcdKeys.importedService('west', 'default', 'echo'), ImportedService, {
    schema: 1, peer: 'west', service: service('echo', true), healthy: [], gateways: [{ address: '127.0.0.1', port: westGateway.port }],
    peerLocality: locality, peerNetwork: 'n2', exportedAt: new Date().toISOString(), peerRevision: '7',
  });
  await client.put(EtcdKeys.service('default', 'broken'), '{"schema": 1, "name": 42}');

  const lines: string[] = [];
  const logger = createRootLogger({ level: 'warn', destination: new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) }) });
  const config = parseConfig('cluster', {
    cluster: { name: 'east', locality, network: 'n1' },
    etcd: { endpoints: etcd.endpoints },
    gateway: { host: '127.0.0.1', port: 0 },
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
  });
  const running = await runGateway({ cluster: config, workers: 1, id: 'gw-east-1', logger });
  t.teardown(() => running.stop());

  const ready = await fetch(`http://127.0.0.1:${running.readyPort}/healthz/ready`);
  t.is(ready.status, 200);
  t.true(lines.some((line) => line.includes(EtcdKeys.service('default', 'broken')) && line.includes('invalid catalog value')), 'the bad value is logged with its key');
  const registered = JSON.parse((await client.get(EtcdKeys.gateway('gw-east-1')))?.value.toString() ?? '{}') as { port?: number; cluster?: string };
  t.deepEqual([registered.cluster, registered.port], ['east', running.port]);

  const bye = async (servername: string) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: running.port, servername, ca: pki.ca, cert: pki.client.cert, key: pki.client.key, checkServerIdentity: () => undefined });
    let text = '';
    socket.on('error', () => undefined);
    socket.on('secureConnect', () => socket.write('bye\n'));
    socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
    await closed(socket);
    return text;
  };
  t.is(await bye(ECHO_SNI), 'bye echo-client\n');
  t.is(await bye(`9080.all.private.default.east.cw1.${TD}`), '', 'unexported service refused');
  t.is(await bye(`controller.east.cw1.${TD}`), 'bye echo-client\n', 'controller from /causeway/v1/cluster');
  const westBefore = westEcho.connections();
  t.is(await bye(`9080.all.echo.default.west.cw1.${TD}`), 'bye echo-client\n', 'peer cluster through its gateway');
  t.is(westEcho.connections(), westBefore + 1);

  // An established connection survives catalog changes, even its endpoint turning unhealthy.
  const held = tlsConnect({ host: '127.0.0.1', port: running.port, servername: ECHO_SNI, ca: pki.ca, cert: pki.client.cert, key: pki.client.key, checkServerIdentity: () => undefined });
  held.on('error', () => undefined);
  await new Promise((resolve) => held.once('secureConnect', resolve));
  await put(EtcdKeys.endpoint('default', 'echo', 'e1'), Endpoint, endpoint('e1', echo.port, 'unhealthy'));
  await waitFor(async () => (await bye(ECHO_SNI)) === '', { what: 'unhealthy endpoint leaves the routes' });
  let echoed = '';
  held.on('data', (chunk: Buffer) => (echoed += chunk.toString()));
  held.write('still here\n');
  await waitFor(() => echoed === 'still here\n', { what: 'held connection still echoing' });
  await put(EtcdKeys.endpoint('default', 'echo', 'e2'), Endpoint, endpoint('e2', echo.port, 'healthy'));
  await waitFor(async () => (await bye(ECHO_SNI)) === 'bye echo-client\n', { what: 'new endpoint routed' });
  held.end();

  await running.stop();
  t.is((await client.get(EtcdKeys.gateway('gw-east-1')))?.value.toString() ?? null, null, 'registration revoked on stop');
});
