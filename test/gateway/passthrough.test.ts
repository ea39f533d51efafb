import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect as tcpConnect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import test, { type ExecutionContext } from 'ava';
import { ClientHelloReader, parseRoutesText } from '../../gateway/index.js';
import { createMeshPki } from '../../testkit/mesh-pki.js';
import { freePort, waitFor } from '../../testkit/index.js';
import { ECHO_SNI, TD, closed, echoRoutes, fragmentRecords, makePki, metric, sendByteByByte, startEchoServer, startGateway, startHelloCapture, startRecorder, type Pki } from './helpers.js';

let pki: Pki;
test.before(() => {
  pki = makePki([`controller.east.cw1.${TD}`]);
});
test.after.always(() => pki?.cleanup());

type StartGateway = typeof startGateway;
/** Every behaviour holds for both relays: libuv handles (the default) and net.Socket streams. */
function relayTest(title: string, body: (t: ExecutionContext, start: StartGateway) => Promise<void>): void {
  for (const relay of ['handles', 'sockets'] as const) {
    test(`${title} (${relay} relay)`, (t) => body(t, (routes, options = {}) => startGateway(routes, { relay, ...options })));
  }
}

function tlsClient(port: number, servername: string | undefined, options: { cert?: boolean } = {}): TLSSocket {
  const socket = tlsConnect({
    host: '127.0.0.1',
    port,
    ...(servername === undefined ? {} : { servername }),
    ca: pki.ca,
    ...(options.cert === false ? {} : { cert: pki.client.cert, key: pki.client.key }),
    checkServerIdentity: () => undefined,
  });
  socket.on('error', () => undefined);
  socket.on('end', () => socket.end());
  return socket;
}

/** Sends `bye` over a fresh TLS connection through the gateway and returns what came back. */
async function bye(port: number, servername: string): Promise<string> {
  const socket = tlsClient(port, servername);
  let text = '';
  socket.on('secureConnect', () => socket.write('bye\n'));
  socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
  await closed(socket);
  return text;
}

function run(command: string, args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { timeout: 15_000 }, (error, stdout, stderr) => resolve({ code: error ? Number(error.code ?? 1) : 0, stdout, stderr }));
    child.stdin?.end(input);
  });
}

relayTest('TLS is not terminated: each side sees the other\'s SPIFFE certificate and bytes pass unchanged both ways, with half-close', async (t, startGateway) => {
  const dir = await mkdtemp(join(tmpdir(), 'cw-gw-mesh-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const mesh = await createMeshPki(dir);
  const serverId = await mesh.workload('east', 'default/echo');
  const clientId = await mesh.workload('west', 'default/caller');
  const upstreamBytes = randomBytes(1024 * 1024);
  const downstreamBytes = randomBytes(1024 * 1024 + 17);
  let seenByServer: string | undefined;
  const serverReceived: Buffer[] = [];
  const server = createTlsServer({ ...serverId.tls, requestCert: true, rejectUnauthorized: true, allowHalfOpen: true }, (socket) => {
    seenByServer = socket.getPeerCertificate().subjectaltname;
    socket.on('data', (chunk: Buffer) => serverReceived.push(chunk));
    // Answer only after the client half-closed: the gateway must keep the other direction open.
    socket.on('end', () => socket.end(downstreamBytes));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const { gateway, port } = await startGateway(echoRoutes([(server.address() as AddressInfo).port]));
  t.teardown(() => gateway.close());

  const socket = tlsConnect({ host: '127.0.0.1', port, servername: ECHO_SNI, ...clientId.tls, checkServerIdentity: () => undefined });
  const clientReceived: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => clientReceived.push(chunk));
  await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
  t.true(socket.authorized, 'the client verified the server chain against the mesh root');
  t.is(socket.getPeerCertificate().subjectaltname, `URI:${serverId.spiffeId}`);
  socket.end(upstreamBytes);
  await closed(socket);
  t.is(seenByServer, `URI:${clientId.spiffeId}`);
  t.true(Buffer.concat(serverReceived).equals(upstreamBytes), 'client → server bytes unchanged');
  t.true(Buffer.concat(clientReceived).equals(downstreamBytes), 'server → client bytes unchanged after the client half-closed');
  await waitFor(() => gateway.activeConnections === 0, { what: 'connection finished' });
  t.is(await metric(gateway, 'causeway_gateway_connections_total', { route: 'echo.default', result: 'ok' }), 1);
  t.true((await metric(gateway, 'causeway_gateway_bytes_total', { direction: 'upstream' })) > upstreamBytes.length);
  t.true((await metric(gateway, 'causeway_gateway_bytes_total', { direction: 'downstream' })) > downstreamBytes.length);
});

relayTest('regression: an upper- or mixed-case SNI is routed like its lower-case form — service SNIs and exact sni: routes of a routes file — not refused as invalid-sni', async (t, startGateway) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  // The routes file spells the exact route in mixed case too: it is lower-cased at load.
  const routes = parseRoutesText(
    [`cluster: east`, `trustDomain: ${TD}`, 'routes:', '  - service: echo.default', `    endpoints: [127.0.0.1:${echo.port}]`, '  - sni: Legacy.Example.Internal', `    targets: [127.0.0.1:${echo.port}]`].join('\n'),
    'routes.yaml',
  );
  const { gateway, port } = await startGateway(routes);
  t.teardown(() => gateway.close());
  const mixedService = '9080.ALL.Echo.Default.EAST.cw1.Causeway.INTERNAL';
  // The client really sends the name as spelled (Node does not lower-case it).
  const capture = await startHelloCapture();
  t.teardown(() => capture.close());
  tlsClient(capture.port, 'LEGACY.example.internal');
  t.true((await capture.next()).includes(Buffer.from('LEGACY.example.internal')));

  t.is(await bye(port, mixedService), 'bye echo-client\n');
  t.is(await bye(port, 'LEGACY.example.internal'), 'bye echo-client\n');
  t.is(await bye(port, 'legacy.example.internal'), 'bye echo-client\n');
  await waitFor(() => gateway.activeConnections === 0, { what: 'connections finished' });
  t.is(await metric(gateway, 'causeway_gateway_connections_total', { route: 'echo.default', result: 'ok' }), 1);
  // One route, one label: the exact route is named in lower case however it was written or sent.
  t.is(await metric(gateway, 'causeway_gateway_connections_total', { route: 'legacy.example.internal', result: 'ok' }), 2);
  t.is(await metric(gateway, 'causeway_gateway_refusals_total', { reason: 'invalid-sni' }), 0);
});

relayTest('hellos from openssl s_client (TLS 1.2 and 1.3), curl, Python ssl and Node tls are routed to the real server', async (t, startGateway) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const { gateway, port } = await startGateway(echoRoutes([echo.port]));
  t.teardown(() => gateway.close());
  const tlsFiles = ['-CAfile', pki.pki.caCertFile, '-cert', pki.client.certFile, '-key', pki.client.keyFile];
  for (const version of ['-tls1_2', '-tls1_3']) {
    const result = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', ECHO_SNI, version, '-verify_hostname', ECHO_SNI, '-verify_return_error', '-quiet', ...tlsFiles], 'bye\n');
    t.regex(result.stdout, /bye echo-client/, `openssl ${version}: ${result.stderr}`);
  }
  const curl = await run('curl', ['-sS', '--connect-to', `${ECHO_SNI}:443:127.0.0.1:${port}`, '--cacert', pki.pki.caCertFile, '--cert', pki.client.certFile, '--key', pki.client.keyFile, `https://${ECHO_SNI}/`]);
  t.is(curl.stdout, 'hello echo-client\n', curl.stderr);
  const python = await run('python3', [
    '-c',
    [
      'import socket, ssl, sys',
      `ctx = ssl.create_default_context(cafile="${pki.pki.caCertFile}")`,
      `ctx.load_cert_chain("${pki.client.certFile}", "${pki.client.keyFile}")`,
      `s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", ${port})), server_hostname="${ECHO_SNI}")`,
      's.sendall(b"bye\\n")',
      'data = b""',
      'while True:',
      '  chunk = s.recv(4096)',
      '  if not chunk: break',
      '  data += chunk',
      'sys.stdout.write(data.decode())',
    ].join('\n'),
  ]);
  t.is(python.stdout, 'bye echo-client\n', python.stderr);
  t.is(await bye(port, ECHO_SNI), 'bye echo-client\n');
  await waitFor(() => gateway.activeConnections === 0, { what: 'connections finished' });
  t.is(await metric(gateway, 'causeway_gateway_connections_total', { route: 'echo.default', result: 'ok' }), 5);
});

relayTest('a hello cut into 1-byte records and sent byte by byte is routed, and the upstream receives exactly those bytes', async (t, startGateway) => {
  const recorder = await startRecorder();
  t.teardown(() => recorder.close());
  // Generous inspect timeout: a loaded machine may take seconds to push thousands of 1-byte segments.
  // Same for the connect to the recorder: the test process runs the gateway and the byte-by-byte
  // sender on one event loop, and a 2 s connect timeout once fired in a full CI run.
  const { gateway, port } = await startGateway(echoRoutes([recorder.port]), { inspectTimeoutMs: 120_000, connectTimeoutMs: 60_000 });
  t.teardown(() => gateway.close());
  // Capture a real hello from Node's TLS client, then fragment it.
  const capture = await new Promise<Buffer>((resolve) => {
    const client = tlsClient(recorder.port, ECHO_SNI);
    void waitFor(() => recorder.received()[0]?.length && new ClientHelloReader().push(recorder.received()[0]!) ? recorder.received()[0] : undefined).then((hello) => {
      client.destroy();
      resolve(Buffer.from(hello));
    });
  });
  const wire = fragmentRecords(capture, 1);
  const socket = await sendByteByByte(port, wire);
  t.teardown(() => socket.destroy());
  const received = await waitFor(() => (recorder.received()[1]?.length === wire.length ? recorder.received()[1] : undefined), { what: 'replayed bytes', timeoutMs: 100_000 }).catch(async (error: Error) => {
    // Say what happened instead of only that it timed out.
    const refused = await metric(gateway, 'causeway_gateway_connections_total', {});
    throw new Error(`${error.message}: recorder connections got ${JSON.stringify(recorder.received().map((b) => b.length))} bytes (want ${wire.length} on the second); client socket destroyed: ${socket.destroyed}; gateway connections_total ${refused}`);
  });
  t.true(received.equals(wire));
});

relayTest('refusals are closed and counted by reason: unknown SNI, invalid SNI, unexported service, no SNI, not TLS', async (t, startGateway) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const routes = echoRoutes([echo.port]);
  const { gateway, port } = await startGateway(
    { ...routes, services: [...routes.services!, { namespace: 'default', name: 'private', exported: false, endpoints: [{ address: '127.0.0.1', port: echo.port }] }] },
  );
  t.teardown(() => gateway.close());
  const refusedTls = async (servername: string | undefined) => {
    const socket = tlsClient(port, servername);
    let secured = false;
    socket.on('secureConnect', () => (secured = true));
    await closed(socket);
    return secured;
  };
  t.false(await refusedTls(`9080.all.echo.default.mars.cw1.${TD}`), 'unknown cluster');
  t.false(await refusedTls(`9080.all.nothing.default.east.cw1.${TD}`), 'unknown service');
  t.false(await refusedTls('www.example.com'), 'not a mesh name');
  t.false(await refusedTls(`9080.all.private.default.east.cw1.${TD}`), 'not exported');
  t.false(await refusedTls(undefined), 'no SNI (Node sends none to an IP address)');
  const http = tcpConnect({ host: '127.0.0.1', port });
  http.on('error', () => undefined);
  http.write('GET / HTTP/1.1\r\nHost: example\r\n\r\n');
  await closed(http);
  t.is(echo.connections(), 0, 'nothing reached the server');
  for (const reason of ['unknown-sni', 'unknown-service', 'invalid-sni', 'not-exported', 'no-sni', 'not-tls']) {
    t.is(await metric(gateway, 'causeway_gateway_refusals_total', { reason }), 1, reason);
  }
  t.is(await metric(gateway, 'causeway_gateway_connections_total', { result: 'refused' }), 6);
  t.is(await bye(port, ECHO_SNI), 'bye echo-client\n', 'the gateway still serves');
});

relayTest('slowloris: a client that never finishes its hello is closed at the inspect timeout, counted', async (t, startGateway) => {
  const { gateway, port } = await startGateway(echoRoutes([await freePort()]), { inspectTimeoutMs: 200 });
  t.teardown(() => gateway.close());
  const slow = tcpConnect({ host: '127.0.0.1', port });
  slow.on('error', () => undefined);
  slow.write(Buffer.from([0x16, 0x03, 0x01]));
  await closed(slow);
  t.is(await metric(gateway, 'causeway_gateway_refusals_total', { reason: 'inspect-timeout' }), 1);
});

relayTest('an upstream that refuses the connection is skipped: the next endpoint takes it', async (t, startGateway) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const dead = await freePort();
  const { gateway, port } = await startGateway(echoRoutes([dead, echo.port]));
  t.teardown(() => gateway.close());
  for (let i = 0; i < 4; i++) t.is(await bye(port, ECHO_SNI), 'bye echo-client\n');
  t.true((await metric(gateway, 'causeway_gateway_upstream_connect_failures_total')) >= 2);
  t.is(await metric(gateway, 'causeway_gateway_connections_total', { route: 'echo.default', result: 'upstream-failed' }), 0);
});

relayTest('when every endpoint fails the connection closes, counted as upstream-failed', async (t, startGateway) => {
  const { gateway, port } = await startGateway(echoRoutes([await freePort(), await freePort()]));
  t.teardown(() => gateway.close());
  t.is(await bye(port, ECHO_SNI), '');
  await waitFor(() => gateway.activeConnections === 0);
  t.is(await metric(gateway, 'causeway_gateway_connections_total', { route: 'echo.default', result: 'upstream-failed' }), 1);
});

relayTest('a new route table does not drop established connections', async (t, startGateway) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const { gateway, port } = await startGateway(echoRoutes([echo.port]));
  t.teardown(() => gateway.close());
  const socket = tlsClient(port, ECHO_SNI);
  await new Promise((resolve) => socket.once('secureConnect', resolve));
  gateway.setRoutes({ cluster: 'east', trustDomain: TD, services: [] });
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString()));
  socket.write('still here\n');
  await waitFor(() => text === 'still here\n', { what: 'echo over the old route' });
  t.is(await bye(port, ECHO_SNI), '', 'new connections use the new table');
  socket.write('bye\n');
  await closed(socket);
  t.is(text, 'still here\nbye echo-client\n');
});

relayTest('an SNI naming another cluster is passed to that cluster\'s gateway, which routes it (chained passthrough)', async (t, startGateway) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const east = await startGateway(echoRoutes([echo.port]));
  t.teardown(() => east.gateway.close());
  const west = await startGateway({ cluster: 'west', trustDomain: TD, peerClusters: [{ name: 'east', gateways: [{ address: '127.0.0.1', port: east.port }] }] });
  t.teardown(() => west.gateway.close());
  t.is(await bye(west.port, ECHO_SNI), 'bye echo-client\n');
  await waitFor(() => west.gateway.activeConnections === 0);
  t.is(await metric(west.gateway, 'causeway_gateway_connections_total', { route: 'cluster/east', result: 'ok' }), 1);
});

relayTest('the controller SNI reaches the controller', async (t, startGateway) => {
  const controller = await startEchoServer(pki);
  t.teardown(() => controller.close());
  const { gateway, port } = await startGateway(echoRoutes([], { controllers: [{ address: '127.0.0.1', port: controller.port }] }));
  t.teardown(() => gateway.close());
  t.is(await bye(port, `controller.east.cw1.${TD}`), 'bye echo-client\n');
  t.is(await bye(port, `controller.south.cw1.${TD}`), '', 'another cluster\'s controller is not ours to reach');
});

relayTest('least-connections sends new connections to the endpoint with fewer open ones', async (t, startGateway) => {
  const a = await startEchoServer(pki);
  const b = await startEchoServer(pki);
  t.teardown(() => a.close());
  t.teardown(() => b.close());
  const { gateway, port } = await startGateway(echoRoutes([a.port, b.port]), { balancer: 'least-connections' });
  t.teardown(() => gateway.close());
  const held = [tlsClient(port, ECHO_SNI), tlsClient(port, ECHO_SNI)];
  for (const s of held) await new Promise((resolve) => s.once('secureConnect', resolve));
  t.teardown(() => held.forEach((s) => s.destroy()));
  t.is(a.connections() + b.connections(), 2);
  t.is(a.connections(), 1, 'one each');
  await bye(port, ECHO_SNI);
  await bye(port, ECHO_SNI);
  t.is(a.connections(), 2);
  t.is(b.connections(), 2);
});

relayTest('max connections: a connection over the limit is dropped and counted', async (t, startGateway) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const { gateway, port } = await startGateway(echoRoutes([echo.port]), { maxConnections: 1 });
  t.teardown(() => gateway.close());
  const first = tlsClient(port, ECHO_SNI);
  await new Promise((resolve) => first.once('secureConnect', resolve));
  t.teardown(() => first.destroy());
  t.is(await bye(port, ECHO_SNI), '');
  t.is(await metric(gateway, 'causeway_gateway_refusals_total', { reason: 'max-connections' }), 1);
});

relayTest('an idle spliced connection is closed after idleTimeoutMs', async (t, startGateway) => {
  const echo = await startEchoServer(pki);
  t.teardown(() => echo.close());
  const { gateway, port } = await startGateway(echoRoutes([echo.port]), { idleTimeoutMs: 300 });
  t.teardown(() => gateway.close());
  const socket = tlsClient(port, ECHO_SNI);
  let handshook = false;
  socket.once('secureConnect', () => (handshook = true));
  // The gateway closes it, spliced and idle (or, on a slow machine, idle mid-handshake).
  await closed(socket);
  await waitFor(() => gateway.activeConnections === 0);
  t.log(handshook ? 'closed after the handshake' : 'closed during a slow handshake');
  t.true(socket.destroyed);
  t.is(gateway.activeConnections, 0);
});
