import test, { type ExecutionContext } from 'ava';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect } from 'node:net';
import dns2 from 'dns2';
import type { Controller } from '../../controller/index.js';
import { waitFor } from '../../testkit/ports.js';
import { controllerWorld, reviews } from './harness.js';

const endpoint = { service: 'reviews', namespace: 'default', endpointId: 'r-a', address: '127.0.0.21', inboundPort: 15006, labels: { version: 'v1' } };

async function sendUdp(port: number, bytes: Buffer): Promise<void> {
  const socket = createSocket('udp4');
  await new Promise<void>((resolve, reject) => socket.send(bytes, port, '127.0.0.1', (error) => (error ? reject(error) : resolve())));
  socket.close();
}

/** Writes bytes on a fresh TCP connection and waits for the server to drop it. */
async function sendTcp(t: ExecutionContext, port: number, bytes: Buffer): Promise<void> {
  const socket = connect(port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  socket.on('error', () => undefined);
  socket.resume();
  await once(socket, 'connect');
  socket.write(bytes);
  await once(socket, 'close');
}

async function malformedCount(controller: Controller): Promise<number> {
  return (await controller.metrics.dnsQueries.get()).values.find((v) => v.labels.rcode === 'malformed')?.value ?? 0;
}

// Regression: the operator DNS fed every datagram to dns2's parser, which spins for
// seconds on some junk (4 KiB of 0xff: ~13 s) with the controller's event loop blocked.
test('operator DNS drops 4 KiB of 0xff over UDP and an HTTP request over TCP, counts them, and still answers', async (t) => {
  const world = await controllerWorld(t);
  await world.admin.applyService(reviews);
  const controller = await world.startController({ dns: true });
  const registration = await world.registration(controller, 'default/reviews', endpoint);
  await registration.start();
  await waitFor(() => controller.catalogView!.endpointsOf('default/reviews').size === 1, { what: 'the endpoint registered' });
  const port = controller.dnsPort!;

  await sendUdp(port, Buffer.alloc(4096, 0xff));
  await sendUdp(port, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  await sendTcp(t, port, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  await sendTcp(t, port, Buffer.alloc(4096, 0xff));
  await waitFor(async () => (await malformedCount(controller)) === 4, { what: 'the junk counted as malformed' });

  const udp = new dns2({ nameServers: ['127.0.0.1'], port, recursive: false, timeout: 2000 } as never);
  const overUdp = await udp.resolveA('reviews.default.svc.causeway.internal');
  t.deepEqual(overUdp.answers.map((a) => a.address), ['127.0.0.21']);
  const tcp = dns2.TCPClient({ dns: '127.0.0.1', port });
  const overTcp = await tcp('reviews.default.svc.causeway.internal', 'A');
  t.deepEqual(overTcp.answers.map((a) => a.address), ['127.0.0.21']);
  t.is(await malformedCount(controller), 4);
});
