import test from 'ava';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect, createServer as createNetServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { socketIo, StreamSocketIo, watchIdle, type SocketIo, type SocketIoReader } from '../../proxy/socket-io.js';
import { createTestPki } from '../../testkit/test-pki.js';
import { waitFor } from '../../testkit/ports.js';

// Real sockets on loopback, plain and TLS: the sidecar's fast path reads and writes
// through proxy/socket-io.ts, natively on the handle or through the socket's streams.

const dir = mkdtempSync(join(tmpdir(), 'cw-socket-io-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));
const pki = createTestPki(dir);
const server = pki.issue('localhost', { server: true });
const tlsOptions = { key: readFileSync(server.keyFile), cert: readFileSync(server.certFile) };

type Kind = 'tcp' | 'tls';
type Mode = 'native' | 'stream';

/** A reader that collects what it is given. */
class Collector implements SocketIoReader {
  chunks: Buffer[] = [];
  drained = 0;
  ioData(chunk: Buffer): void {
    this.chunks.push(chunk);
  }
  ioDrained(): void {
    this.drained++;
  }
  get text(): string {
    return Buffer.concat(this.chunks).toString('latin1');
  }
}

function ioFor(socket: Socket, reader: SocketIoReader, mode: Mode): SocketIo {
  return mode === 'native' ? socketIo(socket, reader) : new StreamSocketIo(socket, reader);
}

/** A server whose accepted connections are handed to `onSocket` once usable (after the handshake for TLS), and a connected client. */
async function pair(kind: Kind, onSocket: (s: Socket) => void): Promise<{ client: Socket; server: Server }> {
  const srv: Server = kind === 'tls' ? createTlsServer({ ...tlsOptions, noDelay: true }, onSocket) : createNetServer({ noDelay: true }, onSocket);
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as AddressInfo).port;
  const client = kind === 'tls' ? tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(pki.caCertFile), servername: 'localhost' }) : netConnect({ host: '127.0.0.1', port });
  await once(client, kind === 'tls' ? 'secureConnect' : 'connect');
  return { client, server: srv };
}

for (const kind of ['tcp', 'tls'] as const) {
  test(`${kind}: socketIo takes the native handle path where Node has the bindings`, async (t) => {
    let serverIo: SocketIo | undefined;
    const { client, server: srv } = await pair(kind, (s) => (serverIo = socketIo(s, new Collector())));
    t.teardown(() => (client.destroy(), srv.close()));
    await waitFor(() => serverIo !== undefined, { what: 'the server side', timeoutMs: 5000, intervalMs: 5 });
    t.is(serverIo!.constructor.name, 'NativeSocketIo');
    t.is(socketIo(client, new Collector()).constructor.name, 'NativeSocketIo');
  });

  for (const mode of ['native', 'stream'] as const) {
    test(`${kind}/${mode}: corked writes leave together, in order, and count in the socket's bytesWritten`, async (t) => {
      let serverSocket: Socket | undefined;
      const { client, server: srv } = await pair(kind, (s) => {
        serverSocket = s;
        const io = ioFor(s, { ioData: (c) => {
          io.cork();
          io.write('echo:');
          io.write(c);
          io.write(Buffer.from('!'));
          io.uncork();
        }, ioDrained() {} }, mode);
      });
      t.teardown(() => (client.destroy(), srv.close()));
      const got = new Collector();
      const io = ioFor(client, got, mode);
      io.write('one');
      await waitFor(() => got.text === 'echo:one!', { what: 'the first echo', timeoutMs: 5000, intervalMs: 5 });
      io.write(Buffer.from('two'));
      await waitFor(() => got.text === 'echo:one!echo:two!', { what: 'the second echo', timeoutMs: 5000, intervalMs: 5 });
      t.is(serverSocket!.bytesWritten, 'echo:one!echo:two!'.length);
    });

    test(`${kind}/${mode}: megabytes written faster than read arrive whole and in order; the writer is told when it drained`, async (t) => {
      // Written until the queue passes the high-water mark (the kernel takes the first few MB itself).
      const parts: Buffer[] = [];
      let serverReader: Collector | undefined;
      let refused = false;
      const { client, server: srv } = await pair(kind, (s) => {
        serverReader = new Collector();
        const io = ioFor(s, serverReader, mode);
        for (let i = 0; i < 64 && !refused; i++) {
          const part = Buffer.alloc(1 << 20, 0x61 + (i % 26));
          parts.push(part);
          refused = !io.write(part);
        }
      });
      t.teardown(() => (client.destroy(), srv.close()));
      const got = new Collector();
      ioFor(client, got, mode);
      await waitFor(() => serverReader !== undefined, { what: 'the server side', timeoutMs: 5000, intervalMs: 5 });
      t.true(refused, 'write() said false once too much was queued');
      const total = parts.reduce((n, p) => n + p.length, 0);
      await waitFor(() => got.chunks.reduce((n, c) => n + c.length, 0) >= total, { what: 'every byte', timeoutMs: 20_000 });
      t.true(Buffer.concat(got.chunks).equals(Buffer.concat(parts)));
      await waitFor(() => serverReader!.drained > 0, { what: 'the drain', timeoutMs: 5000, intervalMs: 5 });
    });

    test(`${kind}/${mode}: end() after queued writes delivers them, then closes; the peer's FIN closes this side`, async (t) => {
      let serverClosed = false;
      const { client, server: srv } = await pair(kind, (s) => {
        s.on('close', () => (serverClosed = true));
        const io = ioFor(s, { ioData: () => {
          io.cork();
          io.write('last words');
          io.end();
          io.uncork();
        }, ioDrained() {} }, mode);
      });
      t.teardown(() => (client.destroy(), srv.close()));
      const got = new Collector();
      ioFor(client, got, mode);
      // Native reads bypass the Readable, so no 'end' event: the peer's FIN shows as the close that follows it.
      const closed = once(client, 'close');
      client.write('bye');
      await closed;
      t.is(got.text, 'last words');
      await waitFor(() => serverClosed, { what: 'the server side to close', timeoutMs: 5000, intervalMs: 5 });
    });

    test(`${kind}/${mode}: pause stops reading until resume; detach hands the socket back to its stream with nothing lost`, async (t) => {
      let serverIo: SocketIo | undefined;
      const reader = new Collector();
      let serverSocket: Socket | undefined;
      const { client, server: srv } = await pair(kind, (s) => {
        serverSocket = s;
        serverIo = ioFor(s, reader, mode);
      });
      t.teardown(() => (client.destroy(), srv.close()));
      await waitFor(() => serverIo !== undefined, { what: 'the server side', timeoutMs: 5000, intervalMs: 5 });
      client.write('a');
      await waitFor(() => reader.text === 'a', { what: 'a', timeoutMs: 5000, intervalMs: 5 });
      serverIo!.pause();
      t.true(serverIo!.paused);
      client.write('b');
      await new Promise((r) => setTimeout(r, 100));
      t.is(reader.text, 'a', 'nothing is delivered while paused');
      serverIo!.resume();
      await waitFor(() => reader.text === 'ab', { what: 'b after resume', timeoutMs: 5000, intervalMs: 5 });
      serverIo!.write('reply');
      const streamed: Buffer[] = [];
      await new Promise<void>((resolve) => serverIo!.detach(resolve));
      serverSocket!.on('data', (c: Buffer) => streamed.push(c));
      client.write('c');
      await waitFor(() => Buffer.concat(streamed).toString() === 'c', { what: 'c through the stream', timeoutMs: 5000, intervalMs: 5 });
      t.is(reader.text, 'ab', 'the detached reader gets nothing more');
      serverSocket!.write('streamed');
      const got = new Collector();
      ioFor(client, got, mode);
      await waitFor(() => got.text === 'replystreamed' || got.text.endsWith('streamed'), { what: 'both replies', timeoutMs: 5000, intervalMs: 5 });
    });
  }
}

test('bytes the socket already buffered (a sniffer unshifted them) are delivered first, then native reads', async (t) => {
  const reader = new Collector();
  const { client, server: srv } = await pair('tcp', (s) => {
    s.once('data', (first: Buffer) => {
      s.pause();
      s.unshift(first);
      const io = socketIo(s, reader);
      t.is(io.constructor.name, 'NativeSocketIo');
      // What the sniffer does next: resume the stream, which would drop bytes nobody listens for.
      s.resume();
    });
  });
  t.teardown(() => (client.destroy(), srv.close()));
  client.write('first');
  await waitFor(() => reader.text === 'first', { what: 'first', timeoutMs: 5000, intervalMs: 5 });
  client.write('-second');
  await waitFor(() => reader.text === 'first-second', { what: 'second', timeoutMs: 5000, intervalMs: 5 });
});

for (const mode of ['native', 'stream'] as const) {
  test(`tcp/${mode}: watchIdle fires only after a quiet period, however long the connection has been busy, and not after it is stopped`, async (t) => {
    let serverIo: SocketIo | undefined;
    const { client, server: srv } = await pair('tcp', (s) => (serverIo = ioFor(s, new Collector(), mode)));
    t.teardown(() => (client.destroy(), srv.close()));
    await waitFor(() => serverIo !== undefined, { what: 'the server side', timeoutMs: 5000, intervalMs: 5 });
    let idle = 0;
    // The idle period is long next to the 30 ms between writes, so that a loaded machine's
    // scheduling stalls (seen at 150 ms with other suites running) do not look like quiet.
    const stop = watchIdle(serverIo!, 600, () => idle++);
    // Busy for three idle periods: a read every 30 ms.
    for (let i = 0; i < 60; i++) {
      client.write('x');
      await new Promise((r) => setTimeout(r, 30));
    }
    t.is(idle, 0, 'traffic keeps it from firing');
    await waitFor(() => idle > 0, { what: 'the idle callback', timeoutMs: 5000, intervalMs: 5 });
    stop();
    const seen = idle;
    await new Promise((r) => setTimeout(r, 1_300));
    t.is(idle, seen, 'a stopped watch does not fire');
  });
}
