import test, { type ExecutionContext } from 'ava';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import dns2 from 'dns2';
import { DnsPacket, DnsTransport, logger, plausibleQuery } from '../../mesh/index.js';

/** A query as a stub resolver sends it: one question, RD set, optionally an EDNS OPT record. */
function query(id: number, name: string, options: { type?: number; edns?: boolean } = {}): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // RD
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(options.edns ? 1 : 0, 10);
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')]));
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(options.type ?? 1, 0);
  tail.writeUInt16BE(1, 2);
  // OPT: root name, TYPE 41, CLASS = UDP payload size 1232, TTL 0, RDLEN 0.
  const opt = options.edns ? Buffer.from([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]) : Buffer.alloc(0);
  return Buffer.concat([header, ...labels, Buffer.from([0]), tail, opt]);
}

function framed(message: Buffer): Buffer {
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(message.length);
  return Buffer.concat([prefix, message]);
}

const getQuery = Buffer.from('GET / HTTP/1.1\r\n\r\n');
const ones = Buffer.alloc(4096, 0xff);

/** A transport on 127.0.0.1:0 that answers every query with A 127.0.0.9, counting what it drops. */
async function startTransport(t: ExecutionContext, options: { tcpIdleTimeoutMs?: number } = {}) {
  const counts = { requests: 0, malformed: 0 };
  const transport = new DnsTransport({
    host: '127.0.0.1',
    port: 0,
    log: logger('dns-transport-test'),
    ...options,
    onMalformed: () => counts.malformed++,
    onRequest: (request, send) => {
      counts.requests++;
      const response = DnsPacket.createResponseFromRequest(request);
      response.answers.push(DnsPacket.createResourceFromQuestion(request.questions[0]!, { type: DnsPacket.TYPE.A, ttl: 5, address: '127.0.0.9' }));
      send(response);
    },
  });
  t.teardown(() => transport.close());
  const port = await transport.start();
  return { transport, port, counts };
}

function answerOf(message: Buffer): { id: number; addresses: string[] } {
  const parsed = dns2.Packet.parse(message);
  return { id: parsed.header.id, addresses: parsed.answers.map((a) => a.address ?? '') };
}

/** One UDP client socket: sends datagrams, hands back replies in arrival order. */
function udpClient(t: ExecutionContext, port: number) {
  const socket = createSocket('udp4');
  t.teardown(() => socket.close());
  const replies: Buffer[] = [];
  const waiting: ((reply: Buffer) => void)[] = [];
  socket.on('message', (message: Buffer) => {
    const next = waiting.shift();
    if (next) next(message);
    else replies.push(message);
  });
  return {
    send: (bytes: Buffer) => new Promise<void>((resolve, reject) => socket.send(bytes, port, '127.0.0.1', (error) => (error ? reject(error) : resolve()))),
    nextReply: () => new Promise<Buffer>((resolve) => {
      const queued = replies.shift();
      if (queued) resolve(queued);
      else waiting.push(resolve);
    }),
  };
}

/** Connects over TCP and collects everything the server writes until it closes the connection. */
async function tcpExchange(t: ExecutionContext, port: number, write: (socket: Socket) => void): Promise<{ received: Buffer; closedByServer: boolean }> {
  const socket = connect(port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  await once(socket, 'connect');
  const chunks: Buffer[] = [];
  let ended = false;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('end', () => (ended = true));
  socket.on('error', () => undefined); // a reset is one way of being dropped
  write(socket);
  await once(socket, 'close');
  return { received: Buffer.concat(chunks), closedByServer: ended || socket.destroyed };
}

function tcpMessages(stream: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let offset = 0; offset + 2 <= stream.length; ) {
    const length = stream.readUInt16BE(offset);
    out.push(stream.subarray(offset + 2, offset + 2 + length));
    offset += 2 + length;
  }
  return out;
}

test('plausibleQuery: what stub resolvers send passes', (t) => {
  t.true(plausibleQuery(query(1, 'reviews.default.svc.causeway.internal')));
  t.true(plausibleQuery(query(2, 'reviews.default.svc.causeway.internal', { type: 33, edns: true })));
  const encoded = new dns2.Packet();
  encoded.header.id = 7;
  encoded.questions.push({ name: 'reviews.default.svc.causeway.internal', type: 1, class: 1 } as dns2.Packet.Question);
  t.true(plausibleQuery(encoded.toBuffer()), "dns2's own encoding of a query");
});

test('plausibleQuery: junk that stalls dns2 for seconds is refused (regression: 4 KiB of 0xff blocked the loop ~13 s)', (t) => {
  t.false(plausibleQuery(ones));
  t.false(plausibleQuery(getQuery));
  t.false(plausibleQuery(Buffer.alloc(0)));
});

test('plausibleQuery: anything but a one-question query is refused', (t) => {
  const good = query(1, 'reviews.default.svc.causeway.internal');
  const withByte = (offset: number, value: number) => {
    const copy = Buffer.from(good);
    copy[offset] = value;
    return copy;
  };
  t.false(plausibleQuery(withByte(2, good[2]! | 0x80)), 'a response (QR=1)');
  t.false(plausibleQuery(withByte(5, 2)), 'two questions');
  t.false(plausibleQuery(withByte(7, 1)), 'an answer record');
  t.false(plausibleQuery(withByte(9, 1)), 'an authority record');
  t.false(plausibleQuery(withByte(11, 2)), 'two additionals');
  t.false(plausibleQuery(withByte(12, 0xc0)), 'a compression pointer in the question');
  t.false(plausibleQuery(withByte(12, 64)), 'a label over 63 bytes');
  t.false(plausibleQuery(good.subarray(0, good.length - 1)), 'question cut short');
  t.false(plausibleQuery(Buffer.concat([good, Buffer.from([0])])), 'trailing bytes');
  t.false(plausibleQuery(Buffer.concat([query(1, 'a.b', { edns: true }).subarray(0, -1)])), 'EDNS record cut short');
  t.false(plausibleQuery(query(1, Array.from({ length: 5 }, () => 'x'.repeat(63)).join('.'))), 'a name over 255 bytes');
  t.false(plausibleQuery(Buffer.concat([query(1, 'a.b', { edns: true }), Buffer.alloc(4096)])), 'over 4 KiB');
});

test('UDP: a query is answered, junk is dropped unanswered and the next query is still answered', async (t) => {
  const { port, counts } = await startTransport(t);
  const client = udpClient(t, port);
  await client.send(query(1, 'reviews.default.svc.causeway.internal'));
  t.deepEqual(answerOf(await client.nextReply()), { id: 1, addresses: ['127.0.0.9'] });
  await client.send(ones);
  await client.send(getQuery);
  await client.send(query(2, 'reviews.default.svc.causeway.internal', { edns: true }));
  // Datagrams on loopback arrive in order: had the junk been answered, that reply would come first.
  t.deepEqual(answerOf(await client.nextReply()), { id: 2, addresses: ['127.0.0.9'] });
  t.deepEqual(counts, { requests: 2, malformed: 2 });
});

test('TCP: pipelined queries sent with end() are all answered, then the server closes', async (t) => {
  const { port, counts } = await startTransport(t);
  const { received } = await tcpExchange(t, port, (s) => s.end(Buffer.concat([framed(query(1, 'a.causeway.internal')), framed(query(2, 'b.causeway.internal'))])));
  t.deepEqual(tcpMessages(received).map((m) => answerOf(m)), [
    { id: 1, addresses: ['127.0.0.9'] },
    { id: 2, addresses: ['127.0.0.9'] },
  ]);
  t.is(counts.malformed, 0);
});

test('TCP: an HTTP request is dropped without an answer and the server still answers the next connection', async (t) => {
  const { port, counts } = await startTransport(t);
  // Read as a length prefix, "GE" is 18245 bytes: more than any DNS message here, so no waiting for the rest.
  const junk = await tcpExchange(t, port, (s) => s.write(getQuery));
  t.is(junk.received.length, 0);
  t.true(junk.closedByServer);
  const junkFrame = await tcpExchange(t, port, (s) => s.write(framed(ones.subarray(0, 4000))));
  t.is(junkFrame.received.length, 0, 'a well-framed but implausible message');
  const cutShort = await tcpExchange(t, port, (s) => s.end(framed(query(3, 'a.causeway.internal')).subarray(0, 10)));
  t.is(cutShort.received.length, 0, 'a frame cut short by the client');
  t.is(counts.malformed, 3);
  const good = await tcpExchange(t, port, (s) => s.end(framed(query(4, 'reviews.default.svc.causeway.internal'))));
  t.deepEqual(tcpMessages(good.received).map((m) => answerOf(m)), [{ id: 4, addresses: ['127.0.0.9'] }]);
});

test('TCP: an idle connection is closed by the server', async (t) => {
  const { port } = await startTransport(t, { tcpIdleTimeoutMs: 100 });
  const idle = await tcpExchange(t, port, () => undefined);
  t.true(idle.closedByServer);
  t.is(idle.received.length, 0);
});

test('close() does not wait for an idle TCP client', async (t) => {
  const { transport, port } = await startTransport(t, { tcpIdleTimeoutMs: 60_000 });
  const socket = connect(port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  socket.on('error', () => undefined);
  await once(socket, 'connect');
  const closed = once(socket, 'close');
  await transport.close();
  await closed;
  t.true(socket.destroyed, 'the idle client was disconnected by close()');
});

test('UDP and TCP share the port and bind only the given host', async (t) => {
  const { port } = await startTransport(t);
  const client = udpClient(t, port);
  await client.send(query(9, 'x.causeway.internal'));
  t.is(answerOf(await client.nextReply()).id, 9);
  const viaTcp = await tcpExchange(t, port, (s) => s.end(framed(query(10, 'x.causeway.internal'))));
  t.is(answerOf(tcpMessages(viaTcp.received)[0]!).id, 10);
  await t.throwsAsync(
    () =>
      new Promise<void>((resolve, reject) => {
        const other = connect(port, '127.0.0.2');
        other.on('connect', () => {
          other.destroy();
          resolve();
        });
        other.on('error', reject);
      }),
    { code: 'ECONNREFUSED' },
  );
});
