import { createSocket } from 'node:dgram';
import { getServers } from 'node:dns';
import { DnsPacket, DnsTransport, formatMeshDnsName, parseMeshDnsName, type DnsSend, type Logger, type ServicePort } from '../mesh/index.js';
import type { SidecarMetrics } from './metrics.js';

// The guard lived here before it moved to mesh/; kept so existing imports keep working.
export { plausibleQuery } from '../mesh/index.js';

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

/**
 * The sidecar's DNS (15053): answers `<svc>.<ns>.svc.<domain>` and
 * `<svc>.<ns>.svc.<cluster>.<domain>` with the loopback address the sidecar listens on
 * for that service (A, SRV with the service's ports; AAAA gets an empty answer), NXDOMAIN
 * for unknown mesh names, and forwards or refuses the rest. UDP and TCP on the shared
 * {@link DnsTransport}, so junk is dropped (counted `malformed`) before dns2 parses it.
 */
export class MeshDnsServer {
  readonly #options: MeshDnsOptions;
  readonly #transport: DnsTransport;

  constructor(options: MeshDnsOptions) {
    this.#options = options;
    this.#transport = new DnsTransport({
      host: options.host,
      port: options.port,
      portSetting: { setting: 'dnsPort' },
      log: options.log,
      onMalformed: () => options.metrics.dnsQueries.inc({ result: 'malformed' }),
      onRequest: (request, send) => {
        this.#handle(request, send).catch((error: unknown) => {
          options.metrics.dnsQueries.inc({ result: 'error' });
          options.log.warn({ err: error }, 'DNS query failed');
          try {
            const response = DnsPacket.createResponseFromRequest(request);
            response.header.rcode = DnsPacket.RCODE.SERVFAIL;
            send(response);
          } catch {
            /* a request too broken to answer is dropped */
          }
        });
      },
    });
  }

  get port(): number {
    return this.#transport.port;
  }

  /** Binds UDP and TCP on the same port (with port 0, TCP takes whatever UDP got, retrying on a clash). */
  start(): Promise<number> {
    return this.#transport.start();
  }

  close(): Promise<void> {
    return this.#transport.close();
  }

  async #handle(request: DnsPacket, send: DnsSend): Promise<void> {
    const question = request.questions[0];
    const response = DnsPacket.createResponseFromRequest(request);
    response.header.ra = 1;
    if (!question) {
      response.header.rcode = DnsPacket.RCODE.FORMERR;
      return send(response);
    }
    let match: ReturnType<typeof parseMeshDnsName>;
    try {
      match = parseMeshDnsName(question.name, this.#options.meshDomain);
    } catch {
      // Inside the mesh domain but not our grammar: no such name.
      this.#options.metrics.dnsQueries.inc({ result: 'nxdomain' });
      response.header.rcode = DnsPacket.RCODE.NXDOMAIN;
      response.header.aa = 1;
      return send(response);
    }
    if (match.kind === 'outside') {
      if (this.#options.outside === 'refuse') {
        this.#options.metrics.dnsQueries.inc({ result: 'refused' });
        response.header.rcode = DnsPacket.RCODE.REFUSED;
        return send(response);
      }
      const forwarded = await this.#forward(request);
      this.#options.metrics.dnsQueries.inc({ result: forwarded ? 'forwarded' : 'forward_failed' });
      if (forwarded) return send(forwarded);
      response.header.rcode = DnsPacket.RCODE.SERVFAIL;
      return send(response);
    }
    const name = match.name;
    const found = this.#options.lookup(name.namespace, name.service, name.cluster);
    const ports = found?.ports.filter((p) => name.portName === undefined || p.name === name.portName) ?? [];
    response.header.aa = 1;
    if (!found || ports.length === 0) {
      this.#options.metrics.dnsQueries.inc({ result: 'nxdomain' });
      response.header.rcode = DnsPacket.RCODE.NXDOMAIN;
      return send(response);
    }
    const ttl = this.#options.ttlSeconds;
    const aRecord = (qname: string) => DnsPacket.createResourceFromQuestion({ name: qname, type: DnsPacket.TYPE.A, class: DnsPacket.CLASS.IN }, { ttl, address: found.address });
    if (question.type === DnsPacket.TYPE.A || question.type === DnsPacket.TYPE.ANY) {
      response.answers.push(aRecord(question.name));
    } else if (question.type === DnsPacket.TYPE.SRV) {
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
 * Appends SRV answers by hand: RFC 2782 forbids name compression in the target, newer
 * c-ares (Node 24) rejects a compressed one, and dns2 always compresses.
 */
function withSrvAnswers(response: DnsPacket, ports: number[], target: string, ttl: number): Buffer {
  const base = response.toBuffer();
  const targetBytes = Buffer.concat([...target.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')])), Buffer.from([0])]);
  const answers = ports.map((port) => {
    const rr = Buffer.alloc(12 + 6);
    rr.writeUInt16BE(0xc00c, 0); // the question's name, at offset 12
    rr.writeUInt16BE(DnsPacket.TYPE.SRV, 2);
    rr.writeUInt16BE(DnsPacket.CLASS.IN, 4);
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

