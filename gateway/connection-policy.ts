import type { Logger } from '../mesh/index.js';
import { ClientHelloReader } from './client-hello.js';
import type { GatewayMetrics } from './metrics.js';
import type { Route, RouteTable, UpstreamTarget } from './route-table.js';

/**
 * What one gateway connection does, whichever relay carries its bytes (gateway/README.md,
 * "Routing" and "The hot path"): read the ClientHello and route its server name, pick an
 * upstream, retry the next one with the same replayed bytes while none has answered,
 * refuse with a reason that is a metric label, and count the connection when it closes.
 *
 * Both relays extend {@link GatewayConnection} and only do I/O: handle-relay.ts on libuv
 * TCP handles, passthrough.ts on `net.Socket`. A relay feeds the client's first bytes to
 * `inspect`, reports what its sockets do (`spliced`, `clientEnded`, `timedOut`, a failed
 * attempt), and implements the few I/O steps the policy asks for (the abstract methods).
 * The policy allocates nothing per connection beyond the object itself and its hello
 * reader, and logs only at debug.
 */

/** What every connection of one gateway shares. */
export interface PassthroughContext {
  table: RouteTable | undefined;
  readonly inspectTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly connectAttempts: number;
  readonly metrics: GatewayMetrics;
  /** Connections not finished yet, of either relay: `activeConnections` and drain read it. */
  readonly open: Set<GatewayConnection>;
  readonly log: Logger;
  readonly debug: boolean;
  /** Called when a connection finishes and none is left open (drain waits on it). */
  readonly onLastClosed: () => void;
}

/** Reading the ClientHello. */
export const INSPECTING = 0;
/** Routed; an upstream attempt is connecting. */
export const CONNECTING = 1;
/** Connected and the hello replayed; the client is not read until the upstream answers, so a retry can replay again. */
export const AWAITING_FIRST_BYTE = 2;
/** The upstream answered: bytes flow both ways, no more retries. */
export const SPLICED = 3;
/** Refused, given up, or finished: nothing more is routed or counted. */
export const CLOSED = 4;

/**
 * Feeds a chunk of a connection's first bytes to its ClientHello reader and, once the
 * hello is complete, routes its server name (kept on `named`). Returns undefined while
 * more bytes are needed, else the route or the refusal reason.
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

/** One client connection's state and policy; a relay subclass does its I/O. */
export abstract class GatewayConnection {
  state = INSPECTING;
  route: Route | undefined = undefined;
  /** The target of the current attempt; while set, it is counted in its `active`. */
  target: UpstreamTarget | undefined = undefined;
  bytesUp = 0;
  bytesDown = 0;
  serverName: string | undefined = undefined;
  /** Set when a spliced connection ends in an error: counted as `error` instead of `ok`. */
  protected errored = false;
  protected reader: ClientHelloReader | undefined = new ClientHelloReader();
  /** Client bytes to replay to an upstream, kept until the upstream answers. */
  protected replay: Buffer | undefined = undefined;
  #tried: UpstreamTarget[] | undefined = undefined;
  readonly #acceptedAt = performance.now();
  #connectStartedAt = 0;

  constructor(readonly ctx: PassthroughContext) {
    ctx.open.add(this);
    ctx.metrics.active++;
  }

  /** Stops reading the client: nothing more is read until the upstream has answered. */
  protected abstract holdClient(): void;
  /** Starts connecting to `target`; the relay reports the outcome (`upstreamConnected` or a failed attempt). */
  protected abstract openUpstream(target: UpstreamTarget): void;
  /** Reads the client again, now that the connection is spliced. */
  protected abstract resumeClient(): void;
  /** Passes the client's FIN on to the upstream. */
  protected abstract endUpstream(): void;
  /** Closes the client without splicing (refused, or no upstream answered). */
  protected abstract abort(): void;
  /** The client's address, for debug lines only. */
  protected abstract clientAddress(): string | undefined;
  /** Ends the connection now (idle timeout, drain timeout, shutdown). */
  abstract destroy(): void;

  /** Feeds the client's first bytes to the hello reader; once the hello routes, connects upstream. */
  inspect(chunk: Buffer): void {
    const route = routeHello(this.ctx, this.reader!, chunk, this.#acceptedAt, this);
    if (route === undefined) return;
    if (typeof route === 'string') return this.refuse(route);
    this.route = route;
    this.replay = this.reader!.wireBytes;
    this.reader = undefined;
    this.holdClient();
    this.#connectUpstream();
  }

  /** Starts an attempt on the next target not tried yet, or gives up when the pool has none. */
  #connectUpstream(): void {
    const target = this.route!.pool.pick(this.#tried);
    if (target === undefined) return this.#failUpstream();
    this.target = target;
    this.state = CONNECTING;
    this.#connectStartedAt = performance.now();
    target.active++;
    this.openUpstream(target);
  }

  /** The upstream accepted the connection: returns the bytes to replay to it. */
  protected upstreamConnected(): Buffer {
    this.state = AWAITING_FIRST_BYTE;
    this.ctx.metrics.upstreamConnect.observe((performance.now() - this.#connectStartedAt) / 1000);
    return this.replay!;
  }

  /**
   * The current attempt failed before any byte came back (refused, reset, closed, timed
   * out): the next target gets the same replayed bytes, up to `connectAttempts` in all.
   * The relay has already let go of the failed upstream.
   */
  protected retryOrGiveUp(): void {
    const ctx = this.ctx;
    const target = this.target!;
    this.releaseTarget();
    ctx.metrics.upstreamConnectFailures++;
    if (ctx.debug) ctx.log.debug({ sni: this.serverName, target: `${target.address}:${target.port}` }, 'upstream failed before answering');
    (this.#tried ??= []).push(target);
    if (this.#tried.length < ctx.connectAttempts) this.#connectUpstream();
    else this.#failUpstream();
  }

  /** The first byte came back from the upstream: nothing is replayed or retried any more. */
  spliced(): void {
    this.state = SPLICED;
    this.replay = undefined;
    this.#tried = undefined;
    this.resumeClient();
  }

  /** The client sent its FIN: passed on once spliced; before the hello is complete, a refusal. */
  clientEnded(): void {
    if (this.state === SPLICED) this.endUpstream();
    else if (this.state === INSPECTING) this.refuse('incomplete-hello');
  }

  /** The client's timer ran out: the inspect timeout while reading the hello, later the idle timeout. */
  timedOut(): void {
    if (this.state === INSPECTING) return this.refuse('inspect-timeout');
    if (this.ctx.debug) this.ctx.log.debug({ sni: this.serverName }, 'idle timeout');
    this.destroy();
  }

  /** Closes the connection unrouted, counted under `reason` (gateway/README.md lists them). */
  refuse(reason: string): void {
    const ctx = this.ctx;
    ctx.metrics.refuse(reason);
    if (ctx.debug) ctx.log.debug({ reason, sni: this.serverName, remote: this.clientAddress() }, 'connection refused');
    this.reader = undefined;
    this.abort();
  }

  /** No target answered: counted as `upstream-failed` on the route. */
  #failUpstream(): void {
    this.route!.stats.upstreamFailed++;
    if (this.ctx.debug) this.ctx.log.debug({ sni: this.serverName, attempts: this.#tried?.length ?? 0 }, 'no upstream answered');
    this.abort();
  }

  /** The current target no longer carries this connection (its attempt failed, or its upstream closed). */
  protected releaseTarget(): void {
    const target = this.target;
    if (target === undefined) return;
    target.active--;
    this.target = undefined;
  }

  /**
   * Once, when both sides are closed: counts the connection (`ok` or `error` on its route,
   * with its bytes, if it was spliced) and tells a drain when it was the last one open.
   */
  protected finish(): void {
    const ctx = this.ctx;
    if (!ctx.open.delete(this)) return;
    const wasSpliced = this.state === SPLICED;
    this.state = CLOSED;
    this.releaseTarget();
    ctx.metrics.active--;
    if (wasSpliced) {
      const stats = this.route!.stats;
      if (this.errored) stats.error++;
      else stats.ok++;
      ctx.metrics.bytesUpstream += this.bytesUp;
      ctx.metrics.bytesDownstream += this.bytesDown;
    }
    if (ctx.open.size === 0) ctx.onLastClosed();
  }
}
