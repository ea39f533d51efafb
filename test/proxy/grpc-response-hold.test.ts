import test, { type ExecutionContext } from 'ava';
import { connect, createServer, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { GrpcResponseHold, type HeldResponseOwner } from '../../proxy/grpc-response-hold.js';
import { waitFor } from '../../testkit/ports.js';

// GrpcResponseHold on real HTTP/2 streams (an h2c server and client on loopback): what
// it hands its owner for each order in which a response's parts arrive. The sidecar path
// through it is in grpc.test.ts.

/** One gRPC message frame (uncompressed). */
function message(text: string): Buffer {
  const body = Buffer.from(text);
  const frame = Buffer.alloc(5 + body.length);
  frame.writeUInt32BE(body.length, 1);
  body.copy(frame, 5);
  return frame;
}

/** The owner as h2-exchange.ts is one: after a release it reads the rest of the stream, as the relay does. */
class Recorder implements HeldResponseOwner {
  readonly calls: string[] = [];
  readonly body: Buffer[] = [];
  trailers: IncomingHttpHeaders | undefined;
  ended = false;

  releaseHeld(upstream: ClientHttp2Stream, trailers: IncomingHttpHeaders | undefined, ranOut: boolean): void {
    this.calls.push(`${trailers ? 'release with trailers' : 'release'}${ranOut ? ', ran out' : ''}`);
    this.trailers = trailers;
    upstream.on('data', (chunk: Buffer) => this.body.push(chunk));
    upstream.on('trailers', (t: IncomingHttpHeaders) => (this.trailers = t));
    upstream.once('end', () => (this.ended = true));
  }

  heldTrailers(_upstream: ClientHttp2Stream, trailers: IncomingHttpHeaders): void {
    this.calls.push('trailers');
    this.trailers = trailers;
  }
}

interface Pair {
  session: ClientHttp2Session;
  /** The server side of the next stream. */
  next(): Promise<ServerHttp2Stream>;
}

async function pair(t: ExecutionContext): Promise<Pair> {
  const waiting: ((s: ServerHttp2Stream) => void)[] = [];
  const server = createServer();
  server.on('stream', (stream) => {
    stream.on('error', () => {});
    waiting.shift()?.(stream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const session = connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  session.on('error', () => {});
  t.teardown(() => new Promise<void>((resolve) => {
    session.destroy();
    server.close(() => resolve());
  }));
  return { session, next: () => new Promise((resolve) => waiting.push(resolve)) };
}

/** A call whose response headers the server sends at once; resolves when they arrived, with the hold made on them. */
async function heldCall(t: ExecutionContext, holdMs: number, beforeHold?: (upstream: ClientHttp2Stream) => void) {
  const { session, next } = await pair(t);
  const owner = new Recorder();
  const serverSide = next();
  const upstream = session.request({ ':method': 'POST', ':path': '/cw.test.Echo/Count', 'content-type': 'application/grpc', te: 'trailers' }, { endStream: true });
  upstream.on('error', () => {});
  const server = await serverSide;
  server.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  const hold = await new Promise<GrpcResponseHold>((resolve) =>
    upstream.once('response', () => {
      beforeHold?.(upstream);
      resolve(new GrpcResponseHold(upstream, owner, holdMs));
    }),
  );
  t.teardown(() => hold.cancel());
  /** The server ends the call: `messages`, then trailers with `status`. */
  const finish = (status: string, ...messages: string[]) => {
    server.once('wantTrailers', () => server.sendTrailers({ 'grpc-status': status }));
    for (const m of messages) server.write(message(m));
    server.end();
  };
  return { owner, hold, upstream, finish };
}

const LONG_HOLD_MS = 60_000;

test('the first message releases the headers, and the relay reads it whole after them', async (t) => {
  const { owner, finish } = await heldCall(t, LONG_HOLD_MS);
  finish('0', 'one', 'two');
  await waitFor(() => owner.ended, { what: 'the stream read to its end', timeoutMs: 10_000 });
  t.deepEqual(owner.calls, ['release']);
  t.deepEqual(Buffer.concat(owner.body), Buffer.concat([message('one'), message('two')]));
  t.is(owner.trailers?.['grpc-status'], '0');
});

test('trailers before any message are handed over as the outcome, the headers still held', async (t) => {
  const { owner, finish } = await heldCall(t, LONG_HOLD_MS);
  finish('14');
  await waitFor(() => owner.calls.length > 0, { what: 'the owner told', timeoutMs: 10_000 });
  t.deepEqual(owner.calls, ['trailers']);
  t.is(owner.trailers?.['grpc-status'], '14');
});

test('trailers that arrive while a message is still unread in the buffer count as after a message: released with them', async (t) => {
  // Paused before the hold: the message waits in the buffer when the trailers are emitted.
  const { owner, upstream, finish } = await heldCall(t, LONG_HOLD_MS, (u) => u.pause());
  finish('14', 'partial');
  await waitFor(() => owner.calls.length > 0, { what: 'the owner told', timeoutMs: 10_000 });
  t.deepEqual(owner.calls, ['release with trailers']);
  t.is(owner.trailers?.['grpc-status'], '14');
  await waitFor(() => owner.ended, { what: 'the stream read to its end', timeoutMs: 10_000 });
  t.deepEqual(Buffer.concat(owner.body), message('partial'), 'the buffered message is read after the release');
  t.false(upstream.isPaused());
});

test('without a message or trailers the headers are released when the hold runs out; what comes later is read as usual', async (t) => {
  const { owner, finish } = await heldCall(t, 50);
  await waitFor(() => owner.calls.length > 0, { what: 'the hold to run out', timeoutMs: 10_000 });
  t.deepEqual(owner.calls, ['release, ran out']);
  finish('0', 'late');
  await waitFor(() => owner.ended, { what: 'the stream read to its end', timeoutMs: 10_000 });
  t.deepEqual(Buffer.concat(owner.body), message('late'));
  t.is(owner.trailers?.['grpc-status'], '0');
});

test('a cancelled hold tells its owner nothing, neither on data nor when its time would have run out', async (t) => {
  const { owner, hold, upstream, finish } = await heldCall(t, 50);
  hold.cancel();
  const chunks: Buffer[] = [];
  upstream.on('data', (c: Buffer) => chunks.push(c));
  const ended = new Promise((resolve) => upstream.once('end', resolve));
  finish('0', 'after');
  await ended;
  // Past the 50 ms the hold had: its timer was cleared too.
  await new Promise((resolve) => setTimeout(resolve, 200));
  t.deepEqual(owner.calls, []);
  t.deepEqual(Buffer.concat(chunks), message('after'));
});
