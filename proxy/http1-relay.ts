import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { ProxyErrorCodes } from './errors.js';
import { BodyFramer, Http1Error, headEnd, headerValue, leadingEmptyLines, parseRequestHead, parseResponseHead, responseBodyKind, rewriteHead, textResponse, upgradeLines, type RequestHead, type ResponseHead } from './http1.js';
import { sniffPreface } from './h2-preface.js';
import { socketIo, watchIdle, type SocketIo, type SocketIoReader } from './socket-io.js';
import { IDLE_KEEPALIVE_MS } from './wire.js';

/**
 * The sidecar's HTTP/1.1 fast path: requests are read off the downstream socket with
 * {@link parseRequestHead} and {@link BodyFramer}, one at a time, and handed to a handler
 * that forwards the (rewritten) head and the body bytes as received on an
 * {@link UpstreamConnection}, whose response is framed the same way and written back.
 * No IncomingMessage/ServerResponse/ClientRequest per request: that machinery was ~85 %
 * of a sidecar's CPU (proxy/README.md "Performance").
 *
 * Requests the fast path does not take (see {@link RequestHead.unusual}, and bodies
 * larger than the retry buffer) are handed, with every byte read so far, to Node's HTTP
 * server for the rest of the connection.
 */

type AnySocket = Socket | TLSSocket;

/** An object (not a closure: exchanges are made per request) told when its downstream goes. */
export interface AbortListener {
  aborted(): void;
}

/** Request bodies up to this size are held whole, so that a failed attempt can be replayed on another target. */
export const REQUEST_BUFFER_BYTES = 1 << 20;
/** Pipelined bytes kept while a request is in flight before reading from the peer pauses. */
const PIPELINE_BUFFER_BYTES = 64 * 1024;

/** A whole request, as received: the parsed head and the raw body bytes (chunk framing included). */
export interface BufferedRequest {
  readonly head: RequestHead;
  readonly body: Buffer;
  /** performance.now() when the head was complete. */
  readonly started: number;
}

export interface DownstreamHandler<C> {
  /** Serve one request; end with {@link DownstreamConnection.finish} (or abort). Never called again before that. */
  handle(connection: DownstreamConnection<C>, request: BufferedRequest): void;
  /** The fast path does not take this connection any more: serve it from `buffered` on (Node's HTTP server). */
  handOff(socket: AnySocket, buffered: Buffer, connection: DownstreamConnection<C>): void;
  /** A malformed request: answered with `error.status` and the connection closed. */
  rejected?(connection: DownstreamConnection<C>, error: Http1Error): void;
  /**
   * The connection opened with the HTTP/2 client preface (h2c with prior knowledge): serve
   * it as HTTP/2 from `buffered` on (the socket is back on its stream API, `buffered`
   * unshifted). Only a handler that has this method gets its connections sniffed.
   */
  http2?(socket: AnySocket, buffered: Buffer): void;
}

const enum ReadState {
  Head,
  Body,
  Busy,
  Gone,
}

/** What a writer can stop while the connection it writes to has too much queued. */
export interface ReadSource {
  pause(): void;
  resume(): void;
}

/** One downstream (app-facing or inbound) connection on the fast path. */
export class DownstreamConnection<C = unknown> implements SocketIoReader {
  readonly socket: AnySocket;
  readonly #io: SocketIo;
  readonly #stopIdleWatch: () => void;
  /** Stopped until this connection's queued writes drain. */
  #blockedSource: ReadSource | undefined;
  /** What the handler keeps per connection (caller identity, app connection…). */
  context: C;
  readonly #handler: DownstreamHandler<C>;
  #state = ReadState.Head;
  /** Unprocessed bytes, from the start of the current request's head. */
  #pending: Buffer | undefined;
  #head: RequestHead | undefined;
  #headBytes: Buffer | undefined;
  #framer: BodyFramer | undefined;
  #bodyParts: Buffer[] = [];
  #bodyLength = 0;
  #started = 0;
  /** Told when the connection goes while a request is being served. */
  #onAbort: AbortListener | undefined;
  #closeAfter = false;
  /** Until the first bytes tell HTTP/1.1 from the HTTP/2 preface (only when the handler serves HTTP/2). */
  #sniffing: boolean;

  constructor(socket: AnySocket, handler: DownstreamHandler<C>, context: C, idleTimeoutMs: number) {
    this.socket = socket;
    this.#handler = handler;
    this.context = context;
    this.#sniffing = handler.http2 !== undefined;
    socket.on('error', noop);
    socket.once('close', this.#onClose);
    this.#io = socketIo(socket, this);
    // Idle between requests: close. While a request is served, its own timeouts apply.
    this.#stopIdleWatch = watchIdle(this.#io, idleTimeoutMs, () => {
      if (this.#state === ReadState.Head && this.#pending === undefined) socket.destroy();
    });
  }

  /** The socket's reads and writes (native or stream). */
  get io(): SocketIo {
    return this.#io;
  }

  /** Set by the handler while it serves a request: told if the downstream goes away meanwhile. */
  onAbort(listener: AbortListener | undefined): void {
    this.#onAbort = listener;
  }

  get gone(): boolean {
    return this.#state === ReadState.Gone;
  }

  /** Writes response bytes; when too much is queued, `source` is paused until it drains. */
  write(chunk: Buffer | string, source?: ReadSource): void {
    if (this.#state === ReadState.Gone) return;
    const ok = this.#io.write(chunk);
    if (!ok && source && this.#blockedSource === undefined) {
      source.pause();
      this.#blockedSource = source;
    }
  }

  ioDrained(): void {
    const source = this.#blockedSource;
    this.#blockedSource = undefined;
    source?.resume();
  }

  /**
   * The response to the current request is complete. `close` ends the connection (the
   * request or the response asked for it); otherwise the next pipelined request is read.
   */
  finish(close: boolean): void {
    this.#onAbort = undefined;
    if (this.#state === ReadState.Gone) return;
    if (close || this.#closeAfter) {
      this.#state = ReadState.Gone;
      this.#io.end();
      return;
    }
    this.#state = ReadState.Head;
    this.#head = undefined;
    this.#headBytes = undefined;
    this.#framer = undefined;
    this.#bodyParts = [];
    this.#bodyLength = 0;
    if (this.#io.paused) this.#io.resume();
    if (this.#pending) this.#advance();
  }

  /**
   * Leaves the fast path for good (an upgraded connection becomes a byte stream, or Node's
   * server takes over): stops reading requests, and once every write has gone out gives
   * the socket back to its stream API and calls `then` with the bytes received after the
   * current request.
   */
  detach(then: (rest: Buffer | undefined) => void): void {
    const rest = this.#pending;
    this.#onAbort = undefined;
    this.#state = ReadState.Gone;
    this.#pending = undefined;
    this.socket.off('close', this.#onClose);
    this.#stopIdleWatch();
    this.#io.detach(() => then(rest));
  }

  /**
   * The upstream answered an upgrade request with 101: relays the head (with its
   * Connection/Upgrade lines), then splices this connection and the upstream's socket.
   * `rest` is what the upstream sent after the head; bytes the client sent after its
   * request go to the upstream.
   */
  switchProtocols(upstream: UpstreamConnection, response: ResponseHead, rest: Buffer, requested: string): void {
    this.write(rewriteHead(response, NO_DROPS, upgradeLines(headerValue(response, 'upgrade') ?? requested)));
    if (rest.length > 0) this.write(rest);
    let waiting = 2;
    let early: Buffer | undefined;
    const both = () => {
      if (--waiting > 0) return;
      if (early) upstream.socket.write(early);
      splice(this.socket, upstream.socket);
    };
    this.detach((bytes) => {
      early = bytes;
      both();
    });
    upstream.detach(both);
  }

  /** Ends the connection now (the response cannot be completed). */
  abort(): void {
    this.#onAbort = undefined;
    this.#state = ReadState.Gone;
    this.socket.destroy();
  }

  readonly #onClose = (): void => {
    const abort = this.#onAbort;
    this.#state = ReadState.Gone;
    this.#onAbort = undefined;
    this.#pending = undefined;
    abort?.aborted();
  };

  ioData(chunk: Buffer): void {
    switch (this.#state) {
      case ReadState.Head:
        this.#pending = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
        if (this.#sniffing && !this.#sniffed()) return;
        this.#advance();
        return;
      case ReadState.Body:
        this.#takeBody(chunk);
        return;
      case ReadState.Busy:
        // Pipelined: kept until the current response is done.
        this.#pending = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
        if (this.#pending.length > PIPELINE_BUFFER_BYTES) this.#io.pause();
        return;
      case ReadState.Gone:
        return;
    }
  }

  #advance(): void {
    const buf = this.#pending!;
    let start: number;
    let end: number;
    try {
      start = leadingEmptyLines(buf);
      end = headEnd(buf, start);
      if (end < 0) return;
      this.#head = parseRequestHead(buf, start, end);
    } catch (error) {
      this.#reject(error);
      return;
    }
    this.#started = performance.now();
    if (this.#head.unusual !== undefined) {
      this.#handOff(buf.subarray(start));
      return;
    }
    this.#headBytes = buf.subarray(start, end);
    this.#pending = undefined;
    this.#framer = BodyFramer.forRequest(this.#head);
    this.#closeAfter = this.#head.close;
    this.#state = ReadState.Body;
    if (this.#framer.done) {
      this.#dispatch(end < buf.length ? buf.subarray(end) : undefined);
      return;
    }
    if (end < buf.length) this.#takeBody(buf.subarray(end));
  }

  /** Whether the connection's first bytes are (still) read as HTTP/1.1; on the HTTP/2 preface it goes to the handler's HTTP/2 server. */
  #sniffed(): boolean {
    const verdict = sniffPreface(this.#pending!);
    if (verdict === 'more') return false;
    this.#sniffing = false;
    if (verdict === 'http1') return true;
    const buffered = this.#pending!;
    this.#pending = undefined;
    this.#leave(buffered, (socket) => this.#handler.http2!(socket, buffered));
    return false;
  }

  #takeBody(chunk: Buffer): void {
    let n: number;
    try {
      n = this.#framer!.consume(chunk, 0, chunk.length);
    } catch (error) {
      this.#reject(error);
      return;
    }
    if (n > 0) {
      this.#bodyParts.push(n === chunk.length ? chunk : chunk.subarray(0, n));
      this.#bodyLength += n;
    }
    if (this.#framer!.done) {
      this.#dispatch(n < chunk.length ? chunk.subarray(n) : undefined);
    } else if (this.#bodyLength > REQUEST_BUFFER_BYTES) {
      // Too large to hold for a replay: Node's server streams it (without retries).
      this.#handOff(Buffer.concat([this.#headBytes!, ...this.#bodyParts]));
    }
  }

  #dispatch(rest: Buffer | undefined): void {
    this.#state = ReadState.Busy;
    this.#pending = rest;
    const parts = this.#bodyParts;
    const body = parts.length === 0 ? EMPTY : parts.length === 1 ? parts[0]! : Buffer.concat(parts, this.#bodyLength);
    this.#handler.handle(this, { head: this.#head!, body, started: this.#started });
  }

  #handOff(buffered: Buffer): void {
    this.#leave(buffered, (socket) => this.#handler.handOff(socket, buffered, this));
  }

  /** Leaves the fast path with `buffered` put back in front of the socket's unread bytes, for `then` to serve. */
  #leave(buffered: Buffer, then: (socket: AnySocket) => void): void {
    this.detach(() => {
      const socket = this.socket;
      if (socket.destroyed) return;
      socket.pause();
      if (buffered.length > 0) socket.unshift(buffered);
      then(socket);
    });
  }

  #reject(error: unknown): void {
    const status = error instanceof Http1Error ? error.status : 400;
    if (error instanceof Http1Error) this.#handler.rejected?.(this, error);
    this.#state = ReadState.Gone;
    this.#pending = undefined;
    this.#io.end(textResponse(status, `${(error as Error).message}\n`, { 'x-causeway-error': ProxyErrorCodes.badRequest }, true));
  }
}

/**
 * Node's HTTP server for the connections the fast path hands off (never listening
 * itself: {@link DownstreamHandler.handOff} emits them into it). A malformed request
 * closes its connection with a 400; it never reaches the process.
 */
export function handOffServer(onRequest: (req: IncomingMessage, res: ServerResponse) => void): HttpServer {
  const server = createHttpServer({ keepAlive: true, noDelay: true, requestTimeout: 0, keepAliveTimeout: IDLE_KEEPALIVE_MS }, onRequest);
  server.on('clientError', (_error, socket: Duplex) => {
    if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });
  return server;
}

const EMPTY = Buffer.alloc(0);
const NO_DROPS: ReadonlySet<string> = new Set();
function noop(): void {}

/** What an {@link UpstreamConnection} reports about the response it is reading. */
export interface ResponseSink {
  /**
   * The head arrived (1xx interim heads too). Return `'forward'` to have the body passed
   * to {@link body}, `'discard'` to read and drop it (the connection stays usable).
   */
  head(head: ResponseHead, kind: 'none' | 'length' | 'chunked' | 'close'): 'forward' | 'discard';
  body(chunk: Buffer): void;
  /** The response is complete; `reusable` says whether the connection may carry another request. */
  end(reusable: boolean): void;
  /** The connection failed or answered garbage; `gotHead` says whether a head was already reported. */
  fail(error: Error, gotHead: boolean): void;
  /** Brackets the handling of one read: writes in between may be coalesced (cork/uncork). */
  batch?(open: boolean): void;
  /**
   * A 101 answered an upgrade request: the connection is now the protocol's byte stream,
   * detached from this reader; `rest` holds the bytes that came after the head.
   */
  upgraded?(head: ResponseHead, rest: Buffer): void;
}

const enum ResponseState {
  Idle,
  Head,
  Body,
  /** Upgraded: a byte stream somebody else relays. */
  Detached,
}

/**
 * One connection to an upstream (a target's mTLS connection, or the app's), reading one
 * response at a time. Its listeners are installed once, not per request.
 */
export class UpstreamConnection implements SocketIoReader, ReadSource {
  readonly socket: AnySocket;
  readonly #io: SocketIo;
  /** Requests this connection has answered (a failure on a reused connection may be a keep-alive race). */
  served = 0;
  #state = ResponseState.Idle;
  #sink: ResponseSink | undefined;
  #method = 'GET';
  #pending: Buffer | undefined;
  #framer: BodyFramer | undefined;
  #forward = true;
  #reusable = true;
  #upgrade = false;
  #closed = false;
  #connected: boolean;
  #onIdleClose: UpstreamPool | undefined;

  constructor(socket: AnySocket) {
    this.socket = socket;
    // Whether a failure came before or after the TCP connect decides if the request may have been seen.
    this.#connected = !socket.connecting;
    if (!this.#connected) socket.once('connect', () => (this.#connected = true));
    socket.on('error', noop);
    socket.once('close', this.#onClose);
    this.#io = socketIo(socket, this);
  }

  /** The socket's reads and writes (native or stream). */
  get io(): SocketIo {
    return this.#io;
  }

  pause(): void {
    this.#io.pause();
  }

  resume(): void {
    this.#io.resume();
  }

  ioDrained(): void {}

  /** Leaves response reading for good (upgraded): once every write is out, the socket is a plain stream again. */
  detach(then: () => void): void {
    this.#io.detach(then);
  }

  get closed(): boolean {
    return this.#closed || this.socket.destroyed;
  }

  /** The TCP connection was established at some point (a failure after it may have reached the peer). */
  get connected(): boolean {
    return this.#connected;
  }

  /** Told when the connection closes while no response is being read (pools drop it). */
  set onIdleClose(pool: UpstreamPool | undefined) {
    this.#onIdleClose = pool;
  }

  /** Sends a request (`head` already rewritten, `body` as received) and reads its response into `sink`. */
  send(method: string, head: string, body: Buffer, sink: ResponseSink, upgrade = false): void {
    this.#method = method;
    this.#upgrade = upgrade;
    this.#sink = sink;
    this.#state = ResponseState.Head;
    this.#forward = true;
    this.#reusable = true;
    if (this.closed) {
      // It went between the pool handing it out and this request: report it like a reset.
      queueMicrotask(() => {
        if (this.#sink !== sink) return;
        this.#state = ResponseState.Idle;
        this.#sink = undefined;
        sink.fail(new Error('the connection closed before a response'), false);
      });
      return;
    }
    const io = this.#io;
    if (io.paused) io.resume();
    if (body.length === 0) {
      io.write(head);
    } else {
      io.cork();
      io.write(head);
      io.write(body);
      io.uncork();
    }
  }

  /** Gives up on the response being read (timeout, downstream gone): the connection is closed. */
  destroy(error?: Error): void {
    this.#sink = undefined;
    this.#state = ResponseState.Idle;
    this.socket.destroy(error);
  }

  readonly #onClose = (): void => {
    this.#closed = true;
    if (this.#state === ResponseState.Detached) return;
    if (this.#state === ResponseState.Idle) {
      this.#onIdleClose?.idleClosed(this);
      return;
    }
    const sink = this.#sink;
    if (this.#state === ResponseState.Body && this.#framer?.untilClose) {
      this.#complete(false);
      return;
    }
    const gotHead = this.#state === ResponseState.Body;
    this.#state = ResponseState.Idle;
    this.#sink = undefined;
    sink?.fail(new Error(gotHead ? 'the connection closed in the middle of the response body' : 'the connection closed before a response'), gotHead);
  };

  ioData(chunk: Buffer): void {
    if (this.#state === ResponseState.Detached) return;
    // What one read produces (usually a whole response: head and body) goes out as one write.
    const sink = this.#sink;
    sink?.batch?.(true);
    try {
      this.#read(chunk);
    } catch (error) {
      const sink = this.#sink;
      const gotHead = this.#state === ResponseState.Body;
      this.#state = ResponseState.Idle;
      this.#sink = undefined;
      this.socket.destroy();
      sink?.fail(error as Error, gotHead);
    } finally {
      sink?.batch?.(false);
    }
  }

  #read(chunk: Buffer): void {
    let buf = chunk;
    let offset = 0;
    while (offset < buf.length) {
      if (this.#state === ResponseState.Idle) {
        // Bytes nobody asked for: the connection cannot be trusted with another request.
        this.socket.destroy();
        return;
      }
      if (this.#state === ResponseState.Head) {
        if (this.#pending) {
          buf = Buffer.concat([this.#pending, buf.subarray(offset)]);
          offset = 0;
          this.#pending = undefined;
        }
        const end = headEnd(buf, offset);
        if (end < 0) {
          this.#pending = offset === 0 ? buf : buf.subarray(offset);
          return;
        }
        const head = parseResponseHead(buf, offset, end);
        offset = end;
        if (head.status === 101) {
          if (!this.#upgrade || !this.#sink!.upgraded) throw new Http1Error(502, 'the upstream switched protocols without being asked');
          const sink = this.#sink!;
          this.#state = ResponseState.Detached;
          this.#sink = undefined;
          sink.upgraded!(head, buf.subarray(offset));
          return;
        }
        const kind = responseBodyKind({ method: this.#method }, head);
        if (head.close || kind === 'close') this.#reusable = false;
        const decision = this.#sink!.head(head, kind);
        if (head.status < 200) continue; // interim (100, 103): the final head follows
        this.#forward = decision === 'forward';
        this.#framer = new BodyFramer(kind, head.contentLength);
        if (this.#framer.done) {
          this.#complete(this.#reusable);
          continue;
        }
        this.#state = ResponseState.Body;
        continue;
      }
      // Body
      const n = this.#framer!.consume(buf, offset, buf.length);
      if (n > 0 && this.#forward) this.#sink!.body(offset === 0 && n === buf.length ? buf : buf.subarray(offset, offset + n));
      offset += n;
      if (this.#framer!.done) this.#complete(this.#reusable);
    }
  }

  #complete(reusable: boolean): void {
    const sink = this.#sink;
    this.#state = ResponseState.Idle;
    this.#sink = undefined;
    this.#framer = undefined;
    this.served++;
    if (!reusable) this.socket.destroy();
    sink?.end(reusable && !this.closed);
  }
}

/**
 * Pooled keep-alive connections to one upstream (LIFO, so that idle ones age out), at
 * most `max` at once. A request that finds no idle connection
 * queues at the pool, not at a connection of its own: it takes whichever comes first, a
 * busy connection released or a new one established — as Envoy's HTTP/1 pool does. New
 * connections open only for requests no connect is already under way for, at most
 * `maxConnecting` at a time: a handshake costs milliseconds of CPU on both sidecars,
 * a request on a warm connection well under one, so after a hiccup the backlog drains
 * through the warm connections instead of a burst of handshakes that starves the host
 * and makes the stall longer (bench:mesh, 2026-12-02: connections 26 → 600 and stalls
 * of 100–300 ms before this).
 */
export class UpstreamPool {
  readonly #dial: () => Promise<AnySocket>;
  readonly #max: number;
  readonly #maxConnecting: number;
  readonly #idleMs: number;
  readonly #idle: UpstreamConnection[] = [];
  readonly #waiters: { resolve: (c: UpstreamConnection) => void; reject: (e: unknown) => void }[] = [];
  /** Established connections plus connects under way. */
  #open = 0;
  #connecting = 0;
  #destroyed = false;

  constructor(dial: () => Promise<AnySocket>, options: { max: number; idleMs: number; maxConnecting?: number }) {
    this.#dial = dial;
    this.#max = options.max;
    this.#maxConnecting = Math.max(1, options.maxConnecting ?? 4);
    this.#idleMs = options.idleMs;
  }

  get size(): number {
    return this.#open;
  }

  /** Requests waiting for a connection. */
  get queued(): number {
    return this.#waiters.length;
  }

  /** An idle connection, if there is one (the common case, without a promise). */
  takeIdle(): UpstreamConnection | undefined {
    while (this.#idle.length > 0) {
      const c = this.#idle.pop()!;
      if (c.closed) continue;
      c.onIdleClose = undefined;
      return c;
    }
    return undefined;
  }

  /** An idle connection, else the first one released or established for this request. */
  acquire(): Promise<UpstreamConnection> {
    const idle = this.takeIdle();
    if (idle) return Promise.resolve(idle);
    if (this.#destroyed) return Promise.reject(new Error('the pool was closed'));
    return new Promise((resolve, reject) => {
      this.#waiters.push({ resolve, reject });
      this.#grow();
    });
  }

  /** Back to the pool after a complete response (`reusable`), or dropped. */
  release(c: UpstreamConnection, reusable: boolean): void {
    if (!reusable || c.closed || this.#destroyed) {
      this.#drop(c);
      return;
    }
    this.#hand(c);
  }

  /** An idle connection closed (the peer's idle timeout, a reset). */
  idleClosed(c: UpstreamConnection): void {
    const at = this.#idle.indexOf(c);
    if (at >= 0) this.#idle.splice(at, 1);
    this.#gone();
  }

  /** A connection that left the pool's care (upgraded to a byte stream): no longer counted. */
  forget(c: UpstreamConnection): void {
    c.onIdleClose = undefined;
    this.#gone();
  }

  /** A usable connection: to the longest-waiting request, else idle. */
  #hand(c: UpstreamConnection): void {
    const waiter = this.#waiters.shift();
    if (waiter) {
      waiter.resolve(c);
      return;
    }
    c.onIdleClose = this;
    this.#idle.push(c);
  }

  /** A connection that failed or was given up on. */
  #drop(c: UpstreamConnection): void {
    c.onIdleClose = undefined;
    if (!c.socket.destroyed) c.destroy();
    this.#gone();
  }

  #gone(): void {
    this.#open--;
    // Queued requests that counted on it get a connect in its place.
    this.#grow();
  }

  /** Opens connections for the queued requests no connect is under way for, within the limits. */
  #grow(): void {
    while (!this.#destroyed && this.#waiters.length > this.#connecting && this.#connecting < this.#maxConnecting && this.#open < this.#max) this.#connect();
  }

  #connect(): void {
    this.#open++;
    this.#connecting++;
    this.#dial().then(
      (socket) => {
        this.#connecting--;
        if (this.#destroyed) {
          this.#open--;
          socket.destroy();
          return;
        }
        const c = new UpstreamConnection(socket);
        // Closed after idleMs without traffic, and only while it sits in the pool unused.
        watchIdle(c.io, this.#idleMs, () => {
          if (this.#idle.includes(c)) c.destroy();
        });
        this.#hand(c);
        this.#grow();
      },
      (error: unknown) => {
        this.#connecting--;
        this.#open--;
        // The failure is the queued requests' to see (each fails over to its next target
        // and counts against this one): all of them when no connection is left that could
        // be released to them, else the longest-waiting one, whose connect this was.
        const failed = this.#open - this.#connecting === 0 ? this.#waiters.splice(0) : this.#waiters.splice(0, 1);
        for (const w of failed) w.reject(error);
        this.#grow();
      },
    );
  }

  destroy(): void {
    this.#destroyed = true;
    for (const c of this.#idle.splice(0)) c.destroy();
    for (const w of this.#waiters.splice(0)) w.reject(new Error('the pool was closed'));
  }
}

/** Relays an upgraded connection's bytes both ways until either side closes. */
export function splice(a: AnySocket, b: AnySocket): void {
  a.pipe(b);
  b.pipe(a);
  const close = () => {
    a.destroy();
    b.destroy();
  };
  a.once('close', close);
  b.once('close', close);
  a.resume();
  b.resume();
}
