import { lookup } from 'node:dns';
import { isIPv6, isIP, type Server } from 'node:net';
import { listeningHandle, tcpHandleBindings, UV_EOF, type StreamShutdownReq, type StreamWriteReq, type TcpConnectReq, type TcpHandle, type TcpHandleBindings } from '../mesh/index.js';
import { AWAITING_FIRST_BYTE, CLOSED, CONNECTING, GatewayConnection, INSPECTING, SPLICED, type PassthroughContext } from './connection-policy.js';
import type { UpstreamTarget } from './route-table.js';

/**
 * The gateway's fast relay: it drives libuv TCP handles directly (Node's `tcp_wrap` and
 * `stream_wrap` bindings, the layer `net.Socket` is built on; mesh/node-internals.ts)
 * instead of `net.Socket` streams. A passthrough connection never needs what streams add
 * — buffering, encoding, object mode, per-socket timers, events — and paying for it made
 * a stream-based relay cost about twice HAProxy's CPU per connection. Here a connection
 * is one plain object and two handles: reads arrive in `onread`, writes go straight to
 * `writeBuffer`, half-close is a `shutdown`, and all timeouts share one coarse sweep
 * timer. What to do with the connection (routing, retries, refusals, counting) is the
 * shared policy of connection-policy.ts; this file only does the I/O.
 *
 * The bindings are internal to Node; {@link relayHandlesAvailable} says whether this
 * Node has them, and the gateway falls back to the `net.Socket` relay when it does not.
 */

/** A TCP handle with what the relay keeps on it. */
interface RelayHandle extends TcpHandle {
  onread?(this: RelayHandle, arrayBuffer: ArrayBuffer | undefined): void;
  conn: HandleConnection | undefined;
  /** Bytes read so far; once past BULK_THRESHOLD_BYTES the handle reads into its own buffer. */
  readBytes: number;
  /** The handle's own read buffer (bulk connections only). */
  ownBuffer: Buffer | undefined;
}
interface WriteReq extends StreamWriteReq {
  handle: RelayHandle;
  oncomplete(this: WriteReq, status: number): void;
  conn: HandleConnection;
}
interface ShutdownReq extends StreamShutdownReq {
  handle: RelayHandle;
  oncomplete(this: ShutdownReq, status: number): void;
  conn: HandleConnection;
}
interface ConnectReq extends TcpConnectReq {
  oncomplete(this: ConnectReq, status: number, handle: RelayHandle): void;
  conn: HandleConnection;
}
/** The bindings as the relay uses them: its request objects carry its connection. */
interface Bindings extends Omit<TcpHandleBindings, 'TCP' | 'TCPConnectWrap' | 'WriteWrap' | 'ShutdownWrap'> {
  TCP: new (type: number) => RelayHandle;
  TCPConnectWrap: new () => ConnectReq;
  WriteWrap: new () => WriteReq;
  ShutdownWrap: new () => ShutdownReq;
}

/** True when this Node exposes the TCP handle bindings the fast relay needs. */
export function relayHandlesAvailable(): boolean {
  return tcpHandleBindings() !== undefined;
}

/** Queued bytes on one side above which the other side stops reading. */
const HIGH_WATER_BYTES = 64 * 1024;
/**
 * After this many bytes a handle reads into a buffer of its own instead of a fresh 64 KiB
 * allocation per read: bulk transfers then reuse warm memory and leave the GC alone, while
 * idle and short connections cost nothing extra.
 */
const BULK_THRESHOLD_BYTES = 256 * 1024;
const OWN_BUFFER_BYTES = 64 * 1024;

/** Coarse clock for idle deadlines, advanced by the sweep timer so reads need no clock call. */
const clock = { nowMs: Date.now() };

export interface HandleRelayOptions {
  readonly ctx: PassthroughContext;
  readonly maxConnections: number;
}

/**
 * Takes over accepting on a listening `net.Server`: its native handle's connection
 * callback is replaced, so accepted sockets never become `net.Socket`s. Its connections
 * are in `ctx.open`, like the other relay's.
 */
export class HandleRelay {
  readonly #sweepTimer: NodeJS.Timeout;
  readonly #b: Bindings;
  readonly #ctx: PassthroughContext;
  readonly #maxConnections: number;

  constructor(server: Server, options: HandleRelayOptions) {
    const b = tcpHandleBindings();
    if (b === undefined) throw new Error('the TCP handle bindings are not available in this Node');
    // The same objects: the relay's types only add the fields it hangs on them.
    this.#b = b as unknown as Bindings;
    this.#ctx = options.ctx;
    this.#maxConnections = options.maxConnections;
    const handle = listeningHandle<RelayHandle>(server);
    if (handle === null) throw new Error('the server is not listening');
    const relay = this;
    handle.onconnection = function onConnection(status: number, client: RelayHandle | undefined): void {
      if (status < 0 || client === undefined) return;
      relay.#accept(client);
    };
    const ctx = options.ctx;
    const sweepEveryMs = Math.max(50, Math.min(1000, Math.floor(Math.min(ctx.inspectTimeoutMs, ctx.connectTimeoutMs) / 4)));
    this.#sweepTimer = setInterval(() => this.#sweep(), sweepEveryMs);
    this.#sweepTimer.unref();
  }

  #accept(client: RelayHandle): void {
    const ctx = this.#ctx;
    if (ctx.open.size >= this.#maxConnections) {
      ctx.metrics.refuse('max-connections');
      client.close();
      return;
    }
    new HandleConnection(ctx, this.#b, client);
  }

  #sweep(): void {
    const now = Date.now();
    clock.nowMs = now;
    for (const connection of this.#ctx.open) if ((connection as HandleConnection).deadlineMs <= now) (connection as HandleConnection).timedOut();
  }

  stop(): void {
    clearInterval(this.#sweepTimer);
  }
}

class HandleConnection extends GatewayConnection {
  upstream: RelayHandle | undefined = undefined;
  /** When the current phase times out (inspect, connect, or idle), on the coarse clock. */
  deadlineMs: number;
  clientEof = false;
  upstreamEof = false;
  /** Shutdowns sent (a FIN passed on) and completed, per side. */
  #upstreamShut = false;
  #clientShut = false;
  #upstreamShutDone = false;
  #clientShutDone = false;
  /** Reading stopped for backpressure. */
  #clientReadPaused = false;
  #upstreamReadPaused = false;

  constructor(
    ctx: PassthroughContext,
    readonly b: Bindings,
    readonly client: RelayHandle,
  ) {
    super(ctx);
    client.conn = this;
    client.readBytes = 0;
    client.ownBuffer = undefined;
    client.onread = onClientRead;
    this.deadlineMs = clock.nowMs + ctx.inspectTimeoutMs;
    // Like HAProxy and nginx: no Nagle delay on a relayed handshake's small records.
    client.setNoDelay(true);
    const err = client.readStart();
    if (err < 0) this.destroy(true);
  }

  protected holdClient(): void {
    this.client.readStop();
  }

  protected openUpstream(target: UpstreamTarget): void {
    this.deadlineMs = clock.nowMs + this.ctx.connectTimeoutMs;
    const family = isIP(target.address);
    if (family === 0) {
      lookup(target.address, (error, address) => {
        if (this.state !== CONNECTING || this.target !== target) return;
        if (error) return this.attemptFailed();
        this.#connectTo(address, target.port);
      });
      return;
    }
    this.#connectTo(target.address, target.port);
  }

  #connectTo(address: string, port: number): void {
    const b = this.b;
    const upstream = new b.TCP(b.socketType);
    upstream.conn = this;
    upstream.readBytes = 0;
    upstream.ownBuffer = undefined;
    upstream.onread = onUpstreamRead;
    this.upstream = upstream;
    const req = new b.TCPConnectWrap();
    req.oncomplete = afterConnect;
    req.address = address;
    req.port = port;
    req.conn = this;
    const err = isIPv6(address) ? upstream.connect6(req, address, port) : upstream.connect(req, address, port);
    if (err < 0) this.attemptFailed();
  }

  connected(upstream: RelayHandle, status: number): void {
    if (upstream !== this.upstream || this.state !== CONNECTING) {
      upstream.close();
      return;
    }
    if (status < 0) return this.attemptFailed();
    const replay = this.upstreamConnected();
    this.deadlineMs = clock.nowMs + this.ctx.idleTimeoutMs;
    upstream.setNoDelay(true);
    if (upstream.readStart() < 0) return this.attemptFailed();
    this.write(upstream, replay);
  }

  /** The current upstream attempt failed before any byte came back: let go of its handle, and the policy retries or gives up. */
  attemptFailed(): void {
    if (this.state === CLOSED) return;
    const upstream = this.upstream;
    this.upstream = undefined;
    if (upstream !== undefined) {
      upstream.conn = undefined;
      upstream.close();
    }
    this.retryOrGiveUp();
  }

  protected resumeClient(): void {
    if (this.clientEof) this.#shutdown(this.upstream!);
    else this.client.readStart();
  }

  protected endUpstream(): void {
    this.#shutdown(this.upstream!);
  }

  /** Writes `chunk` to `to`; stops reading the other side while `to` has too much queued. */
  write(to: RelayHandle, chunk: Buffer): void {
    const b = this.b;
    const req = new b.WriteWrap();
    req.handle = to;
    req.oncomplete = afterWrite;
    req.conn = this;
    req.async = false;
    req.buffer = chunk;
    const err = to.writeBuffer(req, chunk);
    if (err < 0) return this.destroy(true);
    if (b.state[b.kLastWriteWasAsync] && (to.writeQueueSize > HIGH_WATER_BYTES || chunk.buffer === this.#sourceOf(to).ownBuffer?.buffer)) {
      // Queued too much, or the queued bytes live in the source's own read buffer, which must not be read into again until they are out.
      if (to === this.client) {
        if (!this.#upstreamReadPaused) {
          this.#upstreamReadPaused = true;
          this.upstream?.readStop();
        }
      } else if (!this.#clientReadPaused) {
        this.#clientReadPaused = true;
        this.client.readStop();
      }
    }
  }

  #sourceOf(to: RelayHandle): RelayHandle {
    return to === this.client ? this.upstream! : this.client;
  }

  writeDone(to: RelayHandle, status: number): void {
    if (status < 0) return this.destroy(true);
    if (to.writeQueueSize !== 0 || this.state === CLOSED) return;
    if (to === this.client) {
      if (this.#upstreamReadPaused) {
        this.#upstreamReadPaused = false;
        if (!this.upstreamEof) this.upstream?.readStart();
      }
    } else if (this.#clientReadPaused) {
      this.#clientReadPaused = false;
      if (!this.clientEof) this.client.readStart();
    }
  }

  /** Passes a FIN on: libuv sends it once the queued writes are out. */
  #shutdown(to: RelayHandle): void {
    if (to === this.client) {
      if (this.#clientShut) return;
      this.#clientShut = true;
    } else {
      if (this.#upstreamShut) return;
      this.#upstreamShut = true;
    }
    const req = new this.b.ShutdownWrap();
    req.handle = to;
    req.oncomplete = afterShutdown;
    req.conn = this;
    if (to.shutdown(req) < 0) this.destroy(true);
  }

  /** A FIN went out (after every queued byte); once both have, the connection is done. */
  shutdownDone(to: RelayHandle, status: number): void {
    if (status < 0) return this.destroy(true);
    if (to === this.client) this.#clientShutDone = true;
    else this.#upstreamShutDone = true;
    if (this.#clientShutDone && this.#upstreamShutDone) this.destroy(false);
  }

  upstreamEnded(): void {
    this.upstreamEof = true;
    if (this.state !== SPLICED) return this.attemptFailed();
    this.#shutdown(this.client);
  }

  /** The sweep found the deadline passed: a connect timeout is a failed attempt, the rest is the policy's. */
  override timedOut(): void {
    if (this.state === CONNECTING) return this.attemptFailed();
    super.timedOut();
  }

  protected abort(): void {
    this.#close();
  }

  protected clientAddress(): string | undefined {
    const peer: { address?: string } = {};
    this.client.getpeername(peer);
    return peer.address;
  }

  /** Closes both sides; `error` resets them rather than closing them cleanly. */
  destroy(error = false): void {
    if (this.state === CLOSED) return;
    if (error) this.errored = true;
    this.#close();
  }

  #close(): void {
    if (this.state === CLOSED) return;
    this.deadlineMs = Number.POSITIVE_INFINITY;
    this.client.conn = undefined;
    if (this.errored && this.client.reset !== undefined) this.client.reset();
    else this.client.close();
    const upstream = this.upstream;
    if (upstream !== undefined) {
      upstream.conn = undefined;
      if (this.errored && upstream.reset !== undefined) upstream.reset();
      else upstream.close();
      this.upstream = undefined;
    }
    this.finish();
  }
}

/** The bytes of one read: in Node's fresh buffer, or (for bulk handles) in the handle's own. */
function readChunk(handle: RelayHandle, b: Bindings, arrayBuffer: ArrayBuffer | undefined, nread: number): Buffer {
  const chunk = arrayBuffer === undefined ? handle.ownBuffer!.subarray(0, nread) : Buffer.from(arrayBuffer, b.state[b.kArrayBufferOffset], nread);
  if (handle.ownBuffer === undefined) {
    handle.readBytes += nread;
    if (handle.readBytes > BULK_THRESHOLD_BYTES) {
      handle.ownBuffer = Buffer.allocUnsafeSlow(OWN_BUFFER_BYTES);
      handle.useUserBuffer(handle.ownBuffer);
    }
  }
  return chunk;
}

function onClientRead(this: RelayHandle, arrayBuffer: ArrayBuffer | undefined): void {
  const c = this.conn;
  if (c === undefined) return;
  const b = c.b;
  const nread = b.state[b.kReadBytesOrError]!;
  if (nread > 0) {
    if (c.state === SPLICED) {
      c.bytesUp += nread;
      c.deadlineMs = clock.nowMs + c.ctx.idleTimeoutMs;
      c.write(c.upstream!, readChunk(this, b, arrayBuffer, nread));
    } else if (c.state === INSPECTING) {
      c.inspect(Buffer.from(arrayBuffer!, b.state[b.kArrayBufferOffset], nread));
    }
    return;
  }
  if (nread === UV_EOF) {
    c.clientEof = true;
    c.clientEnded();
  } else if (nread < 0) c.destroy(true);
}

function onUpstreamRead(this: RelayHandle, arrayBuffer: ArrayBuffer | undefined): void {
  const c = this.conn;
  if (c === undefined) return;
  const b = c.b;
  const nread = b.state[b.kReadBytesOrError]!;
  if (nread > 0) {
    if (c.state !== SPLICED) c.spliced();
    c.bytesDown += nread;
    c.deadlineMs = clock.nowMs + c.ctx.idleTimeoutMs;
    c.write(c.client, readChunk(this, b, arrayBuffer, nread));
    return;
  }
  if (nread === UV_EOF) c.upstreamEnded();
  else if (nread < 0) {
    if (c.state === SPLICED) c.destroy(true);
    else c.attemptFailed();
  }
}

function afterConnect(this: ConnectReq, status: number, handle: RelayHandle): void {
  const c = this.conn;
  if (c.upstream === handle) c.connected(handle, status);
  else handle.close();
}

function afterWrite(this: WriteReq, status: number): void {
  this.buffer = undefined;
  const c = this.handle.conn;
  if (c !== undefined) c.writeDone(this.handle, status);
}

function afterShutdown(this: ShutdownReq, status: number): void {
  const c = this.handle.conn;
  if (c !== undefined) c.shutdownDone(this.handle, status);
}
