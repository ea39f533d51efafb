import type { Server as TcpServer } from 'node:net';
import type { Logger, ServicePort, Snapshot } from '../mesh/index.js';
import { LoopbackAddressAllocator } from './address-allocator.js';
import type { H2Outbound } from './h2-outbound.js';
import type { HttpOutbound } from './http-outbound.js';
import type { OutboundRangeClaim } from './outbound-range.js';
import { outboundListenerSpec, serviceKey, type OutboundListenerSpec, type RequestPolicy } from './request-policy.js';
import type { TcpOutbound } from './tcp-outbound.js';

/** How often listeners that could not bind are tried again. */
const REBIND_INTERVAL_MS = 5_000;

export interface ExplicitUpstream {
  readonly service: string;
  readonly port: number;
  readonly localPort: number;
  readonly localAddress: string;
}

export interface OutboundListenersDeps {
  readonly log: Logger;
  readonly upstreams: readonly ExplicitUpstream[];
  /** The claimed outbound range service addresses come from (see outbound-range.ts). */
  readonly range: OutboundRangeClaim;
  /** Routes and protocols of the snapshot's services. */
  readonly policy: RequestPolicy;
  readonly http: HttpOutbound;
  readonly h2: H2Outbound;
  readonly tcp: TcpOutbound;
}

/** One bound (or binding) listener; `spec` is updated in place when a snapshot changes what it stands for. */
interface Listener {
  spec: OutboundListenerSpec;
  readonly server: TcpServer;
  readonly protocol: 'http' | 'h2' | 'tcp';
  bound: boolean;
}

function listenerKey(address: string, port: number): string {
  return `${address}:${port}`;
}

/**
 * The app-facing listeners, per snapshot: a loopback address from the claimed outbound
 * range per mesh service (and per service pinned to a cluster) with a listener on each
 * of its ports, plus the explicit upstreams (proxy/README.md "Outbound: names, addresses,
 * targets"). A listener of an HTTP port is served by {@link HttpOutbound}, of an
 * `http2`/`grpc` port by {@link H2Outbound}, of any other port by {@link TcpOutbound}. A listener that cannot bind keeps the sidecar not ready
 * and is tried again every {@link REBIND_INTERVAL_MS}.
 */
export class OutboundListeners {
  readonly #deps: OutboundListenersDeps;
  readonly #allocator: LoopbackAddressAllocator;
  readonly #listeners = new Map<string, Listener>();
  /**
   * Listeners the last reconcile wanted but could not bind, with the reason: the sidecar
   * is not ready while any is here, and DNS answers none of their addresses.
   */
  readonly #unbound = new Map<string, { spec: OutboundListenerSpec; reason: string }>();
  #rebindTimer: NodeJS.Timeout | undefined;
  #wanted = new Map<string, OutboundListenerSpec>();
  #reconciling: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(deps: OutboundListenersDeps) {
    this.#deps = deps;
    this.#allocator = new LoopbackAddressAllocator(deps.range.cidr);
  }

  /** The loopback address of a service (optionally pinned to a cluster), if the snapshot has it. */
  lookup(namespace: string, service: string, cluster?: string): { address: string; ports: readonly ServicePort[] } | undefined {
    const svc = this.#deps.policy.service(namespace, service);
    if (!svc || svc.ports.length === 0) return undefined;
    if (cluster !== undefined && !svc.targets.some((t) => t.cluster === cluster)) return undefined;
    const address = this.#allocator.lookup(cluster ? `${serviceKey(namespace, service)}@${cluster}` : serviceKey(namespace, service));
    if (!address) return undefined;
    // Never hand out an address whose listeners this sidecar does not hold: another
    // process there would receive the app's traffic (and send it with its identity).
    for (const p of svc.ports) if (!this.#listeners.get(listenerKey(address, p.port))?.bound) return undefined;
    return { address, ports: svc.ports };
  }

  /** Readiness reasons: outbound listeners that could not bind, naming the setting to change. */
  problems(): string[] {
    return [...this.#unbound.values()].map(({ spec, reason }) => `outbound listener ${spec.address}:${spec.port} for ${spec.service}.${spec.namespace} is not bound: ${reason}`);
  }

  specs(): OutboundListenerSpec[] {
    return [...this.#listeners.values()].map((l) => l.spec);
  }

  /** The listeners a snapshot wants (its routes must already be in the request policy): new ones open, vanished ones close. */
  apply(snapshot: Snapshot): Promise<void> {
    const wanted = new Map<string, OutboundListenerSpec>();
    for (const svc of snapshot.services) {
      const keys: [string, string | undefined][] = [[serviceKey(svc.namespace, svc.name), undefined]];
      for (const cluster of new Set(svc.targets.map((t) => t.cluster))) keys.push([`${serviceKey(svc.namespace, svc.name)}@${cluster}`, cluster]);
      for (const [key, pinnedCluster] of keys) {
        let address: string;
        try {
          address = this.#allocator.addressFor(key);
        } catch (error) {
          this.#deps.log.error({ err: error, service: key }, 'no outbound address for service');
          continue;
        }
        for (const p of svc.ports) wanted.set(listenerKey(address, p.port), outboundListenerSpec(address, p.port, svc.namespace, svc.name, p.port, pinnedCluster, false));
      }
    }
    this.#addExplicit(wanted);
    return this.#reconcile(wanted);
  }

  /** Opens the explicit upstream listeners before any snapshot, so apps can connect early (they wait for a route). */
  startExplicit(): Promise<void> {
    const wanted = new Map<string, OutboundListenerSpec>();
    this.#addExplicit(wanted);
    for (const [key, l] of this.#listeners) if (!wanted.has(key)) wanted.set(key, l.spec);
    return this.#reconcile(wanted);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#rebindTimer);
    const closing = [...this.#listeners.values()].map((l) => new Promise<void>((resolve) => l.server.close(() => resolve())));
    this.#listeners.clear();
    await Promise.all(closing);
  }

  #addExplicit(wanted: Map<string, OutboundListenerSpec>): void {
    for (const up of this.#deps.upstreams) {
      const [service = '', namespace = ''] = up.service.split('.');
      wanted.set(listenerKey(up.localAddress, up.localPort), outboundListenerSpec(up.localAddress, up.localPort, namespace, service, up.port, undefined, true));
    }
  }

  /** Reconciles one at a time: a rebind tick and a snapshot must not both open the same listener. */
  #reconcile(wanted: Map<string, OutboundListenerSpec>): Promise<void> {
    const run = this.#reconciling.then(() => this.#reconcileNow(wanted));
    this.#reconciling = run.catch(() => {});
    return run;
  }

  async #reconcileNow(wanted: Map<string, OutboundListenerSpec>): Promise<void> {
    const policy = this.#deps.policy;
    this.#wanted = wanted;
    for (const [key, current] of this.#listeners) {
      const next = wanted.get(key);
      const protocol = next ? policy.protocolOf(next) : undefined;
      if (!next || protocol !== current.protocol || next.service !== current.spec.service || next.namespace !== current.spec.namespace) {
        // Stop accepting; connections already open finish normally.
        current.server.close();
        this.#listeners.delete(key);
      } else {
        current.spec = next;
      }
    }
    for (const key of this.#unbound.keys()) if (!wanted.has(key)) this.#unbound.delete(key);
    // Addresses from the range must lie in a /24 this sidecar holds; explicit upstreams are the user's own choice.
    const refused = await this.#deps.range.ensureClaimed([...wanted.values()].filter((spec) => !spec.explicit).map((spec) => spec.address));
    const opening: Promise<void>[] = [];
    for (const [key, spec] of wanted) {
      if (this.#listeners.has(key) || this.#closed) continue;
      const blocked = spec.explicit ? undefined : refused.get(spec.address);
      if (blocked) {
        this.#unbound.set(key, { spec, reason: blocked });
        continue;
      }
      opening.push(this.#open(key, spec));
    }
    await Promise.all(opening);
    this.#scheduleRebind();
  }

  /** Opens one listener; resolves once it is bound or has failed to bind (then it is in #unbound). */
  #open(key: string, spec: OutboundListenerSpec): Promise<void> {
    const protocol = this.#deps.policy.protocolOf(spec);
    // The servers read what the listener at this address stands for per connection or request.
    const listeners = this.#listeners;
    const binding = {
      get spec(): OutboundListenerSpec | undefined {
        return listeners.get(key)?.spec;
      },
    };
    const server = protocol === 'http' ? this.#deps.http.server(binding) : protocol === 'h2' ? this.#deps.h2.server(binding) : this.#deps.tcp.server(binding);
    const entry: Listener = { spec, server, protocol, bound: false };
    this.#listeners.set(key, entry);
    return new Promise<void>((resolve) => {
      server.once('error', (error: NodeJS.ErrnoException) => {
        const setting = spec.explicit ? 'upstreams[].localAddress/localPort' : 'sidecar.outboundRange';
        const reason = `${error.code ?? 'error'}: ${error.message} (another process on this host holds ${spec.address}:${spec.port}; change ${setting}${spec.explicit ? '' : ' or stop the program listening on that port on every address'})`;
        if (!this.#unbound.has(key)) this.#deps.log.error({ err: error, address: spec.address, port: spec.port, service: spec.serviceLabel }, 'outbound listener failed to bind; the sidecar is not ready until it does');
        this.#unbound.set(key, { spec, reason });
        if (this.#listeners.get(key) === entry) this.#listeners.delete(key);
        resolve();
      });
      server.listen({ host: spec.address, port: spec.port }, () => {
        entry.bound = true;
        this.#unbound.delete(key);
        resolve();
      });
    });
  }

  /** While some listener could not bind, tries again now and then: the other holder may go away. */
  #scheduleRebind(): void {
    if (this.#unbound.size === 0 || this.#closed || this.#rebindTimer) return;
    this.#rebindTimer = setTimeout(() => {
      this.#rebindTimer = undefined;
      if (this.#closed || this.#unbound.size === 0) return;
      void this.#reconcile(new Map(this.#wanted)).catch((error: unknown) => this.#deps.log.warn({ err: error }, 'rebinding outbound listeners failed'));
    }, REBIND_INTERVAL_MS);
    this.#rebindTimer.unref();
  }
}
