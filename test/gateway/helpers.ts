import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createTcpServer, connect as tcpConnect, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket, type Server as TlsServer } from 'node:tls';
import { ClientHelloReader, SniGateway, type RouteSpecInput, type SniGatewayOptions } from '../../gateway/index.js';
import { createTestPki, type TestPki } from '../../testkit/index.js';

export const TD = 'causeway.internal';
export const ECHO_SNI = `9080.all.echo.default.east.cw1.${TD}`;

export interface Pki {
  readonly pki: TestPki;
  readonly ca: Buffer;
  readonly server: { cert: Buffer; key: Buffer; certFile: string; keyFile: string };
  readonly client: { cert: Buffer; key: Buffer; certFile: string; keyFile: string };
  cleanup(): void;
}

/** An openssl-made PKI whose server certificate names the SNIs tests use (so curl and s_client verify hostnames). */
export function makePki(extraNames: string[] = []): Pki {
  const dir = mkdtempSync(join(tmpdir(), 'causeway-gw-pki-'));
  const pki = createTestPki(dir);
  const serverFiles = pki.issue('echo-server', { server: true, dnsSans: ['localhost', ECHO_SNI, ...extraNames] });
  const clientFiles = pki.issue('echo-client');
  const load = (f: { certFile: string; keyFile: string }) => ({ ...f, cert: readFileSync(f.certFile), key: readFileSync(f.keyFile) });
  return { pki, ca: readFileSync(pki.caCertFile), server: load(serverFiles), client: load(clientFiles), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * A real TLS server requiring client certificates. It answers `GET` with an HTTP page
 * naming the client certificate's CN, answers a `bye` line with `bye <CN>` and closes,
 * and otherwise echoes bytes until the client half-closes.
 */
export async function startEchoServer(pki: Pki): Promise<{ server: TlsServer; port: number; connections: () => number; close(): Promise<void> }> {
  let count = 0;
  const sockets = new Set<Socket>();
  const server = createTlsServer({ cert: pki.server.cert, key: pki.server.key, ca: pki.ca, requestCert: true, rejectUnauthorized: true, allowHalfOpen: true }, (socket: TLSSocket) => {
    const cn = String((socket.getPeerCertificate().subject as { CN?: string } | undefined)?.CN ?? 'anonymous');
    let first = true;
    socket.on('data', (chunk: Buffer) => {
      if (first && chunk.subarray(0, 4).toString() === 'GET ') {
        const body = `hello ${cn}\n`;
        socket.end(`HTTP/1.1 200 OK\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`);
        return;
      }
      first = false;
      if (chunk.toString().includes('bye\n')) {
        socket.end(`bye ${cn}\n`);
        return;
      }
      socket.write(chunk);
    });
    socket.on('end', () => socket.end());
    socket.on('error', () => undefined);
  });
  server.on('tlsClientError', () => undefined);
  // Counted at TCP accept: a TLS 1.3 client is connected before the server sees its Finished.
  server.on('connection', (socket: Socket) => {
    if (sockets.has(socket)) return;
    count++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    connections: () => count,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** A gateway on 127.0.0.1:0 routing the echo service of cluster east to `ports`. */
export async function startGateway(routes: RouteSpecInput, options: SniGatewayOptions = {}): Promise<{ gateway: SniGateway; port: number }> {
  const gateway = new SniGateway({ host: '127.0.0.1', port: 0, ...options });
  gateway.setRoutes(routes);
  const { port } = await gateway.listen();
  return { gateway, port };
}

export function echoRoutes(ports: number[], extra: Partial<RouteSpecInput> = {}): RouteSpecInput {
  return {
    cluster: 'east',
    trustDomain: TD,
    services: [{ namespace: 'default', name: 'echo', exported: true, ports: [9080], endpoints: ports.map((port) => ({ address: '127.0.0.1', port })) }],
    ...extra,
  };
}

/** Reads one sample of a metric from the gateway's registry (0 when absent). */
export async function metric(gateway: SniGateway, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await gateway.registry.metrics();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    if (want.every((w) => rest.includes(w))) return Number(line.split(' ').pop());
  }
  return 0;
}

/** A plain TCP server that records every byte of each connection and never answers. */
export async function startRecorder(): Promise<{ port: number; received: () => Buffer[]; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const received: Buffer[] = [];
  const server: Server = createTcpServer((socket) => {
    sockets.add(socket);
    const chunks: Buffer[] = [];
    const index = received.push(Buffer.alloc(0)) - 1;
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      received[index] = Buffer.concat(chunks);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    received: () => received,
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A server that records the first ClientHello a real client sends, then hangs up:
 * how the tests capture hellos from openssl, curl, Python and Node.
 */
export async function startHelloCapture(): Promise<{ port: number; next(): Promise<Buffer>; close(): Promise<void> }> {
  const waiting: ((hello: Buffer) => void)[] = [];
  const captured: Buffer[] = [];
  const server = createTcpServer((socket) => {
    const reader = new ClientHelloReader();
    socket.on('data', (chunk) => {
      if (reader.push(chunk) === undefined) return;
      const hello = Buffer.from(reader.wireBytes);
      socket.destroy();
      const waiter = waiting.shift();
      if (waiter) waiter(hello);
      else captured.push(hello);
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    next: () => {
      const ready = captured.shift();
      return ready ? Promise.resolve(ready) : new Promise((resolve) => waiting.push(resolve));
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** Re-frames a hello's handshake bytes into records of `size` payload bytes each. */
export function fragmentRecords(wire: Buffer, size: number): Buffer {
  const payload: Buffer[] = [];
  let p = 0;
  while (p + 5 <= wire.length) {
    const length = wire.readUInt16BE(p + 3);
    payload.push(wire.subarray(p + 5, p + 5 + length));
    p += 5 + length;
  }
  const handshake = Buffer.concat(payload);
  const version = wire.subarray(1, 3);
  const out: Buffer[] = [];
  for (let i = 0; i < handshake.length; i += size) {
    const piece = handshake.subarray(i, i + size);
    const header = Buffer.from([0x16, version[0]!, version[1]!, piece.length >> 8, piece.length & 0xff]);
    out.push(header, piece);
  }
  return Buffer.concat(out);
}

/** Sends `bytes` to host:port one byte per write (each its own TCP segment with noDelay). */
export async function sendByteByByte(port: number, bytes: Buffer): Promise<Socket> {
  const socket = tcpConnect({ host: '127.0.0.1', port, noDelay: true });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  for (let i = 0; i < bytes.length; i++) {
    if (socket.destroyed) break;
    socket.write(bytes.subarray(i, i + 1));
    if (i % 64 === 63) await new Promise((r) => setImmediate(r));
  }
  return socket;
}

/** Resolves when `socket` closes; true when the peer closed it (not us). */
export function closed(socket: Socket): Promise<void> {
  return socket.closed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));
}
