import { connect as tlsConnect } from 'node:tls';
import test from 'ava';
import { exportStoreSni } from '../../mesh/index.js';
import { TD, closed, echoRoutes, makePki, metric, startEchoServer, startGateway, type Pki } from './helpers.js';

let pki: Pki;
test.before(() => {
  pki = makePki([`controller.east.cw1.${TD}`]);
});
test.after.always(() => pki?.cleanup());

test('an export-store SNI parses, but with no export store in the routes it is refused as unknown-sni and nothing reaches a backend', async (t) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const { gateway, port } = await startGateway(echoRoutes([echo.port], { controllers: [{ address: '127.0.0.1', port: echo.port }] }));
  t.teardown(() => gateway.close());
  const socket = tlsConnect({ host: '127.0.0.1', port, servername: exportStoreSni('east', TD), ca: pki.ca, cert: pki.client.cert, key: pki.client.key, checkServerIdentity: () => undefined });
  let secured = false;
  socket.on('error', () => undefined);
  socket.on('secureConnect', () => (secured = true));
  await closed(socket);
  t.false(secured);
  t.is(echo.connections(), 0);
  t.is(await metric(gateway, 'causeway_gateway_refusals_total', { reason: 'unknown-sni' }), 1);
  t.is(await metric(gateway, 'causeway_gateway_refusals_total', { reason: 'invalid-sni' }), 0, 'the name itself is valid');
});
