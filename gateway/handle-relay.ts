import { lookup } from 'node:dns';
import { isIPv6, isIP, type Server } from 'node:net';
import { tcpHandleBindings, UV_EOF, type StreamShutdownReq, type StreamWriteReq, type TcpConnectReq, type TcpHandle as NodeTcpHandle, type TcpHandleBindings } from '../mesh/index.js';
import { ClientHelloReader } from './client-hello.js';
import { routeHello, type PassthroughContext } from './passthrough.js';
import type { Route, UpstreamTarget } from './route-table.js';

/**
 * The gateway's fast relay: it drives libuv TCP handles directly (Node's `tcp_wrap` and
 * `stream_wrap` bindings, the layer `net.Socket` is built on; mesh/node-internals.ts) instead of `net.Socket`
 * streams. A passthrough connection never needs what streams add — buffering, encoding,
 * object mode, per-socket timers, events — and paying for it made a stream-based relay
 * cost about twice HAProxy's CPU per connection. Here a connection is one plain object
 * and two handles: reads arrive in `onread`, writes go straight to `writeBuffer`,
 * half-close is a `shutdown`, and all timeouts share one coarse sweep timer.
 *
 * The bindings are internal to Node; {@link relayHandlesAvailable} says whether this
 * Node has them, and the gateway falls back to the `net.Socket` relay when it does not.
 */

/** A TCP handle with what the relay keeps on it. */
interface TcpHandle extends NodeTcpHandle {
  onread?(this: TcpHandle, arrayBuffer: ArrayBuffer | undefined): void;
  conn: HandleConnection | undefined;
  /** Bytes read so far; once past BULK_THRESHOLD_BYTES the handle reads into its own buffer. */
  readBytes: number;
  /** The handle's own read buffer (bulk connections only). */
  ownBuffer: Buffer | undefined;
}
interface WriteReq extends StreamWriteReq {
  handle: TcpHandle;
  oncomplete(this: WriteReq, status: number): void;
  conn: HandleConnection;
}
interface ShutdownReq extends StreamShutdownReq {
  handle: TcpHandle;
  oncomplete(this: ShutdownReq, status: number): void;
  conn: HandleConnection;
}
interface ConnectReq extends TcpConnectReq {
  oncomplete(this: ConnectReq, status: number, handle: TcpHandle): void;
  conn: HandleConnection;
}
/** The bindings as the relay uses them: its request objects carry its connection. */
interface Bindings extends Omit<TcpHandleBindings, 'TCP' | 'TCPConnectWrap' | 'WriteWrap' | 'ShutdownWrap'> {
  TCP: new (type: number) => TcpHandle;
  TCPConnectWrap: new () => ConnectReq;
  WriteWrap: new () => WriteReq;
  ShutdownWrap: new () => ShutdownReq;
}

/** The same objects as mesh/node-internals.ts loads: the relay's types only add the fields it hangs on them. */
function loadBindings(): Bindings | undefined {
  return tcpHandleBindings() as unknown as Bindings | undefined;
}

/** True when this Node exposes the TCP handle bindings the fast relay needs. */
export function relayHandlesAvailable(): boolean {
  return loadBindings() !== undefined;
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

const INSPECTING = 0;
const CONNECTING = 1;
/** Connected and the hello replayed; the client is not read until the upstream answers, so a retry can replay again. */
const AWAITING_FIRST_BYTE = 2;
const SPLICED = 3;
const CLOSED = 4;

/** Coarse clock for idle deadlines, advanced by the sweep timer so reads need no clock call. */
const clock = { nowMs: Date.now() };

export interface HandleRelayOptions {
  readonly ctx: PassthroughContext;
  readonly maxConnections: number;
}

/**
 * Takes over accepting on a listening `net.Server`: its native handle's connection
 * callback is replaced, so accepted sockets never become `net.Socket`s.
 */
export class HandleRelay {
  readonly open = new Set<HandleConnection>();
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly b: Bindings;

  constructor(
    server: Server,
    private readonly options: HandleRelayOptions,
  ) {
    const b = loadBindings();
    if (b === undefined) throw new Error('the TCP handle bindings are not available in this Node');
    this.b = b;
    const handle = (server as unknown as { _handle: { onconnection: (status: number, client: TcpHandle | undefined) => void } | null })._handle;
    if (handle === null) throw new Error('the server is not listening');
    const relay = this;
    handle.onconnection = function onConnection(status: number, client: TcpHandle | undefined): void {
      if (status < 0 || client === undefined) return;
      relay.accept(client);
    };
    const sweepEveryMs = Math.max(50, Math.min(1000, Math.floor(Math.min(options.ctx.inspectTimeoutMs, options.ctx.connectTimeoutMs) / 4)));
    this.sweepTimer = setInterval(() => this.sweep(), sweepEveryMs);
    this.sweepTimer.unref();
  }

  private accept(client: TcpHandle): void {
    const ctx = this.options.ctx;
    if (this.open.size >= this.options.maxConnections) {
      ctx.metrics.refuse('max-connections');
      client.close();
      return;
    }
    new HandleConnection(this, this.b, client);
  }

  get ctx(): PassthroughContext {
    return this.options.ctx;
  }

  private sweep(): void {
    const now = Date.now();
    clock.nowMs = now;
    for (const connection of this.open) if (connection.deadlineMs <= now) connection.timedOut();
  }

  /** Closes every connection now. */
  destroyAll(): void {
    for (const connection of [...this.open]) connection.destroy(false);
  }

  stop(): void {
    clearInterval(this.sweepTimer);
  }
}

class HandleConnection {
  state = INSPECTING;
  upstream: TcpHandle | undefined = undefined;
  private reader: ClientHelloReader | undefined = new ClientHelloReader();
  private replay: Buffer | undefined = undefined;
  route: Route | undefined = undefined;
  target: UpstreamTarget | undefined = undefined;
  private tried: UpstreamTarget[] | undefined = undefined;
  private readonly acceptedAt = performance.now();
  private connectStartedAt = 0;
  /** When the current phase times out (inspect, connect, or idle), on the coarse clock. */
  deadlineMs: number;
  bytesUp = 0;
  bytesDown = 0;
  clientEof = false;
  upstreamEof = false;
  /** Shutdowns sent (a FIN passed on) and completed, per side. */
  private upstreamShut = false;
  private clientShut = false;
  private upstreamShutDone = false;
  private clientShutDone = false;
  /** Reading stopped for backpressure. */
  clientReadPaused = false;
  upstreamReadPaused = false;
  private errored = false;
  serverName: string | undefined = undefined;

  constructor(
    readonly relay: HandleRelay,
    readonly b: Bindings,
    readonly client: TcpHandle,
  ) {
    client.conn = this;
    client.readBytes = 0;
    client.ownBuffer = undefined;
    client.onread = onClientRead;
    this.deadlineMs = clock.nowMs + relay.ctx.inspectTimeoutMs;
    relay.open.add(this);
    relay.ctx.metrics.active++;
    // Like HAProxy and nginx: no Nagle delay on a relayed handshake's small records.
    client.setNoDelay(true);
    const err = client.readStart();
    if (err < 0) this.destroy(true);
  }

  private get ctx(): PassthroughContext {
    return this.relay.ctx;
  }

  inspect(chunk: Buffer): void {
    const route = routeHello(this.ctx, this.reader!, chunk, this.acceptedAt, this);
    if (route === undefined) return;
    if (typeof route === 'string') return this.refuse(route);
    this.route = route;
    this.replay = this.reader!.wireBytes;
    this.reader = undefined;
    // Nothing more is read from the client until the upstream has answered.
    this.client.readStop();
    this.connectUpstream();
  }

  private connectUpstream(): void {
    const target = this.route!.pool.pick(this.tried);
    if (target === undefined) return this.failUpstream();
    this.target = target;
    this.state = CONNECTING;
    this.connectStartedAt = performance.now();
    this.deadlineMs = clock.nowMs + this.ctx.connectTimeoutMs;
    target.active++;
    const family = isIP(target.address);
    if (family === 0) {
      lookup(target.address, (error, address) => {
        if (this.state !== CONNECTING || this.target !== target) return;
        if (error) return this.attemptFailed();
        this.connectTo(address, target.port);
      });
      return;
    }
    this.connectTo(target.address, target.port);
  }

  private connectTo(address: string, port: number): void {
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

  connected(upstream: TcpHandle, status: number): void {
    if (upstream !== this.upstream || this.state !== CONNECTING) {
      upstream.close();
      return;
    }
    if (status < 0) return this.attemptFailed();
    this.state = AWAITING_FIRST_BYTE;
    this.deadlineMs = clock.nowMs + this.ctx.idleTimeoutMs;
    this.ctx.metrics.upstreamConnect.observe((performance.now() - this.connectStartedAt) / 1000);
    upstream.setNoDelay(true);
    if (upstream.readStart() < 0) return this.attemptFailed();
    this.write(upstream, this.replay!);
  }

  /** The current upstream attempt failed before any byte came back: try the next target. */
  attemptFailed(): void {
    if (this.state === CLOSED) return;
    const upstream = this.upstream;
    this.upstream = undefined;
    if (upstream !== undefined) {
      upstream.conn = undefined;
      upstream.close();
    }
    this.target!.active--;
    this.ctx.metrics.upstreamConnectFailures++;
    if (this.ctx.debug) this.ctx.log.debug({ sni: this.serverName, target: `${this.target!.address}:${this.target!.port}` }, 'upstream failed before answering');
    (this.tried ??= []).push(this.target!);
    this.target = undefined;
    if (this.tried.length < this.ctx.connectAttempts) return this.connectUpstream();
    this.failUpstream();
  }

  spliced(): void {
    this.state = SPLICED;
    this.replay = undefined;
    this.tried = undefined;
    if (this.clientEof) this.shutdown(this.upstream!);
    else this.client.readStart();
  }

  /** Writes `chunk` to `to`; stops reading the other side while `to` has too much queued. */
  write(to: TcpHandle, chunk: Buffer): void {
    const b = this.b;
    const req = new b.WriteWrap();
    req.handle = to;
    req.oncomplete = afterWrite;
    req.conn = this;
    req.async = false;
    req.buffer = chunk;
    const err = to.writeBuffer(req, chunk);
    if (err < 0) return this.destroy(true);
    if (b.state[b.kLastWriteWasAsync] && (to.writeQueueSize > HIGH_WATER_BYTES || chunk.buffer === this.sourceOf(to).ownBuffer?.buffer)) {
      // Queued too much, or the queued bytes live in the source's own read buffer, which must not be read into again until they are out.
      if (to === this.client) {
        if (!this.upstreamReadPaused) {
          this.upstreamReadPaused = true;
          this.upstream?.readStop();
        }
      } else if (!this.clientReadPaused) {
        this.clientReadPaused = true;
        this.client.readStop();
      }
    }
  }

  private sourceOf(to: TcpHandle): TcpHandle {
    return to === this.client ? this.upstream! : this.client;
  }

  writeDone(to: TcpHandle, status: number): void {
    if (status < 0) return this.destroy(true);
    if (to.writeQueueSize !== 0 || this.state === CLOSED) return;
    if (to === this.client) {
      if (this.upstreamReadPaused) {
        this.upstreamReadPaused = false;
        if (!this.upstreamEof) this.upstream?.readStart();
      }
    } else if (this.clientReadPaused) {
      this.clientReadPaused = false;
      if (!this.clientEof) this.client.readStart();
    }
  }

  /** Passes a FIN on: libuv sends it once the queued writes are out. */
  shutdown(to: TcpHandle): void {
    if (to === this.client) {
      if (this.clientShut) return;
      this.clientShut = true;
    } else {
      if (this.upstreamShut) return;
      this.upstreamShut = true;
    }
    const req = new this.b.ShutdownWrap();
    req.handle = to;
    req.oncomplete = afterShutdown;
    req.conn = this;
    if (to.shutdown(req) < 0) this.destroy(true);
  }

  /** A FIN went out (after every queued byte); once both have, the connection is done. */
  shutdownDone(to: TcpHandle, status: number): void {
    if (status < 0) return this.destroy(true);
    if (to === this.client) this.clientShutDone = true;
    else this.upstreamShutDone = true;
    if (this.clientShutDone && this.upstreamShutDone) this.destroy(false);
  }

  clientEnded(): void {
    this.clientEof = true;
    if (this.state === SPLICED) this.shutdown(this.upstream!);
    else if (this.state === INSPECTING) this.refuse('incomplete-hello');
  }

  upstreamEnded(): void {
    this.upstreamEof = true;
    if (this.state !== SPLICED) return this.attemptFailed();
    this.shutdown(this.client);
  }

  timedOut(): void {
    if (this.state === INSPECTING) return this.refuse('inspect-timeout');
    if (this.state === CONNECTING) return this.attemptFailed();
    if (this.ctx.debug) this.ctx.log.debug({ sni: this.serverName }, 'idle timeout');
    this.destroy(false);
  }

  refuse(reason: string): void {
    this.ctx.metrics.refuse(reason);
    if (this.ctx.debug) this.ctx.log.debug({ reason, sni: this.serverName }, 'connection refused');
    this.reader = undefined;
    this.close();
  }

  private failUpstream(): void {
    this.route!.stats.upstreamFailed++;
    if (this.ctx.debug) this.ctx.log.debug({ sni: this.serverName, attempts: this.tried?.length ?? 0 }, 'no upstream answered');
    this.close();
  }

  /** Closes both sides; `error` resets the client rather than closing it cleanly. */
  destroy(error: boolean): void {
    if (this.state === CLOSED) return;
    if (error) this.errored = true;
    if (this.state === SPLICED) {
      const stats = this.route!.stats;
      if (this.errored) stats.error++;
      else stats.ok++;
      this.ctx.metrics.bytesUpstream += this.bytesUp;
      this.ctx.metrics.bytesDownstream += this.bytesDown;
    }
    this.close();
  }

  private close(): void {
    if (this.state === CLOSED) return;
    const wasOpenUpstream = this.state === CONNECTING || this.state === AWAITING_FIRST_BYTE || this.state === SPLICED;
    this.state = CLOSED;
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
    if (wasOpenUpstream && this.target !== undefined) this.target.active--;
    const relay = this.relay;
    relay.open.delete(this);
    relay.ctx.metrics.active--;
    if (relay.open.size === 0) relay.ctx.onLastClosed();
  }
}

/** The bytes of one read: in Node's fresh buffer, or (for bulk handles) in the handle's own. */
function readChunk(handle: TcpHandle, b: Bindings, arrayBuffer: ArrayBuffer | undefined, nread: number): Buffer {
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

function onClientRead(this: TcpHandle, arrayBuffer: ArrayBuffer | undefined): void {
  const c = this.conn;
  if (c === undefined) return;
  const b = c.b;
  const nread = b.state[b.kReadBytesOrError]!;
  if (nread > 0) {
    if (c.state === SPLICED) {
      c.bytesUp += nread;
      c.deadlineMs = clock.nowMs + c.relay.ctx.idleTimeoutMs;
      c.write(c.upstream!, readChunk(this, b, arrayBuffer, nread));
    } else if (c.state === INSPECTING) {
      c.inspect(Buffer.from(arrayBuffer!, b.state[b.kArrayBufferOffset], nread));
    }
    return;
  }
  if (nread === UV_EOF) c.clientEnded();
  else if (nread < 0) c.destroy(true);
}

function onUpstreamRead(this: TcpHandle, arrayBuffer: ArrayBuffer | undefined): void {
  const c = this.conn;
  if (c === undefined) return;
  const b = c.b;
  const nread = b.state[b.kReadBytesOrError]!;
  if (nread > 0) {
    if (c.state !== SPLICED) c.spliced();
    c.bytesDown += nread;
    c.deadlineMs = clock.nowMs + c.relay.ctx.idleTimeoutMs;
    c.write(c.client, readChunk(this, b, arrayBuffer, nread));
    return;
  }
  if (nread === UV_EOF) c.upstreamEnded();
  else if (nread < 0) {
    if (c.state === SPLICED) c.destroy(true);
    else c.attemptFailed();
  }
}

function afterConnect(this: ConnectReq, status: number, handle: TcpHandle): void {
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
