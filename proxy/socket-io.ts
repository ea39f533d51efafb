import type { Socket } from 'node:net';
import { constants as osConstants } from 'node:os';
import type { TLSSocket } from 'node:tls';
import { getSystemErrorName } from 'node:util';
import { isNativeStreamHandle, socketHandle, streamHandleBindings, UV_EOF, type StreamHandle, type StreamHandleBindings, type StreamWriteReq } from '../mesh/index.js';

/**
 * The sidecar's reads and writes on an established connection (plain or TLS), for the
 * HTTP/1.1 fast path. By default they go straight to the socket's native handle (Node's
 * stream-handle bindings, as the gateway's relay does): a read is one `onread` call that
 * hands the bytes to the reader, a write one `WriteWrap`. `net.Socket`'s Readable and
 * Writable machinery — push, buffering, `data` events, a tick per read, cork buffers —
 * were a quarter of the CPU of a proxied TLS round trip. The socket object stays in
 * charge of everything else: the TLS handshake, errors, `close`, `destroy`, and its
 * `bytesRead`/`bytesWritten`, which the handle counts natively.
 *
 * Where the bindings are missing or the handle is of another kind, the same interface is
 * served by the socket's own stream API ({@link StreamSocketIo});
 * `CAUSEWAY_SIDECAR_SOCKET_IO=stream` forces that everywhere.
 */
export interface SocketIo {
  readonly socket: AnySocket;
  /** Writes bytes (strings as latin1); false once more than the high-water mark is queued — `drained` follows. */
  write(chunk: Buffer | string): boolean;
  /** Between cork and uncork, writes are gathered and leave as one. */
  cork(): void;
  uncork(): void;
  pause(): void;
  resume(): void;
  readonly paused: boolean;
  /** Ends the connection once everything written has gone out (FIN, then close). */
  end(last?: Buffer | string): void;
  /**
   * Stops delivering reads and, once every write has completed, gives the socket back to
   * its stream API (for Node's HTTP server, or a pipe) and calls `then`.
   */
  detach(then: () => void): void;
  /** performance.now() of the last read or write: idle timers compare against it. */
  readonly lastActiveMs: number;
}

/** What a {@link SocketIo} reports to the connection that reads it. */
export interface SocketIoReader {
  /** One read's bytes; the buffer is the reader's to keep. */
  ioData(chunk: Buffer): void;
  /** The queued writes went below the high-water mark again. */
  ioDrained(): void;
}

type AnySocket = Socket | TLSSocket;

/** Queued bytes above which a writer is told to stop its source. */
const HIGH_WATER_BYTES = 64 * 1024;
/** A batch up to this size is copied into one buffer (one TLS record, one syscall); larger ones go as a writev. */
const COALESCE_BYTES = 16 * 1024;

const UV_EALREADY = -osConstants.errno.EALREADY;
const forceStreams = process.env.CAUSEWAY_SIDECAR_SOCKET_IO === 'stream';

/** The best I/O this socket allows, reading into `reader`. */
export function socketIo(socket: AnySocket, reader: SocketIoReader): SocketIo {
  const bindings = forceStreams ? undefined : streamHandleBindings();
  const handle = socketHandle(socket);
  if (bindings !== undefined && isNativeStreamHandle(handle) && !socket.destroyed) {
    return new NativeSocketIo(socket, handle, bindings, reader);
  }
  return new StreamSocketIo(socket, reader);
}

/**
 * Calls `onIdle` once `io` has had no read or write for `idleMs`, and again after every
 * further quiet `idleMs` while the socket stays open. Native I/O does not refresh the
 * socket's own timer, so that timer is only the alarm clock here: the quiet time is
 * measured from {@link SocketIo.lastActiveMs}. Returns a function that stops watching.
 */
export function watchIdle(io: SocketIo, idleMs: number, onIdle: () => void): () => void {
  const socket = io.socket;
  const check = (): void => {
    const quietMs = performance.now() - io.lastActiveMs;
    if (quietMs < idleMs) {
      socket.setTimeout(Math.ceil(idleMs - quietMs));
      return;
    }
    onIdle();
    if (!socket.destroyed) socket.setTimeout(idleMs);
  };
  socket.on('timeout', check);
  socket.setTimeout(idleMs);
  return () => {
    socket.off('timeout', check);
    socket.setTimeout(0);
  };
}

/** The socket's own stream API behind the {@link SocketIo} interface. */
export class StreamSocketIo implements SocketIo {
  readonly socket: AnySocket;
  readonly #reader: SocketIoReader;
  lastActiveMs = performance.now();

  constructor(socket: AnySocket, reader: SocketIoReader) {
    this.socket = socket;
    this.#reader = reader;
    socket.on('data', this.#onData);
    socket.on('drain', this.#onDrain);
  }

  readonly #onData = (chunk: Buffer): void => {
    this.lastActiveMs = performance.now();
    this.#reader.ioData(chunk);
  };

  readonly #onDrain = (): void => this.#reader.ioDrained();

  write(chunk: Buffer | string): boolean {
    this.lastActiveMs = performance.now();
    return typeof chunk === 'string' ? this.socket.write(chunk, 'latin1') : this.socket.write(chunk);
  }

  cork(): void {
    this.socket.cork();
  }

  uncork(): void {
    this.socket.uncork();
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  get paused(): boolean {
    return this.socket.isPaused();
  }

  end(last?: Buffer | string): void {
    if (last === undefined) this.socket.end();
    else if (typeof last === 'string') this.socket.end(last, 'latin1');
    else this.socket.end(last);
  }

  detach(then: () => void): void {
    this.socket.off('data', this.#onData);
    this.socket.off('drain', this.#onDrain);
    then();
  }
}

/**
 * Native I/O on the socket's handle. Writes are serialised — one in flight, the rest
 * gathered behind it — because a TLS handle takes only one write at a time (as
 * `net.Socket`'s Writable does for it), and a write that went async keeps its buffer
 * alive until it completes.
 */
class NativeSocketIo implements SocketIo {
  readonly socket: AnySocket;
  readonly #reader: SocketIoReader;
  readonly #b: StreamHandleBindings;
  #handle: StreamHandle;
  /** The socket's own read callback, given back on detach. */
  #streamOnread: StreamHandle['onread'];
  /** Not attached yet (connecting): writes wait in #queued. */
  #attached = false;
  #detached = false;
  #paused = false;
  #corked = false;
  #inFlight = false;
  /** Written while another write was in flight (or while corked), in order. */
  #queued: Buffer[] = [];
  #queuedBytes = 0;
  #inFlightBytes = 0;
  #aboveHighWater = false;
  #ending = false;
  #onIdle: (() => void) | undefined;
  lastActiveMs = performance.now();

  constructor(socket: AnySocket, handle: StreamHandle, bindings: StreamHandleBindings, reader: SocketIoReader) {
    this.socket = socket;
    this.#reader = reader;
    this.#b = bindings;
    this.#handle = handle;
    this.#streamOnread = handle.onread;
    // Bytes the socket's Readable already holds (unshifted by a sniffer, or read with the
    // end of a handshake) are taken now — before anybody resumes the stream and drops them
    // for want of a 'data' listener — and handed over ahead of any native read.
    if (socket.readableLength > 0) {
      const held = socket.read() as Buffer | null;
      if (held !== null && held.length > 0) queueMicrotask(() => this.#detached || reader.ioData(held));
    }
    if (socket.connecting) socket.once('connect', () => this.#attach());
    else this.#attach();
  }

  #attach(): void {
    if (this.#detached || this.socket.destroyed) return;
    // The handle may have been replaced while connecting; take the current one.
    const handle = socketHandle(this.socket);
    if (handle === null) return;
    this.#handle = handle;
    this.#streamOnread = handle.onread;
    (handle as StreamHandle & { socketIo?: NativeSocketIo }).socketIo = this;
    handle.onread = onNativeRead;
    this.#attached = true;
    if (!this.#paused) this.#startReading();
    this.#settle();
  }

  #startReading(): void {
    this.#handle.reading = true;
    const err = this.#handle.readStart();
    // Already reading (net.Socket started it) is what we want.
    if (err < 0 && err !== UV_EALREADY) this.#fail(err, 'read');
  }

  /** Called by {@link onNativeRead} with one read's result. */
  read(arrayBuffer: ArrayBuffer | undefined): void {
    const nread = this.#b.state[this.#b.kReadBytesOrError]!;
    if (nread > 0) {
      if (this.#detached || arrayBuffer === undefined) return;
      this.lastActiveMs = performance.now();
      this.#reader.ioData(Buffer.from(arrayBuffer, this.#b.state[this.#b.kArrayBufferOffset], nread));
      return;
    }
    if (nread === UV_EOF) {
      // As net.Socket does without allowHalfOpen: the peer's FIN ends this side too, after what is queued.
      this.end();
      return;
    }
    if (nread < 0) this.#fail(nread, 'read');
  }

  write(chunk: Buffer | string): boolean {
    if (this.#ending || this.#detached) return false;
    this.lastActiveMs = performance.now();
    if (this.#inFlight || this.#corked || !this.#attached) {
      const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk;
      this.#queued.push(buf);
      this.#queuedBytes += buf.length;
      return this.#checkHighWater();
    }
    this.#dispatch(chunk, chunk.length);
    return this.#checkHighWater();
  }

  cork(): void {
    this.#corked = true;
  }

  uncork(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.#settle();
  }

  pause(): void {
    if (this.#paused) return;
    this.#paused = true;
    if (this.#attached && !this.#detached) {
      this.#handle.reading = false;
      this.#handle.readStop();
    }
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    if (this.#attached && !this.#detached && !this.socket.destroyed) this.#startReading();
  }

  get paused(): boolean {
    return this.#paused;
  }

  end(last?: Buffer | string): void {
    if (this.#ending) return;
    if (last !== undefined) this.write(last);
    this.#ending = true;
    this.#whenIdle(() => this.socket.destroySoon());
  }

  detach(then: () => void): void {
    if (this.#detached) return;
    this.#detached = true;
    const handle = this.#handle;
    if (this.#attached) {
      handle.readStop();
      handle.onread = this.#streamOnread;
      (handle as StreamHandle & { socketIo?: NativeSocketIo }).socketIo = undefined;
    }
    this.#whenIdle(() => {
      if (this.#attached && !this.socket.destroyed) {
        // Reading again, now into the socket's Readable (which never saw a read of ours, so it still waits for one).
        handle.reading = true;
        handle.readStart();
      }
      then();
    });
  }

  /** Runs `then` once no write is in flight or queued (at once when none is). */
  #whenIdle(then: () => void): void {
    if (!this.#inFlight && this.#queued.length === 0 && (this.#attached || this.socket.destroyed)) {
      then();
      return;
    }
    const before = this.#onIdle;
    this.#onIdle = before ? () => (before(), then()) : then;
  }

  #dispatch(data: Buffer | string | Buffer[], bytes: number): void {
    const b = this.#b;
    const req = new b.WriteWrap();
    req.handle = this.#handle;
    req.oncomplete = onNativeWriteDone;
    req.async = false;
    req.buffer = data;
    (req as StreamWriteReq & { io: NativeSocketIo }).io = this;
    const err = typeof data === 'string' ? this.#handle.writeLatin1String(req, data) : Array.isArray(data) ? this.#handle.writev(req, data, true) : this.#handle.writeBuffer(req, data);
    if (err < 0) {
      this.#fail(err, 'write');
      return;
    }
    if (b.state[b.kLastWriteWasAsync]) {
      this.#inFlight = true;
      this.#inFlightBytes = bytes;
    }
  }

  /** Sends everything queued as one write. */
  #flush(): void {
    const parts = this.#queued;
    const bytes = this.#queuedBytes;
    this.#queued = [];
    this.#queuedBytes = 0;
    this.#dispatch(parts.length === 1 ? parts[0]! : bytes <= COALESCE_BYTES ? Buffer.concat(parts, bytes) : parts, bytes);
  }

  /** Called by {@link onNativeWriteDone}. */
  writeDone(status: number): void {
    this.#inFlight = false;
    this.#inFlightBytes = 0;
    if (status < 0) {
      this.#fail(status, 'write');
      return;
    }
    this.#settle();
  }

  /** After a write completed or a cork came off: sends what waits, then tells who waits for a drain or for idleness. */
  #settle(): void {
    if (this.#inFlight || this.#corked || !this.#attached) return;
    if (this.#queued.length > 0) {
      this.#flush();
      if (this.#inFlight) return;
    }
    if (this.#aboveHighWater && this.#queuedBytes + this.#inFlightBytes <= HIGH_WATER_BYTES) {
      this.#aboveHighWater = false;
      this.#reader.ioDrained();
    }
    if (this.#queued.length === 0 && this.#onIdle) {
      const idle = this.#onIdle;
      this.#onIdle = undefined;
      idle();
    }
  }

  #checkHighWater(): boolean {
    if (this.#queuedBytes + this.#inFlightBytes > HIGH_WATER_BYTES) {
      this.#aboveHighWater = true;
      return false;
    }
    return true;
  }

  #fail(status: number, what: 'read' | 'write'): void {
    this.#queued = [];
    this.#queuedBytes = 0;
    this.#onIdle = undefined;
    const code = getSystemErrorName(status);
    this.socket.destroy(Object.assign(new Error(`${what} ${code}`), { code, errno: status, syscall: what }));
  }
}

function onNativeRead(this: StreamHandle & { socketIo?: NativeSocketIo }, arrayBuffer: ArrayBuffer | undefined): void {
  this.socketIo?.read(arrayBuffer);
}

function onNativeWriteDone(this: StreamWriteReq, status: number): void {
  this.buffer = undefined;
  (this as StreamWriteReq & { io: NativeSocketIo }).io.writeDone(status);
}
