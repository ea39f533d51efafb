import { connect, type Socket } from 'node:net';
import type { Logger } from '../mesh/index.js';
import { ClientHelloReader } from './client-hello.js';
import type { GatewayMetrics } from './metrics.js';
import type { Route, RouteTable, UpstreamTarget } from './route-table.js';

/**
 * One client connection through the gateway on `net.Socket` streams — the portable relay
 * (`relay: 'sockets'`), used where Node lacks the TCP handle bindings that the default
 * relay in handle-relay.ts drives. Same behaviour: read the ClientHello, pick an
 * upstream, replay the bytes, then splice both directions until both sides are done.
 *
 * Event handlers are module-level functions that find their connection through a symbol
 * on the socket (no closures per connection), relaying is a plain data/drain loop (no
 * pipe(), no pipeline(), no promises), counters are plain numbers, and nothing is logged
 * unless debug is on. Even so the streams machinery costs about twice HAProxy's CPU per
 * connection, which is why it is not the default.
 */

/** What every connection of one gateway shares. */
export interface PassthroughContext {
  table: RouteTable | undefined;
  readonly inspectTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly connectAttempts: number;
  readonly metrics: GatewayMetrics;
  readonly open: Set<PassthroughConnection>;
  readonly log: Logger;
  readonly debug: boolean;
  /** Called when a connection finishes and none is left open (drain waits on it). */
  readonly onLastClosed: () => void;
}

/**
 * Feeds a chunk of a connection's first bytes to its ClientHello reader and, once the
 * hello is complete, routes its server name (kept on `named`). Returns undefined while
 * more bytes are needed, else the route or the refusal reason. Both relays use it.
 */
export function routeHello(ctx: PassthroughContext, reader: ClientHelloReader, chunk: Buffer, acceptedAt: number, named: { serverName: string | undefined }): Route | string | undefined {
  const outcome = reader.push(chunk);
  if (outcome === undefined) return undefined;
  ctx.metrics.helloWait.observe((performance.now() - acceptedAt) / 1000);
  if (!outcome.ok) return outcome.reason;
  named.serverName = outcome.serverName;
  if (ctx.table === undefined) return 'no-routes';
  return ctx.table.resolve(outcome.serverName);
}

const INSPECTING = 0;
const CONNECTING = 1;
/** Connected and the hello replayed; the client stays paused until the first byte comes back, so a retry can replay again. */
const AWAITING_FIRST_BYTE = 2;
const SPLICED = 3;
const REFUSED = 4;

const kConnection = Symbol('causeway.gateway.connection');
type GatewaySocket = Socket & { [kConnection]: PassthroughConnection };

export class PassthroughConnection {
  state = INSPECTING;
  upstream: GatewaySocket | undefined = undefined;
  private reader: ClientHelloReader | undefined = new ClientHelloReader();
  /** Client bytes to replay to an upstream, kept until the upstream answers. */
  private replay: Buffer | undefined = undefined;
  route: Route | undefined = undefined;
  target: UpstreamTarget | undefined = undefined;
  private tried: UpstreamTarget[] | undefined = undefined;
  private readonly acceptedAt = performance.now();
  private connectStartedAt = 0;
  bytesUp = 0;
  bytesDown = 0;
  private clientClosed = false;
  private errored = false;
  serverName: string | undefined = undefined;

  constructor(
    private readonly ctx: PassthroughContext,
    readonly client: Socket,
  ) {
    const socket = client as GatewaySocket;
    socket[kConnection] = this;
    socket.on('data', onClientData);
    socket.on('end', onClientEnd);
    socket.on('drain', onClientDrain);
    socket.on('error', onSocketError);
    socket.on('close', onClientClose);
    socket.on('timeout', onClientTimeout);
    socket.setTimeout(ctx.inspectTimeoutMs);
    ctx.open.add(this);
    ctx.metrics.active++;
  }

  inspect(chunk: Buffer): void {
    const route = routeHello(this.ctx, this.reader!, chunk, this.acceptedAt, this);
    if (route === undefined) return;
    if (typeof route === 'string') return this.refuse(route);
    this.route = route;
    this.replay = this.reader!.wireBytes;
    this.reader = undefined;
    this.client.pause();
    this.client.setTimeout(this.ctx.idleTimeoutMs);
    this.connectUpstream();
  }

  /** Client bytes that arrived while no upstream was answering yet; replayed with the hello. */
  holdEarly(chunk: Buffer): void {
    this.replay = this.replay === undefined ? chunk : Buffer.concat([this.replay, chunk]);
    if (this.state === AWAITING_FIRST_BYTE) this.upstream!.write(chunk);
  }

  private connectUpstream(): void {
    const target = this.route!.pool.pick(this.tried);
    if (target === undefined) return this.failUpstream();
    this.target = target;
    this.state = CONNECTING;
    this.connectStartedAt = performance.now();
    target.active++;
    const upstream = connect({ host: target.address, port: target.port, allowHalfOpen: true, noDelay: true }) as GatewaySocket;
    upstream[kConnection] = this;
    upstream.on('connect', onUpstreamConnect);
    upstream.on('data', onUpstreamData);
    upstream.on('end', onUpstreamEnd);
    upstream.on('drain', onUpstreamDrain);
    upstream.on('error', onSocketError);
    upstream.on('close', onUpstreamClose);
    upstream.on('timeout', onUpstreamTimeout);
    upstream.setTimeout(this.ctx.connectTimeoutMs);
    this.upstream = upstream;
  }

  connected(upstream: GatewaySocket): void {
    this.state = AWAITING_FIRST_BYTE;
    upstream.setTimeout(0);
    this.ctx.metrics.upstreamConnect.observe((performance.now() - this.connectStartedAt) / 1000);
    upstream.write(this.replay!);
  }

  spliced(): void {
    this.state = SPLICED;
    this.replay = undefined;
    this.tried = undefined;
    this.client.resume();
  }

  /** The upstream closed. Before any byte came back, another target may still take the connection. */
  upstreamClosed(upstream: GatewaySocket, hadError: boolean): void {
    this.target!.active--;
    this.upstream = undefined;
    if (this.state !== SPLICED) {
      if (this.clientClosed) return this.finish();
      this.ctx.metrics.upstreamConnectFailures++;
      if (this.ctx.debug) this.ctx.log.debug({ sni: this.serverName, target: `${upstream.remoteAddress ?? this.target!.address}:${this.target!.port}` }, 'upstream failed before answering');
      (this.tried ??= []).push(this.target!);
      if (this.tried.length < this.ctx.connectAttempts) return this.connectUpstream();
      return this.failUpstream();
    }
    if (hadError) {
      this.errored = true;
      this.client.destroy();
    }
    // A clean close means both FINs were exchanged; the client socket closes itself once flushed.
    if (this.clientClosed) this.finish();
  }

  clientClosedEvent(hadError: boolean): void {
    this.clientClosed = true;
    if (hadError) this.errored = true;
    const upstream = this.upstream;
    if (upstream === undefined) return this.finish();
    if (hadError || this.state !== SPLICED) upstream.destroy();
  }

  clientTimedOut(): void {
    if (this.state === INSPECTING) return this.refuse('inspect-timeout');
    if (this.ctx.debug) this.ctx.log.debug({ sni: this.serverName }, 'idle timeout');
    this.client.destroy();
    this.upstream?.destroy();
  }

  refuse(reason: string): void {
    this.state = REFUSED;
    this.reader = undefined;
    this.ctx.metrics.refuse(reason);
    if (this.ctx.debug) this.ctx.log.debug({ reason, sni: this.serverName, remote: this.client.remoteAddress }, 'connection refused');
    this.client.destroy();
  }

  private failUpstream(): void {
    this.state = REFUSED;
    this.route!.stats.upstreamFailed++;
    if (this.ctx.debug) this.ctx.log.debug({ sni: this.serverName, attempts: this.tried?.length ?? 0 }, 'no upstream answered');
    this.client.destroy();
  }

  private finish(): void {
    const ctx = this.ctx;
    if (!ctx.open.delete(this)) return;
    ctx.metrics.active--;
    if (this.state === SPLICED) {
      const stats = this.route!.stats;
      if (this.errored) stats.error++;
      else stats.ok++;
      ctx.metrics.bytesUpstream += this.bytesUp;
      ctx.metrics.bytesDownstream += this.bytesDown;
    }
    if (ctx.open.size === 0) ctx.onLastClosed();
  }

  /** Ends the connection now (drain timeout, shutdown). */
  destroy(): void {
    this.client.destroy();
    this.upstream?.destroy();
  }
}

function onClientData(this: GatewaySocket, chunk: Buffer): void {
  const c = this[kConnection];
  if (c.state === SPLICED) {
    c.bytesUp += chunk.length;
    if (!c.upstream!.write(chunk)) this.pause();
  } else if (c.state === INSPECTING) {
    c.inspect(chunk);
  } else if (c.state !== REFUSED) {
    c.holdEarly(chunk);
  }
}

function onClientEnd(this: GatewaySocket): void {
  const c = this[kConnection];
  if (c.state === SPLICED) c.upstream!.end();
  else if (c.state === INSPECTING) c.refuse('incomplete-hello');
}

function onClientDrain(this: GatewaySocket): void {
  this[kConnection].upstream?.resume();
}

function onClientClose(this: GatewaySocket, hadError: boolean): void {
  this[kConnection].clientClosedEvent(hadError);
}

function onClientTimeout(this: GatewaySocket): void {
  this[kConnection].clientTimedOut();
}

function onUpstreamConnect(this: GatewaySocket): void {
  this[kConnection].connected(this);
}

function onUpstreamData(this: GatewaySocket, chunk: Buffer): void {
  const c = this[kConnection];
  if (c.state !== SPLICED) c.spliced();
  c.bytesDown += chunk.length;
  if (!c.client.write(chunk)) this.pause();
}

function onUpstreamEnd(this: GatewaySocket): void {
  const c = this[kConnection];
  if (c.state === SPLICED) c.client.end();
  // A FIN before any byte came back is a failed attempt; with allowHalfOpen it would otherwise linger.
  else this.destroy();
}

function onUpstreamDrain(this: GatewaySocket): void {
  const c = this[kConnection];
  if (c.state === SPLICED) c.client.resume();
}

function onUpstreamClose(this: GatewaySocket, hadError: boolean): void {
  const c = this[kConnection];
  if (c.upstream === this) c.upstreamClosed(this, hadError);
}

function onUpstreamTimeout(this: GatewaySocket): void {
  // Only armed while connecting: the connect timeout.
  this.destroy();
}

function onSocketError(): void {
  // 'close' follows with hadError = true; the connection is torn down there.
}
