import type { Registry } from 'prom-client';
import { certificateIssuedAt } from '../ca/index.js';
import { tracerFor, type Tracer } from './tracing.js';
import { createMetricsRegistry, logger as moduleLogger, parseMeshDnsName, startObservabilityServer, type Logger, type ObservabilityServer, type Readiness, type Snapshot } from '../mesh/index.js';
import type { SidecarConfig } from './config.js';
import { InboundListener } from './inbound.js';
import { MeshDnsServer } from './mesh-dns.js';
import { reachOtherNetworks } from './network-routes.js';
import { SidecarMetrics } from './metrics.js';
import { OutboundProxy } from './outbound.js';
import { OutboundRangeClaim } from './outbound-range.js';
import type { SnapshotSource } from './snapshot-source.js';
import { WorkloadIdentity } from './workload-identity.js';

/** Something the sidecar starts after its listeners and stops first (certificate renewal, registration…). */
export interface SidecarPart {
  readonly name: string;
  /** Readiness reasons this part contributes (empty when it is fine). */
  readonly problems?: () => string[];
  start(sidecar: Sidecar): Promise<void> | void;
  close(): Promise<void> | void;
}

export interface SidecarOptions {
  readonly config: SidecarConfig;
  readonly snapshots: SnapshotSource;
  /** The workload identity; a certificate part (see certificate-manager.ts) fills it before listeners start. */
  readonly identity?: WorkloadIdentity;
  /** Runs before the listeners start, e.g. certificate bootstrap. */
  readonly bootstrap?: readonly SidecarPart[];
  /** Runs after the listeners are up, e.g. registration and health probing. */
  readonly parts?: readonly SidecarPart[];
  readonly registry?: Registry;
  readonly log?: Logger;
  /** Serve /healthz/ready and /metrics on the configured ports (default true). */
  readonly serveObservability?: boolean;
}

/**
 * One workload's sidecar: outbound loopback listeners and DNS for the app, the inbound
 * mTLS listener for peers, fed by a snapshot source and a workload identity.
 */
export class Sidecar {
  #tracer: Tracer | undefined;
  readonly config: SidecarConfig;
  readonly identity: WorkloadIdentity;
  readonly registry: Registry;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  readonly #options: SidecarOptions;
  #outbound: OutboundProxy | undefined;
  #inbound: InboundListener | undefined;
  #dns: MeshDnsServer | undefined;
  #range: OutboundRangeClaim | undefined;
  #observability: ObservabilityServer | undefined;
  #snapshot: Snapshot | undefined;
  #applying: Promise<void> = Promise.resolve();
  readonly #onSnapshot = (snapshot: Snapshot) => {
    this.#applying = this.#applying.then(() => this.#apply(reachOtherNetworks(snapshot, this.config)));
  };
  #started = false;
  #httpProxyPort = 0;

  constructor(options: SidecarOptions) {
    this.#options = options;
    this.config = options.config;
    this.identity = options.identity ?? new WorkloadIdentity();
    this.registry = options.registry ?? createMetricsRegistry('sidecar');
    this.metrics = new SidecarMetrics(this.registry);
    this.log = options.log ?? moduleLogger('sidecar', { workload: `${options.config.service}.${options.config.namespace}`, cluster: options.config.cluster });
    this.identity.on('change', this.#onIdentityChange);
    this.#onIdentityChange();
  }

  readonly #onIdentityChange = () => {
    const id = this.identity.spiffeId;
    const notAfter = this.identity.notAfter;
    if (!id || !notAfter) return;
    this.metrics.certificateExpiry.reset();
    this.metrics.certificateExpiry.set({ identity: id }, notAfter.getTime() / 1000);
    this.metrics.certificateIssued.reset();
    const notBefore = this.identity.notBefore;
    if (notBefore) this.metrics.certificateIssued.set({ identity: id }, certificateIssuedAt(notBefore, notAfter) / 1000);
    this.log.info({ identity: id, notAfter: notAfter.toISOString() }, 'serving workload certificate');
  };

  get snapshot(): Snapshot | undefined {
    return this.#snapshot;
  }

  get inboundPort(): number {
    return this.#inbound?.port ?? 0;
  }

  /** The outbound HTTP proxy's port (0 when `sidecar.httpProxy` is not configured). */
  get httpProxyPort(): number {
    return this.#httpProxyPort;
  }

  /** `<svc>.<ns>.svc[.<cluster>].<domain>` or `<svc>.<ns>` → the service (for the HTTP proxy). */
  #meshHost(hostname: string): { namespace: string; service: string; cluster: string | undefined } | undefined {
    try {
      const match = parseMeshDnsName(hostname, this.config.meshDomain);
      if (match.kind === 'mesh') return { namespace: match.name.namespace, service: match.name.service, cluster: match.name.cluster };
    } catch {
      return undefined;
    }
    const short = /^([a-z0-9-]+)\.([a-z0-9-]+)$/.exec(hostname.toLowerCase());
    return short ? { service: short[1]!, namespace: short[2]!, cluster: undefined } : undefined;
  }

  get dnsPort(): number {
    return this.#dns?.port ?? 0;
  }

  get observability(): ObservabilityServer | undefined {
    return this.#observability;
  }

  /** The outbound range this sidecar claimed (`sidecar.outboundRange`, resolved when `auto`). */
  get outboundRange(): string | undefined {
    return this.#range?.cidr;
  }

  get outbound(): OutboundProxy {
    if (!this.#outbound) throw new Error('sidecar not started');
    return this.#outbound;
  }

  /** A bootstrap or hosted part by name (e.g. `certificates`, `registration`). */
  part(name: string): SidecarPart | undefined {
    return [...(this.#options.bootstrap ?? []), ...(this.#options.parts ?? [])].find((p) => p.name === name);
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    if (!this.identity.ready) reasons.push('no workload certificate yet');
    if (!this.#snapshot) reasons.push('no snapshot from the controller yet');
    for (const part of [...(this.#options.bootstrap ?? []), ...(this.#options.parts ?? [])]) reasons.push(...(part.problems?.() ?? []));
    reasons.push(...(this.#outbound?.problems() ?? []));
    return {
      ready: reasons.length === 0,
      reasons,
      details: { snapshotVersion: this.#snapshot?.version, identity: this.identity.spiffeId, certificateExpiresAt: this.identity.notAfter?.toISOString(), outboundRange: this.#range?.cidr, dns: this.#dns ? `${this.config.sidecar.dns.host}:${this.#dns.port}` : undefined },
    };
  }

  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    try {
      await this.#start();
    } catch (error) {
      // Whatever did bind is released, so a failed start leaves nothing listening.
      await this.close().catch(() => {});
      throw error;
    }
  }

  async #start(): Promise<void> {
    const c = this.config;
    const t = c.sidecar;
    if (this.#options.serveObservability ?? true) {
      this.#observability = await startObservabilityServer({ host: c.observability.host, readyPort: c.observability.readyPort, metricsPort: c.observability.metricsPort, registry: this.registry, readiness: () => this.readiness() });
    }
    for (const part of this.#options.bootstrap ?? []) await part.start(this);
    this.#range = await OutboundRangeClaim.claim(t.outboundRange, `${c.namespace}/${c.service}/${c.advertiseAddress}:${c.inboundPort}`, this.log.child({ module: 'outbound-range' }));
    this.#tracer = tracerFor(t, c, this.metrics, this.log);
    this.#outbound = new OutboundProxy({
      tracer: this.#tracer,
      range: this.#range,
      tuning: t,
      identity: this.identity,
      metrics: this.metrics,
      log: this.log.child({ module: 'outbound' }),
      sourceCluster: c.cluster,
      sourceService: `${c.service}.${c.namespace}`,
      upstreams: c.upstreams,
    });
    await this.#outbound.startExplicit();
    if (t.httpProxy) {
      this.#httpProxyPort = await this.#outbound.startHttpProxy(t.httpProxy.host, t.httpProxy.port, (hostname) => this.#meshHost(hostname));
    }
    this.#dns = new MeshDnsServer({
      host: t.dns.host,
      port: c.dnsPort,
      meshDomain: c.meshDomain,
      ttlSeconds: t.dns.ttlSeconds,
      outside: t.dns.outside,
      upstream: t.dns.upstream,
      lookup: (ns, svc, cluster) => this.#outbound?.lookup(ns, svc, cluster),
      metrics: this.metrics,
      log: this.log.child({ module: 'dns' }),
    });
    await this.#dns.start();
    this.#inbound = new InboundListener({
      tuning: t,
      identity: this.identity,
      metrics: this.metrics,
      log: this.log.child({ module: 'inbound' }),
      cluster: c.cluster,
      namespace: c.namespace,
      service: c.service,
      labels: c.labels,
      ports: c.ports,
      mtlsMode: c.mtlsMode,
      host: t.inboundHost,
      port: c.inboundPort,
      tracer: this.#tracer,
      policies: () => this.#snapshot?.authorization ?? [],
      subsets: () => this.#snapshot?.services.find((s) => s.name === c.service && s.namespace === c.namespace)?.subsets,
    });
    await this.#inbound.start();
    this.#options.snapshots.on('snapshot', this.#onSnapshot);
    await this.#options.snapshots.start?.();
    const current = this.#options.snapshots.current;
    if (current && current !== this.#snapshot) this.#onSnapshot(current);
    await this.#applying;
    for (const part of this.#options.parts ?? []) await part.start(this);
    this.log.info({ inboundPort: this.inboundPort, dnsPort: this.dnsPort, outboundRange: this.#range.cidr, identity: this.identity.spiffeId }, 'sidecar started');
  }

  /** Resolves once the snapshots received so far are applied (listeners bound). */
  settled(): Promise<void> {
    return this.#applying;
  }

  async #apply(snapshot: Snapshot): Promise<void> {
    try {
      if (snapshot.trustBundle.length > 0) this.identity.setAdditionalRoots(snapshot.trustBundle);
      this.#snapshot = snapshot;
      await this.#outbound?.apply(snapshot);
      this.metrics.snapshots.inc({ result: 'applied' });
      this.log.debug({ version: snapshot.version, services: snapshot.services.length }, 'snapshot applied');
    } catch (error) {
      this.metrics.snapshots.inc({ result: 'failed' });
      this.log.error({ err: error, version: snapshot.version }, 'snapshot could not be applied');
    }
  }

  async close(): Promise<void> {
    this.identity.off('change', this.#onIdentityChange);
    this.#options.snapshots.off('snapshot', this.#onSnapshot);
    for (const part of [...(this.#options.parts ?? [])].reverse()) await part.close();
    await this.#options.snapshots.close?.();
    await Promise.all([this.#inbound?.close(), this.#outbound?.close(), this.#dns?.close()]);
    await this.#tracer?.close();
    await this.#range?.close();
    for (const part of [...(this.#options.bootstrap ?? [])].reverse()) await part.close();
    await this.#observability?.close();
  }
}

