import { isIPv4, isIPv6 } from 'node:net';
import { DnsPacket, DnsTransport, logger, parseMeshDnsName, type DnsQuestion, type DnsSend, type MeshDnsName } from '../mesh/index.js';
import { serviceKey, type CatalogCache, type StoredEndpoint } from './catalog-cache.js';
import type { ControllerMetrics } from './metrics.js';

/** One address a mesh name resolves to. */
export interface DnsTarget {
  readonly address: string;
  readonly port: number;
  /** 0 local endpoint, 1 same-region peer gateway, 2 other regions. */
  readonly priority: number;
  readonly weight: number;
}

export interface OperatorDnsOptions {
  readonly host: string;
  readonly port: number;
  readonly meshDomain: string;
  readonly cluster: string;
  readonly region: string;
  readonly ttlSeconds?: number;
  endpointHealthy(endpoint: StoredEndpoint): boolean;
}

/**
 * DNS for operators (dns2, UDP and TCP bound to one address): `<svc>.<ns>.svc.<domain>`
 * answers with the healthy local endpoints' addresses — or, when none is healthy here,
 * the gateways of healthy, non-stale imports — and `<svc>.<ns>.svc.<cluster>.<domain>`
 * with that cluster's. SRV names (`_<port-name>._tcp.<svc>…`, or the bare name) list
 * `address:port` with locality priority; the port is the endpoint sidecar's inbound
 * port or the peer gateway's port, where mesh traffic actually goes. Unknown mesh
 * names are NXDOMAIN; names outside the mesh domain are REFUSED (this is not a resolver).
 * Junk is dropped before dns2 parses it (the shared {@link DnsTransport}) and counted
 * with rcode `malformed`.
 */
export class OperatorDnsServer {
  readonly #transport: DnsTransport;
  readonly #log = logger('controller-dns');

  readonly #catalog: CatalogCache;
  readonly #options: OperatorDnsOptions;
  readonly #metrics: ControllerMetrics;

  constructor(
    catalog: CatalogCache,
    options: OperatorDnsOptions,
    metrics: ControllerMetrics,
  ) {
    this.#catalog = catalog;
    this.#options = options;
    this.#metrics = metrics;
    this.#transport = new DnsTransport({
      host: options.host,
      port: options.port,
      portSetting: { setting: 'controller.dns.port' },
      log: this.#log,
      onMalformed: () => this.#metrics.dnsQueries.inc({ rcode: 'malformed' }),
      onRequest: (request, send) => {
        try {
          this.#handle(request, send);
        } catch (error) {
          this.#log.warn({ err: (error as Error).message }, 'DNS query failed');
          this.#metrics.dnsQueries.inc({ rcode: 'SERVFAIL' });
          const response = DnsPacket.createResponseFromRequest(request);
          response.header.rcode = DnsPacket.RCODE.SERVFAIL;
          send(response);
        }
      },
    });
  }

  get port(): number {
    return this.#transport.port;
  }

  /** Binds UDP then TCP on the same port (port 0: TCP takes the port UDP got). */
  start(): Promise<number> {
    return this.#transport.start();
  }

  close(): Promise<void> {
    return this.#transport.close();
  }

  /** The targets a mesh name resolves to, best first; undefined for an unknown service. */
  resolve(name: MeshDnsName): DnsTarget[] | undefined {
    const key = serviceKey(name.namespace, name.service);
    const spec = this.#catalog.services.get(key)?.value;
    const imports = [...(this.#catalog.imports.get(key)?.values() ?? [])].map((v) => v.value).filter((i) => i.conflict === undefined);
    if (!spec && imports.length === 0) return undefined;
    const local: DnsTarget[] = [];
    if (spec && (name.cluster === undefined || name.cluster === this.#options.cluster)) {
      for (const e of this.#catalog.endpointsOf(key).values()) {
        if (this.#options.endpointHealthy(e)) local.push({ address: e.value.address, port: e.value.inboundPort, priority: 0, weight: 1 });
      }
    }
    if (name.cluster === this.#options.cluster || (name.cluster === undefined && local.length > 0)) return local;
    const remote: DnsTarget[] = [];
    for (const i of imports) {
      if (name.cluster !== undefined && i.peer !== name.cluster) continue;
      const healthy = i.healthy.reduce((n, h) => n + h.healthy, 0);
      if (i.stale || healthy === 0) continue;
      const priority = i.peerLocality.region === this.#options.region ? 1 : 2;
      for (const gw of i.gateways) remote.push({ address: gw.address, port: gw.port, priority, weight: healthy });
    }
    if (name.cluster !== undefined && !imports.some((i) => i.peer === name.cluster)) return undefined;
    return remote.sort((a, b) => a.priority - b.priority);
  }

  #handle(request: DnsPacket, send: DnsSend): void {
    const response = DnsPacket.createResponseFromRequest(request);
    const question = request.questions[0];
    const reply = (rcode: keyof typeof DnsPacket.RCODE) => {
      response.header.rcode = DnsPacket.RCODE[rcode];
      this.#metrics.dnsQueries.inc({ rcode });
      send(response);
    };
    if (!question) return reply('FORMERR');
    let match: ReturnType<typeof parseMeshDnsName>;
    try {
      match = parseMeshDnsName(question.name, this.#options.meshDomain);
    } catch {
      response.header.aa = 1;
      return reply('NXDOMAIN');
    }
    if (match.kind === 'outside') return reply('REFUSED');
    response.header.aa = 1;
    const targets = this.resolve(match.name);
    if (!targets) return reply('NXDOMAIN');
    const ttl = this.#options.ttlSeconds ?? 5;
    const addressRecord = (base: DnsQuestion, address: string): unknown | undefined => {
      if (isIPv4(address)) return DnsPacket.createResourceFromQuestion({ ...base, type: DnsPacket.TYPE.A }, { address, ttl });
      if (isIPv6(address)) return DnsPacket.createResourceFromQuestion({ ...base, type: DnsPacket.TYPE.AAAA }, { address, ttl });
      return undefined;
    };
    const wantsSrv = question.type === DnsPacket.TYPE.SRV || match.name.portName !== undefined;
    if (wantsSrv) {
      if (match.name.portName !== undefined) {
        const spec = this.#catalog.services.get(serviceKey(match.name.namespace, match.name.service))?.value;
        const imported = this.#catalog.imports.get(serviceKey(match.name.namespace, match.name.service))?.values().next().value?.value.service;
        const ports = (spec ?? imported)?.ports ?? [];
        if (!ports.some((p) => p.name === match.name.portName)) return reply('NXDOMAIN');
      }
      if (question.type !== DnsPacket.TYPE.SRV && question.type !== DnsPacket.TYPE.ANY) return reply('NOERROR');
      const seen = new Set<string>();
      for (const t of targets) {
        response.answers.push(DnsPacket.createResourceFromQuestion(question, { type: DnsPacket.TYPE.SRV, priority: t.priority, weight: t.weight, port: t.port, target: t.address, ttl }));
        if (!seen.has(t.address)) {
          seen.add(t.address);
          const extra = addressRecord({ name: t.address, type: DnsPacket.TYPE.A, class: DnsPacket.CLASS.IN }, t.address);
          if (extra) response.additionals.push(extra);
        }
      }
      return reply('NOERROR');
    }
    const seen = new Set<string>();
    for (const t of targets) {
      if (seen.has(t.address)) continue;
      seen.add(t.address);
      const family = isIPv4(t.address) ? DnsPacket.TYPE.A : isIPv6(t.address) ? DnsPacket.TYPE.AAAA : undefined;
      if (family === undefined) continue;
      if (question.type !== family && question.type !== DnsPacket.TYPE.ANY) continue;
      const record = addressRecord(question, t.address);
      if (record) response.answers.push(record);
    }
    return reply('NOERROR');
  }
}
