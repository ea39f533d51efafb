import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { Registry } from 'prom-client';
import { GatewayConfig, logger as moduleLogger, listenOn, missingNodeInternals, validate, ErrorCodes, type Logger, type Readiness } from '../mesh/index.js';
import { GatewayError, GatewayErrorCodes } from './errors.js';
import { HandleRelay, relayHandlesAvailable } from './handle-relay.js';
import { GatewayMetrics } from './metrics.js';
import type { PassthroughContext } from './connection-policy.js';
import { PassthroughConnection } from './passthrough.js';
import { RouteTable, TargetRegistry, type RouteTableSpec } from './route-table.js';

export type RelayKind = 'handles' | 'sockets';

export interface SniGatewayOptions extends Partial<GatewayConfig> {
  /**
   * How bytes are relayed: `handles` drives libuv TCP handles directly (fast; the default
   * where this Node exposes them), `sockets` uses `net.Socket` (portable, slower).
   */
  relay?: RelayKind;
  /** Bind with SO_REUSEPORT so several processes share the port (Linux; Node ≥ 22.12). */
  reusePort?: boolean;
  /** Where metrics register; a fresh registry by default. */
  registry?: Registry;
  logger?: Logger;
}

/** Route spec as sources produce it; the balancer defaults to the gateway's config. */
export type RouteSpecInput = Omit<RouteTableSpec, 'balancer'> & { balancer?: RouteTableSpec['balancer'] };

export interface DrainResult {
  /** Connections still open at the drain timeout, then closed. */
  readonly forced: number;
}

/**
 * The SNI passthrough listener. It never terminates TLS: it reads the ClientHello's
 * server name, routes it with the current {@link RouteTable}, and splices bytes.
 */
export class SniGateway {
  readonly config: GatewayConfig;
  readonly registry: Registry;
  readonly metrics: GatewayMetrics;
  readonly #log: Logger;
  readonly #targets = new TargetRegistry();
  readonly #ctx: PassthroughContext;
  readonly #server: Server;
  readonly #reusePort: boolean;
  readonly relayKind: RelayKind;
  #handleRelay: HandleRelay | undefined;
  #drainWaiters: (() => void)[] = [];
  #draining = false;
  #listening = false;
  #routesSyncedAt: Date | undefined;

  constructor(options: SniGatewayOptions = {}) {
    const { reusePort, registry, logger, relay, ...config } = options;
    this.relayKind = relay ?? (relayHandlesAvailable() ? 'handles' : 'sockets');
    if (this.relayKind === 'handles' && !relayHandlesAvailable()) {
      throw new GatewayError(
        GatewayErrorCodes.relayUnavailable,
        `relay "handles" needs Node internals that this Node (${process.version}) lacks: ${missingNodeInternals().join(', ')}; use relay "sockets"`,
      );
    }
    this.config = validate(GatewayConfig, config, 'gateway options', ErrorCodes.configInvalid);
    this.#reusePort = reusePort ?? false;
    this.registry = registry ?? new Registry();
    this.#log = logger ?? moduleLogger('gateway');
    this.metrics = new GatewayMetrics(this.registry, () => this.#ctx.table?.routeCount ?? 0, () => this.activeConnections, () => this.#ctx.table?.endpointsByHealth ?? { healthy: 0, unknown: 0, unhealthy: 0 });
    this.#ctx = {
      table: undefined,
      inspectTimeoutMs: this.config.inspectTimeoutMs,
      connectTimeoutMs: this.config.connectTimeoutMs,
      idleTimeoutMs: this.config.idleTimeoutMs,
      connectAttempts: this.config.connectAttempts,
      metrics: this.metrics,
      open: new Set(),
      log: this.#log,
      debug: this.#log.isLevelEnabled('debug'),
      onLastClosed: () => {
        if (!this.#draining) return;
        const waiters = this.#drainWaiters;
        this.#drainWaiters = [];
        for (const resolve of waiters) resolve();
      },
    };
    const ctx = this.#ctx;
    this.#server = createServer({ allowHalfOpen: true, noDelay: true }, (socket: Socket) => {
      new PassthroughConnection(ctx, socket);
    });
    this.#server.maxConnections = this.config.maxConnections;
    this.#server.on('drop', () => this.metrics.refuse('max-connections'));
    this.#server.on('error', (error) => this.#log.error({ err: error }, 'gateway listener error'));
  }

  /** Replaces the route table. Established connections keep their upstreams. */
  setRoutes(spec: RouteSpecInput): void {
    const table = new RouteTable({ ...spec, balancer: spec.balancer ?? this.config.balancer }, this.#targets, this.metrics.statsFor);
    this.#ctx.table = table;
    this.#targets.retain(table.targets);
    if (this.#routesSyncedAt === undefined) this.#log.info({ routes: table.routeCount }, 'first route sync applied');
    this.#routesSyncedAt = new Date();
  }

  get routes(): RouteTable | undefined {
    return this.#ctx.table;
  }

  /** Ready once listening with a first route table, and not draining. */
  readiness(): Readiness {
    const reasons: string[] = [];
    if (!this.#listening) reasons.push('listener not bound');
    if (this.#routesSyncedAt === undefined) reasons.push('no route sync yet');
    if (this.#draining) reasons.push('draining');
    return {
      ready: reasons.length === 0,
      reasons,
      details: { routes: this.#ctx.table?.routeCount ?? 0, activeConnections: this.activeConnections, relay: this.relayKind, routesSyncedAt: this.#routesSyncedAt?.toISOString() },
    };
  }

  get activeConnections(): number {
    return this.#ctx.open.size;
  }

  async listen(): Promise<AddressInfo> {
    await listenOn(this.#server, { host: this.config.host, port: this.config.port, reusePort: this.#reusePort, exclusive: true }, { setting: 'gateway.port', flag: '--port' });
    this.#listening = true;
    if (this.relayKind === 'handles') this.#handleRelay = new HandleRelay(this.#server, { ctx: this.#ctx, maxConnections: this.config.maxConnections });
    return this.address();
  }

  address(): AddressInfo {
    const address = this.#server.address();
    if (address === null || typeof address === 'string') throw new GatewayError(GatewayErrorCodes.notListening, 'the gateway is not listening; call listen() first');
    return address;
  }

  /**
   * Stops accepting, waits for open connections to finish (up to `timeoutMs`, default
   * the config's drainTimeoutMs), then closes the rest.
   */
  async drain(timeoutMs = this.config.drainTimeoutMs): Promise<DrainResult> {
    this.#draining = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    if (this.activeConnections > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => this.#drainWaiters.push(resolve)),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        }),
      ]);
      clearTimeout(timer);
    }
    const forced = this.activeConnections;
    for (const connection of [...this.#ctx.open]) connection.destroy();
    this.#handleRelay?.stop();
    await closed;
    this.#listening = false;
    return { forced };
  }

  /** Closes the listener and every connection now. */
  async close(): Promise<void> {
    await this.drain(0);
  }
}
