import { createSocket } from 'node:dgram';
import { createServer, type Server } from 'node:net';
import { Server as GrpcServer, ServerCredentials } from '@grpc/grpc-js';
import test from 'ava';
import { DnsTransport, ErrorCodes, ListenError, createMetricsRegistry, listenError, listenOn, logger, startObservabilityServer } from '../../mesh/index.js';
import { freePort } from '../../testkit/index.js';

/** A plain TCP server holding `port` on 127.0.0.1, as another component on the host would. */
async function occupy(t: import('ava').ExecutionContext, port = 0): Promise<number> {
  const server = createServer();
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (await listenOn(server, { host: '127.0.0.1', port }, { setting: 'test.blocker' })).port;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

test('listenOn: a port in use rejects with CW_LISTEN_ADDRESS_IN_USE naming the setting, the flag and (inConfigFile) the file', async (t) => {
  const port = await occupy(t);
  const server = createServer();
  const error = await t.throwsAsync(listenOn(server, { host: '127.0.0.1', port }, { setting: 'observability.readyPort', flag: '--ready-port' }), { instanceOf: ListenError });
  t.is(error.code, ErrorCodes.listenAddressInUse);
  t.is(error.errno, 'EADDRINUSE');
  t.like(error, { setting: 'observability.readyPort', flag: '--ready-port', host: '127.0.0.1', port });
  t.is(error.message, `observability.readyPort: 127.0.0.1:${port} is already in use (another Causeway component on this host?); set a free port with --ready-port or observability.readyPort in the config file`);
  t.is((error.cause as NodeJS.ErrnoException).code, 'EADDRINUSE');
  const named = error.inConfigFile('/etc/causeway/east.yaml');
  t.is(named.code, ErrorCodes.listenAddressInUse);
  t.regex(named.message, /set a free port with --ready-port or observability\.readyPort in \/etc\/causeway\/east\.yaml$/);
  t.false(server.listening);
});

test('listenOn: a setting without a flag names only the setting; a bound server resolves with its address', async (t) => {
  const port = await occupy(t);
  const error = await t.throwsAsync(listenOn(createServer(), { host: '127.0.0.1', port }, { setting: 'inboundPort' }), { instanceOf: ListenError });
  t.regex(error.message, /; set a free port with inboundPort in the config file$/);
  const server = createServer();
  t.teardown(() => closeServer(server));
  const address = await listenOn(server, { host: '127.0.0.1', port: 0 }, { setting: 'inboundPort' });
  t.true(address.port > 0);
  t.is(address.address, '127.0.0.1');
});

test('listenError: an errno that only a library message carries (grpc-js bindAsync) is still recognised', async (t) => {
  const port = await occupy(t);
  const grpc = new GrpcServer();
  t.teardown(() => grpc.forceShutdown());
  const failure = await new Promise<Error>((resolve) => grpc.bindAsync(`127.0.0.1:${port}`, ServerCredentials.createInsecure(), (error) => resolve(error!)));
  const error = listenError(failure, { host: '127.0.0.1', port }, { setting: 'controller.grpcPort' });
  t.is(error.code, ErrorCodes.listenAddressInUse);
  t.regex(error.message, new RegExp(`^controller\\.grpcPort: 127\\.0\\.0\\.1:${port} is already in use`));
  t.is(error.cause, failure);
  t.is(listenError(error, { host: 'x', port: 1 }, { setting: 'other' }), error, 'an error already translated passes through');
  t.is(listenError(new Error('something else'), { host: '127.0.0.1', port }, { setting: 's' }).code, ErrorCodes.listenFailed);
});

test('observability server: a metrics port in use names observability.metricsPort and --metrics-port, and releases the ready port', async (t) => {
  const metricsPort = await occupy(t);
  const readyPort = await freePort();
  const registry = createMetricsRegistry('test', { defaultMetrics: false });
  const error = await t.throwsAsync(startObservabilityServer({ host: '127.0.0.1', readyPort, metricsPort, registry, readiness: () => ({ ready: true, reasons: [] }) }), { instanceOf: ListenError });
  t.is(error.code, ErrorCodes.listenAddressInUse);
  t.regex(error.message, /^observability\.metricsPort: .* set a free port with --metrics-port or observability\.metricsPort in the config file$/);
  // Nothing of the failed server is left listening.
  await occupy(t, readyPort);
  const readyTaken = await t.throwsAsync(startObservabilityServer({ host: '127.0.0.1', readyPort, registry, readiness: () => ({ ready: true, reasons: [] }) }), { instanceOf: ListenError });
  t.regex(readyTaken.message, /^observability\.readyPort: 127\.0\.0\.1:\d+ is already in use .*--ready-port/);
});

test('DNS transport: a TCP port in use names the setting, and the UDP half it had bound is released', async (t) => {
  const port = await occupy(t);
  const transport = new DnsTransport({ host: '127.0.0.1', port, portSetting: { setting: 'dnsPort' }, log: logger('test'), onRequest: () => undefined, onMalformed: () => undefined });
  t.teardown(() => transport.close());
  const error = await t.throwsAsync(transport.start(), { instanceOf: ListenError });
  t.is(error.code, ErrorCodes.listenAddressInUse);
  t.regex(error.message, new RegExp(`^dnsPort: 127\\.0\\.0\\.1:${port} is already in use`));
  const udp = createSocket('udp4');
  t.teardown(() => udp.close());
  await t.notThrowsAsync(new Promise<void>((resolve, reject) => udp.once('error', reject).bind(port, '127.0.0.1', () => resolve())), 'the UDP port is free again');
});
