import { createSocket } from 'node:dgram';
import { getServers } from 'node:dns';
import type { Socket } from 'node:net';
import dns2 from 'dns2';
import { formatMeshDnsName, parseMeshDnsName, type Logger, type ServicePort } from '../mesh/index.js';
import type { SidecarMetrics } from './metrics.js';

const { Packet, UDPServer, TCPServer } = dns2;

/** What the DNS server asks the outbound side: the loopback address of a (possibly cluster-pinned) service. */
export type ServiceLookup = (namespace: string, service: string, cluster?: string) => { address: string; ports: readonly ServicePort[] } | undefined;

export interface MeshDnsOptions {
  host: string;
  port: number;
  meshDomain: string;
  ttlSeconds: number;
  outside: 'forward' | 'refuse';
  /** `host:port` of the resolver for names outside the mesh (default: the host's first resolver). */
  upstream?: string | undefined;
  lookup: ServiceLookup;
  metrics: SidecarMetrics;
  log: Logger;
}

// dns2's typings lack most of the packet model; this is the part we use.
interface Question {
  name: string;
  type: number;
  class: number;
}
interface DnsPacket {
  header: { id: number; rcode: number; aa: number; ra: number; rd: number };
  questions: Question[];
  answers: unknown[];
  additionals: unknown[];
  toBuffer(): Buffer;
}
type Send = (response: DnsPacket | Buffer) => void;
const P = Packet as unknown as {
  TYPE: Record<string, number>;
  CLASS: Record<string, number>;
  RCODE: Record<string, number>;
  createResponseFromRequest(request: DnsPacket): DnsPacket;
  createResourceFromQuestion(base: Question, record: Record<string, unknown>): unknown;
  parse(buffer: Buffer): DnsPacket;
};

/**
 * The sidecar's DNS (15053): answers `<svc>.<ns>.svc.<domain>` and
 * `<svc>.<ns>.svc.<cluster>.<domain>` with the loopback address the sidecar listens on
 * for that service (A, SRV with the service's ports; AAAA gets an empty answer), NXDOMAIN
 * for unknown mesh names, and forwards or refuses the rest. UDP and TCP, bound only to
 * the configured address (dns2's combined server would bind TCP to every interface).
 */
export class MeshDnsServer {
  readonly #options: MeshDnsOptions;
  #udp: InstanceType<typeof UDPServer>;
  readonly #newUdp: () => InstanceType<typeof UDPServer>;
  readonly #tcp: InstanceType<typeof TCPServer>;
  #port = 0;

  constructor(options: MeshDnsOptions) {
    this.#options = options;
    const handle = (request: unknown, send: unknown) => {
      this.#handle(request as DnsPacket, send as Send).catch((error: unknown) => {
        options.metrics.dnsQueries.inc({ result: 'error' });
        options.log.warn({ err: error }, 'DNS query failed');
        try {
          const response = P.createResponseFromRequest(request as DnsPacket);
          response.header.rcode = P.RCODE.SERVFAIL!;
          (send as Send)(response);
        } catch {
          /* a request too broken to answer is dropped */
        }
      });
    };
    this.#newUdp = () => {
      const udp = new UDPServer({ type: 'udp4' });
      // dns2 parses whatever arrives, and some junk makes its parser spin for seconds
      // (4 KiB of 0xff: ~13 s with the event loop blocked). Only plausible queries reach it.
      const parse = (UDPServer.prototype as unknown as { handle: (data: Buffer, rinfo: unknown) => void }).handle;
      udp.removeAllListeners('message');
      udp.on('message', (data: Buffer, rinfo: unknown) => {
        if (plausibleQuery(data)) parse.call(udp, data, rinfo);
        else options.metrics.dnsQueries.inc({ result: 'malformed' });
      });
      udp.on('request', handle);
      udp.on('requestError', () => options.metrics.dnsQueries.inc({ result: 'malformed' }));
      udp.on('error', (error: Error) => options.log.warn({ err: error }, 'DNS UDP socket error'));
      return udp;
    };
    this.#udp = this.#newUdp();
    this.#tcp = new TCPServer();
    // Same guard for TCP: our own framing (RFC 1035 §4.2.2 length prefix) in front of dns2's parser.
    this.#tcp.removeAllListeners('connection');
    this.#tcp.on('connection', (socket: Socket) => readTcpQueries(socket, options, handle));
    this.#tcp.on('request', handle);
    this.#tcp.on('requestError', () => options.metrics.dnsQueries.inc({ result: 'malformed' }));
    this.#tcp.on('error', (error: Error) => options.log.warn({ err: error }, 'DNS TCP server error'));
  }

  get port(): number {
    return this.#port;
  }

  /** Binds UDP and TCP on the same port (with port 0, TCP takes whatever UDP got, retrying on a clash). */
  async start(): Promise<number> {
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

  async close(): Promise<void> {
    await Promise.all([
      new Promise<void>((resolve) => {
        try {
          this.#udp.close(() => resolve());
        } catch {
          resolve();
        }
      }),
      new Promise<void>((resolve) => this.#tcp.close(() => resolve())),
    ]);
  }

  async #handle(request: DnsPacket, send: Send): Promise<void> {
    const question = request.questions[0];
    const response = P.createResponseFromRequest(request);
    response.header.ra = 1;
    if (!question) {
      response.header.rcode = P.RCODE.FORMERR!;
      return send(response);
    }
    let match: ReturnType<typeof parseMeshDnsName>;
    try {
      match = parseMeshDnsName(question.name, this.#options.meshDomain);
    } catch {
      // Inside the mesh domain but not our grammar: no such name.
      this.#options.metrics.dnsQueries.inc({ result: 'nxdomain' });
      response.header.rcode = P.RCODE.NXDOMAIN!;
      response.header.aa = 1;
      return send(response);
    }
    if (match.kind === 'outside') {
      if (this.#options.outside === 'refuse') {
        this.#options.metrics.dnsQueries.inc({ result: 'refused' });
        response.header.rcode = P.RCODE.REFUSED!;
        return send(response);
      }
      const forwarded = await this.#forward(request);
      this.#options.metrics.dnsQueries.inc({ result: forwarded ? 'forwarded' : 'forward_failed' });
      if (forwarded) return send(forwarded);
      response.header.rcode = P.RCODE.SERVFAIL!;
      return send(response);
    }
    const name = match.name;
    const found = this.#options.lookup(name.namespace, name.service, name.cluster);
    const ports = found?.ports.filter((p) => name.portName === undefined || p.name === name.portName) ?? [];
    response.header.aa = 1;
    if (!found || ports.length === 0) {
      this.#options.metrics.dnsQueries.inc({ result: 'nxdomain' });
      response.header.rcode = P.RCODE.NXDOMAIN!;
      return send(response);
    }
    const ttl = this.#options.ttlSeconds;
    const aRecord = (qname: string) => P.createResourceFromQuestion({ name: qname, type: P.TYPE.A!, class: P.CLASS.IN! }, { ttl, address: found.address });
    if (question.type === P.TYPE.A || question.type === P.TYPE.ANY) {
      response.answers.push(aRecord(question.name));
    } else if (question.type === P.TYPE.SRV) {
      const host = formatMeshDnsName({ service: name.service, namespace: name.namespace, cluster: name.cluster }, this.#options.meshDomain);
      this.#options.metrics.dnsQueries.inc({ result: 'mesh' });
      return send(withSrvAnswers(response, ports.map((p) => p.port), host, ttl));
    }
    // AAAA and other types: the name exists but has no such record (NOERROR, no answers).
    this.#options.metrics.dnsQueries.inc({ result: 'mesh' });
    send(response);
  }

  /** Relays the query, as received, to the upstream resolver over UDP; undefined on timeout or error. */
  #forward(request: DnsPacket): Promise<Buffer | undefined> {
    const upstream = this.#options.upstream ?? defaultUpstream();
    if (!upstream) return Promise.resolve(undefined);
    const colon = upstream.lastIndexOf(':');
    const host = upstream.slice(0, colon);
    const port = Number(upstream.slice(colon + 1));
    return new Promise((resolve) => {
      const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
      const timer = setTimeout(() => finish(undefined), 2_000);
      const finish = (value: Buffer | undefined) => {
        clearTimeout(timer);
        try {
          socket.close();
        } catch {
          /* already closed */
        }
        resolve(value);
      };
      socket.on('error', () => finish(undefined));
      socket.on('message', (message: Buffer) => {
        if (message.length >= 2 && message.readUInt16BE(0) === (request.header.id & 0xffff)) finish(message);
      });
      socket.send(request.toBuffer(), port, host, (error) => {
        if (error) finish(undefined);
      });
    });
  }
}

/**
 * A DNS message worth parsing: a query (QR=0) with exactly one question whose name is
 * made of in-bounds, uncompressed labels, no answer or authority records and at most one
 * additional (EDNS OPT). Anything else is dropped before dns2 sees it.
 */
export function plausibleQuery(data: Buffer): boolean {
  if (data.length < 17 || data.length > 4096) return false;
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

/** Length-prefixed queries over one TCP connection, each checked by {@link plausibleQuery} before parsing. */
function readTcpQueries(socket: Socket, options: MeshDnsOptions, handle: (request: unknown, send: unknown) => void): void {
  let buffered = Buffer.alloc(0);
  socket.setTimeout(10_000, () => socket.destroy());
  socket.on('error', () => socket.destroy());
  const send = (response: DnsPacket | Buffer) => {
    const body = Buffer.isBuffer(response) ? response : (response as DnsPacket).toBuffer();
    const length = Buffer.alloc(2);
    length.writeUInt16BE(body.length);
    if (socket.writable) socket.write(Buffer.concat([length, body]));
  };
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 2) {
      const length = buffered.readUInt16BE(0);
      if (length > 4096) {
        options.metrics.dnsQueries.inc({ result: 'malformed' });
        socket.destroy();
        return;
      }
      if (buffered.length < 2 + length) return;
      const message = buffered.subarray(2, 2 + length);
      buffered = buffered.subarray(2 + length);
      if (!plausibleQuery(message)) {
        options.metrics.dnsQueries.inc({ result: 'malformed' });
        socket.destroy();
        return;
      }
      let request: DnsPacket;
      try {
        request = P.parse(message);
      } catch {
        options.metrics.dnsQueries.inc({ result: 'malformed' });
        socket.destroy();
        return;
      }
      handle(request, send);
    }
  });
}

/**
 * Appends SRV answers by hand: RFC 2782 forbids name compression in the target, newer
 * c-ares (Node 24) rejects a compressed one, and dns2 always compresses.
 */
function withSrvAnswers(response: DnsPacket, ports: number[], target: string, ttl: number): Buffer {
  const base = response.toBuffer();
  const targetBytes = Buffer.concat([...target.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])), Buffer.from([0])]);
  const answers = ports.map((port) => {
    const rr = Buffer.alloc(12 + 6);
    rr.writeUInt16BE(0xc00c, 0); // the question's name, at offset 12
    rr.writeUInt16BE(P.TYPE.SRV!, 2);
    rr.writeUInt16BE(P.CLASS.IN!, 4);
    rr.writeUInt32BE(ttl, 6);
    rr.writeUInt16BE(6 + targetBytes.length, 10);
    rr.writeUInt16BE(0, 12); // priority
    rr.writeUInt16BE(1, 14); // weight
    rr.writeUInt16BE(port, 16);
    return Buffer.concat([rr, targetBytes]);
  });
  const out = Buffer.concat([base, ...answers]);
  out.writeUInt16BE(answers.length, 6);
  return out;
}

function defaultUpstream(): string | undefined {
  const first = getServers()[0];
  if (!first) return undefined;
  // getServers() gives `1.2.3.4`, `1.2.3.4:53`, `::1` or `[::1]:53`.
  if (first.startsWith('[')) return first.replace(/^\[(.*)\](?::(\d+))?$/, (_m, h: string, p?: string) => `${h}:${p ?? 53}`);
  if (first.includes(':') && first.split(':').length > 2) return `${first}:53`;
  return first.includes(':') ? first : `${first}:53`;
}

