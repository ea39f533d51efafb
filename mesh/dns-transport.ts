import { createServer, isIPv6, type Server, type Socket } from 'node:net';
import type { RemoteInfo } from 'node:dgram';
import dns2 from 'dns2';
import type { PortSetting } from './errors.js';
import { listenError } from './listen.js';
import type { Logger } from './log.js';

/** A question as Causeway builds and reads it (dns2 wants class instances where plain objects work). */
export interface DnsQuestion {
  name: string;
  type: number;
  class: number;
}

/** The part of a dns2 packet the mesh's DNS servers read and write. */
export interface DnsPacket {
  header: { id: number; rcode: number; aa: number; ra: number; rd: number };
  questions: DnsQuestion[];
  answers: unknown[];
  additionals: unknown[];
  toBuffer(): Buffer;
}

/** Answers one query: a packet, or a message already encoded (e.g. relayed from a resolver). */
export type DnsSend = (response: DnsPacket | Buffer) => void;

/** dns2's packet codec, typed for what Causeway uses (its typings leave out RCODE). */
export const DnsPacket = dns2.Packet as unknown as {
  readonly TYPE: Readonly<Record<'A' | 'AAAA' | 'SRV' | 'ANY', number>>;
  readonly CLASS: Readonly<Record<'IN', number>>;
  readonly RCODE: Readonly<Record<'NOERROR' | 'FORMERR' | 'SERVFAIL' | 'NXDOMAIN' | 'REFUSED', number>>;
  createResponseFromRequest(request: DnsPacket): DnsPacket;
  createResourceFromQuestion(base: DnsQuestion, record: Record<string, unknown>): unknown;
  parse(buffer: Buffer): DnsPacket;
};

/** The largest DNS message either transport accepts (EDNS's usual UDP payload size). */
const maxMessageBytes = 4096;

/**
 * A DNS message worth parsing: a query (QR=0) with exactly one question whose name is
 * made of in-bounds, uncompressed labels, no answer or authority records and at most one
 * additional (EDNS OPT). Anything else is dropped before dns2 sees it: its parser spins
 * for seconds on some junk (4 KiB of 0xff: ~13 s; `GET / HTTP/1.1`: ~4 s), blocking the
 * event loop.
 */
export function plausibleQuery(data: Buffer): boolean {
  if (data.length < 17 || data.length > maxMessageBytes) return false;
  if ((data[2]! & 0x80) !== 0) return false;
  if (data.readUInt16BE(4) !== 1 || data.readUInt16BE(6) !== 0 || data.readUInt16BE(8) !== 0 || data.readUInt16BE(10) > 1) return false;
  let offset = 12;
  for (;;) {
    const length = data[offset];
    if (length === undefined || length > 63) return false;
    offset += 1 + length;
    if (length === 0) break;
    if (offset > 12 + 255) return false;
  }
  offset += 4; // QTYPE, QCLASS
  if (offset > data.length) return false;
  return data.readUInt16BE(10) === 0 ? offset === data.length : data.length - offset >= 11;
}

export interface DnsTransportOptions {
  readonly host: string;
  /** 0 picks a free port (the same for UDP and TCP). */
  readonly port: number;
  /** The setting `port` comes from: a failed bind rejects with a ListenError naming it. */
  readonly portSetting?: PortSetting;
  /** A TCP connection with nothing to read for this long is closed (default 10 s, RFC 7766 §6.2.3). */
  readonly tcpIdleTimeoutMs?: number;
  /** A plausible, parsed query; `send` answers it once, over the transport it came on. */
  onRequest(request: DnsPacket, send: DnsSend): void;
  /** A message dropped without an answer: implausible, unparsable, or a bad TCP frame. */
  onMalformed(): void;
  /** Where socket errors are reported. */
  readonly log: Logger;
}

/**
 * UDP and TCP DNS bound to one address and port, with only plausible queries reaching
 * dns2's parser (see {@link plausibleQuery}). UDP keeps dns2's server for its answer
 * sizing (EDNS payload, TC bit) but not its 'message' listener; TCP is plain framing
 * (RFC 1035 §4.2.2 length prefix, RFC 7766 pipelining) with a cap on the length. Bound
 * only to `host` (dns2's combined server would bind TCP to every interface).
 */
export class DnsTransport {
  readonly #options: DnsTransportOptions;
  #udp: InstanceType<typeof dns2.UDPServer>;
  readonly #tcp: Server;
  readonly #connections = new Set<Socket>();
  #port = 0;

  constructor(options: DnsTransportOptions) {
    this.#options = options;
    this.#udp = this.#newUdp();
    // allowHalfOpen: a client that sends its query with end(frame) still gets the answer.
    this.#tcp = createServer({ allowHalfOpen: true }, (socket) => {
      this.#connections.add(socket);
      socket.on('close', () => this.#connections.delete(socket));
      serveTcpConnection(socket, options);
    });
    // A failed listen is start()'s to report (or retry); only errors of a listening server are logged here.
    this.#tcp.on('error', (error: Error) => {
      if (this.#tcp.listening) options.log.warn({ err: error }, 'DNS TCP server error');
    });
  }

  get port(): number {
    return this.#port;
  }

  /** Binds UDP and TCP on the same port (with port 0, TCP takes whatever UDP got, retrying on a clash). */
  async start(): Promise<number> {
    const { host, port, portSetting } = this.#options;
    try {
      return await this.#bind();
    } catch (error) {
      // Nothing stays bound: the UDP half may have succeeded before TCP failed.
      try {
        this.#udp.close();
      } catch {
        /* never bound */
      }
      throw portSetting ? listenError(error, { host, port: port === 0 ? this.#port : port }, portSetting) : error;
    }
  }

  async #bind(): Promise<number> {
    const { host, port } = this.#options;
    for (let attempt = 0; ; attempt++) {
      await new Promise<void>((resolve, reject) => {
        this.#udp.once('error', reject);
        this.#udp.bind(port, host, () => {
          this.#udp.off('error', reject);
          resolve();
        });
      });
      this.#port = this.#udp.address().port;
      try {
        await new Promise<void>((resolve, reject) => {
          this.#tcp.once('error', reject);
          this.#tcp.listen(this.#port, host, () => {
            this.#tcp.off('error', reject);
            resolve();
          });
        });
        return this.#port;
      } catch (error) {
        if (port !== 0 || attempt >= 5 || (error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
        // A dgram socket cannot be re-bound after close; take a fresh one.
        await new Promise<void>((resolve) => this.#udp.close(() => resolve()));
        this.#udp = this.#newUdp();
      }
    }
  }

  /** Stops both listeners and drops open TCP connections (an idle client would otherwise hold close up). */
  async close(): Promise<void> {
    const tcpClosed = new Promise<void>((resolve) => this.#tcp.close(() => resolve()));
    for (const socket of this.#connections) socket.destroy();
    await Promise.all([
      new Promise<void>((resolve) => {
        try {
          this.#udp.close(() => resolve());
        } catch {
          resolve(); // never bound, or already closed
        }
      }),
      tcpClosed,
    ]);
  }

  #newUdp(): InstanceType<typeof dns2.UDPServer> {
    const { onRequest, onMalformed, log } = this.#options;
    const udp = new dns2.UDPServer({ type: isIPv6(this.#options.host) ? 'udp6' : 'udp4' });
    udp.removeAllListeners('message');
    udp.on('message', (data: Buffer, rinfo: RemoteInfo) => {
      if (plausibleQuery(data)) udp.handle(data, rinfo);
      else onMalformed();
    });
    udp.on('request', (request, send) => {
      onRequest(request as unknown as DnsPacket, (response) => {
        // dns2's send rejects when the datagram cannot go out; nothing waits on it.
        send(response as dns2.Packet | Buffer).catch((error: unknown) => log.warn({ err: error }, 'DNS UDP answer not sent'));
      });
    });
    udp.on('requestError', () => onMalformed());
    udp.on('error', (error: Error) => log.warn({ err: error }, 'DNS UDP socket error'));
    return udp;
  }
}

function parseQuery(message: Buffer): DnsPacket | undefined {
  if (!plausibleQuery(message)) return undefined;
  try {
    return DnsPacket.parse(message);
  } catch {
    return undefined;
  }
}

/**
 * Length-prefixed queries on one connection, answered in any order. A bad frame (too
 * long, implausible, unparsable, cut short by the client) drops the connection.
 */
function serveTcpConnection(socket: Socket, options: DnsTransportOptions): void {
  let buffered: Buffer = Buffer.alloc(0);
  let unanswered = 0;
  let peerEnded = false;
  const drop = () => {
    options.onMalformed();
    socket.destroy();
  };
  socket.setTimeout(options.tcpIdleTimeoutMs ?? 10_000, () => socket.destroy());
  socket.on('error', () => socket.destroy());
  socket.on('end', () => {
    peerEnded = true;
    if (buffered.length > 0) drop();
    else if (unanswered === 0) socket.end();
  });
  socket.on('data', (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    while (buffered.length >= 2) {
      const length = buffered.readUInt16BE(0);
      if (length > maxMessageBytes) return drop();
      if (buffered.length < 2 + length) return;
      const request = parseQuery(buffered.subarray(2, 2 + length));
      buffered = buffered.subarray(2 + length);
      if (!request) return drop();
      unanswered++;
      let answered = false;
      options.onRequest(request, (response) => {
        if (answered) return;
        // Encoded before counting as answered: if this throws (over 64 KiB), the caller may still answer SERVFAIL.
        const body = Buffer.isBuffer(response) ? response : response.toBuffer();
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16BE(body.length);
        answered = true;
        unanswered--;
        if (socket.writable) socket.write(Buffer.concat([prefix, body]));
        if (peerEnded && unanswered === 0 && !socket.destroyed) socket.end();
      });
    }
  });
}
