import { connect, type Socket } from 'node:net';
import { CLOSED, GatewayConnection, AWAITING_FIRST_BYTE, INSPECTING, SPLICED, type PassthroughContext } from './connection-policy.js';
import type { UpstreamTarget } from './route-table.js';

/**
 * One client connection through the gateway on `net.Socket` streams — the portable relay
 * (`relay: 'sockets'`), used where Node lacks the TCP handle bindings that the default
 * relay in handle-relay.ts drives. Same behaviour, because the same policy decides
 * (connection-policy.ts); this file only does the I/O.
 *
 * Event handlers are module-level functions that find their connection through a symbol
 * on the socket (no closures per connection), relaying is a plain data/drain loop (no
 * pipe(), no pipeline(), no promises), counters are plain numbers, and nothing is logged
 * unless debug is on. Even so the streams machinery costs about twice HAProxy's CPU per
 * connection, which is why it is not the default.
 */

const kConnection = Symbol('causeway.gateway.connection');
type GatewaySocket = Socket & { [kConnection]: PassthroughConnection };

export class PassthroughConnection extends GatewayConnection {
  upstream: GatewaySocket | undefined = undefined;
  #clientClosed = false;

  constructor(
    ctx: PassthroughContext,
    readonly client: Socket,
  ) {
    super(ctx);
    const socket = client as GatewaySocket;
    socket[kConnection] = this;
    socket.on('data', onClientData);
    socket.on('end', onClientEnd);
    socket.on('drain', onClientDrain);
    socket.on('error', onSocketError);
    socket.on('close', onClientClose);
    socket.on('timeout', onClientTimeout);
    socket.setTimeout(ctx.inspectTimeoutMs);
  }

  protected holdClient(): void {
    this.client.pause();
    this.client.setTimeout(this.ctx.idleTimeoutMs);
  }

  /** Client bytes that arrived while no upstream was answering yet; replayed with the hello. */
  holdEarly(chunk: Buffer): void {
    this.replay = this.replay === undefined ? chunk : Buffer.concat([this.replay, chunk]);
    if (this.state === AWAITING_FIRST_BYTE) this.upstream!.write(chunk);
  }

  protected openUpstream(target: UpstreamTarget): void {
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
    const replay = this.upstreamConnected();
    upstream.setTimeout(0);
    upstream.write(replay);
  }

  protected resumeClient(): void {
    this.client.resume();
  }

  protected endUpstream(): void {
    this.upstream!.end();
  }

  /** The upstream closed. Before any byte came back, the policy may still give the connection to another target. */
  upstreamClosed(hadError: boolean): void {
    this.upstream = undefined;
    if (this.state !== SPLICED) {
      if (this.#clientClosed) return this.finish();
      return this.retryOrGiveUp();
    }
    this.releaseTarget();
    if (hadError) {
      this.errored = true;
      this.client.destroy();
    }
    // A clean close means both FINs were exchanged; the client socket closes itself once flushed.
    if (this.#clientClosed) this.finish();
  }

  clientClosedEvent(hadError: boolean): void {
    this.#clientClosed = true;
    if (hadError) this.errored = true;
    const upstream = this.upstream;
    if (upstream === undefined) return this.finish();
    if (hadError || this.state !== SPLICED) upstream.destroy();
  }

  protected abort(): void {
    this.state = CLOSED;
    this.client.destroy();
  }

  protected clientAddress(): string | undefined {
    return this.client.remoteAddress;
  }

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
  } else if (c.state !== CLOSED) {
    c.holdEarly(chunk);
  }
}

function onClientEnd(this: GatewaySocket): void {
  this[kConnection].clientEnded();
}

function onClientDrain(this: GatewaySocket): void {
  this[kConnection].upstream?.resume();
}

function onClientClose(this: GatewaySocket, hadError: boolean): void {
  this[kConnection].clientClosedEvent(hadError);
}

function onClientTimeout(this: GatewaySocket): void {
  this[kConnection].timedOut();
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
  if (c.upstream === this) c.upstreamClosed(hadError);
}

function onUpstreamTimeout(this: GatewaySocket): void {
  // Only armed while connecting: the connect timeout.
  this.destroy();
}

function onSocketError(): void {
  // 'close' follows with hadError = true; the connection is torn down there.
}
