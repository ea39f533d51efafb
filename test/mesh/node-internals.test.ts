import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import test from 'ava';
import { missingNodeInternals, streamHandleBindings, tcpHandleBindings, UV_EOF, type StreamShutdownReq, type StreamWriteReq, type TcpConnectReq, type TcpHandle } from '../../mesh/node-internals.js';

// The Node that CI and this machine run has every internal the gateway's handle relay and
// the sidecar's socket I/O rely on; a Node that drops one fails here first, naming it.

test('this Node has every Node internal Causeway relies on', (t) => {
  t.deepEqual(missingNodeInternals(), [], `Node ${process.version}`);
  const stream = streamHandleBindings()!;
  const tcp = tcpHandleBindings()!;
  t.is(tcp.WriteWrap, stream.WriteWrap, 'the TCP bindings carry the stream ones');
  t.is(tcpHandleBindings(), tcp, 'loaded once');
});

test('a TCP handle driven through the bindings connects, writes, reads, shuts down and closes', async (t) => {
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('data', (chunk: Buffer) => socket.write(chunk.toString().toUpperCase()));
    socket.on('end', () => socket.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const b = tcpHandleBindings()!;
  const handle: TcpHandle = new b.TCP(b.socketType);
  const status = await new Promise<number>((resolve) => {
    const req: TcpConnectReq = new b.TCPConnectWrap();
    req.oncomplete = (connectStatus) => resolve(connectStatus);
    req.address = '127.0.0.1';
    req.port = (server.address() as AddressInfo).port;
    t.is(handle.connect(req, req.address, req.port), 0);
  });
  t.is(status, 0, 'connected');
  let received = '';
  const ended = new Promise<void>((resolve) => {
    handle.onread = (arrayBuffer) => {
      const nread = b.state[b.kReadBytesOrError]!;
      if (nread > 0) received += Buffer.from(arrayBuffer!, b.state[b.kArrayBufferOffset], nread).toString();
      else if (nread === UV_EOF) resolve();
    };
  });
  t.is(handle.readStart(), 0);
  const written = await new Promise<number>((resolve) => {
    const req: StreamWriteReq = new b.WriteWrap();
    req.handle = handle;
    req.oncomplete = resolve;
    req.async = false;
    req.buffer = Buffer.from('ping');
    t.is(handle.writeBuffer(req, req.buffer), 0);
    if (!b.state[b.kLastWriteWasAsync]) resolve(0);
  });
  t.is(written, 0, 'written');
  const shut = new Promise<number>((resolve) => {
    const req: StreamShutdownReq = new b.ShutdownWrap();
    req.handle = handle;
    req.oncomplete = resolve;
    t.is(handle.shutdown(req), 0);
  });
  t.is(await shut, 0, 'FIN sent');
  await ended;
  t.is(received, 'PING');
  await new Promise<void>((resolve) => handle.close(resolve));
});
