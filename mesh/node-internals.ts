/**
 * The Node internals Causeway relies on, all in this one module: the `stream_wrap` and
 * `tcp_wrap` bindings (reached through `process.binding`), the native handle types they
 * expose, and the check that the running Node has them.
 *
 * They are the layer under `net.Socket` and `tls.TLSSocket`, where a read is one `onread`
 * call on the native handle and a write is one `WriteWrap`. The gateway's handle relay
 * (gateway/README.md, "The hot path") and the sidecar's socket I/O drive handles through
 * them, because the stream machinery on top (buffering, events, per-read ticks) cost
 * about twice HAProxy's CPU per gateway connection and a quarter of a proxied round trip
 * in the sidecar.
 *
 * Nothing here is a public Node API. Each loader checks the shape it needs once and
 * answers `undefined` when this Node does not have it; callers then fall back to
 * `net.Socket` streams, and {@link missingNodeInternals} says what was missing so that
 * code that cannot fall back can throw an error that names it.
 */
import type { Server, Socket } from 'node:net';

// The callbacks below are declared as methods: their parameters (and `this`) then compare
// bivariantly, so a user's own handle and request types — which extend these with the
// fields it hangs on them, like the gateway relay's connection — can install callbacks typed
// with those fields.

/** A native stream handle (TCP, pipe, TLS) as its bindings expose it. */
export interface StreamHandle {
  /** Called once per read; undefined until someone reads the handle. */
  onread?(this: StreamHandle, arrayBuffer: ArrayBuffer | undefined): void;
  /** net.Socket's own flag: whether it has started reading the handle. */
  reading?: boolean;
  readStart(): number;
  readStop(): number;
  writeBuffer(req: StreamWriteReq, buffer: Buffer): number;
  writeLatin1String(req: StreamWriteReq, text: string): number;
  writev(req: StreamWriteReq, chunks: Buffer[], allBuffers: true): number;
  readonly writeQueueSize: number;
}

/** One write in flight on a handle; `oncomplete` is called with `this` set to it. */
export interface StreamWriteReq {
  handle: StreamHandle;
  oncomplete(this: StreamWriteReq, status: number): void;
  async: boolean;
  /** What is being written, kept alive until the write is done. */
  buffer: Buffer | Buffer[] | string | undefined;
}

export interface StreamShutdownReq {
  handle: StreamHandle;
  oncomplete(this: StreamShutdownReq, status: number): void;
}

export interface StreamHandleBindings {
  WriteWrap: new () => StreamWriteReq;
  ShutdownWrap: new () => StreamShutdownReq;
  /** Shared with the native side: a read's byte count or error, its offset, whether the last write went async. */
  state: { [index: number]: number };
  kReadBytesOrError: number;
  kArrayBufferOffset: number;
  kLastWriteWasAsync: number;
}

/** A libuv TCP handle (`tcp_wrap`'s `TCP`): a stream handle that can also connect, shut down and close. */
export interface TcpHandle extends StreamHandle {
  shutdown(req: StreamShutdownReq): number;
  connect(req: TcpConnectReq, address: string, port: number): number;
  connect6(req: TcpConnectReq, address: string, port: number): number;
  setNoDelay(on: boolean): number;
  close(callback?: () => void): void;
  /** Closes with an RST; missing on older Node. */
  reset?(callback?: () => void): number;
  getpeername(out: Record<string, unknown>): number;
  /** Reads go into this buffer instead of a fresh allocation per read. */
  useUserBuffer(buffer: Buffer): void;
}

/** One connect in flight (`TCPConnectWrap`); `oncomplete` gets the status and the handle. */
export interface TcpConnectReq {
  oncomplete(this: TcpConnectReq, status: number, handle: TcpHandle): void;
  address: string;
  port: number;
}

/** The stream bindings plus what `tcp_wrap` adds to open and connect TCP handles. */
export interface TcpHandleBindings extends StreamHandleBindings {
  TCP: new (type: number) => TcpHandle;
  TCPConnectWrap: new () => TcpConnectReq;
  /** `TCP`'s constructor argument for a connecting (not listening) handle. */
  socketType: number;
}

/** libuv's UV_EOF: the same value on every platform libuv supports. */
export const UV_EOF = -4095;

/** `process.binding`, which Node marks deprecated but still serves for these modules. */
function binding(name: string): Record<string, unknown> {
  return (process as unknown as { binding(name: string): Record<string, unknown> }).binding(name);
}

/** What this Node lacks, by binding member; empty once checked and complete. */
const missing = { stream: [] as string[], tcp: [] as string[] };

let streamLoaded: StreamHandleBindings | undefined | null = null;

/** The stream-handle bindings of this Node, or `undefined` when it does not expose them. */
export function streamHandleBindings(): StreamHandleBindings | undefined {
  if (streamLoaded !== null) return streamLoaded;
  try {
    const stream = binding('stream_wrap') as Partial<StreamHandleBindings> & { streamBaseState?: StreamHandleBindings['state'] };
    if (typeof stream.WriteWrap !== 'function') missing.stream.push('stream_wrap.WriteWrap');
    if (typeof stream.ShutdownWrap !== 'function') missing.stream.push('stream_wrap.ShutdownWrap');
    if (stream.streamBaseState === undefined) missing.stream.push('stream_wrap.streamBaseState');
    for (const index of ['kReadBytesOrError', 'kArrayBufferOffset', 'kLastWriteWasAsync'] as const) {
      if (typeof stream[index] !== 'number') missing.stream.push(`stream_wrap.${index}`);
    }
    streamLoaded =
      missing.stream.length === 0
        ? {
            WriteWrap: stream.WriteWrap!,
            ShutdownWrap: stream.ShutdownWrap!,
            state: stream.streamBaseState!,
            kReadBytesOrError: stream.kReadBytesOrError!,
            kArrayBufferOffset: stream.kArrayBufferOffset!,
            kLastWriteWasAsync: stream.kLastWriteWasAsync!,
          }
        : undefined;
  } catch (error) {
    missing.stream.push(`process.binding('stream_wrap') (${(error as Error).message})`);
    streamLoaded = undefined;
  }
  return streamLoaded;
}

let tcpLoaded: TcpHandleBindings | undefined | null = null;

/** The TCP handle bindings (with the stream ones) of this Node, or `undefined` when it does not expose them. */
export function tcpHandleBindings(): TcpHandleBindings | undefined {
  if (tcpLoaded !== null) return tcpLoaded;
  const stream = streamHandleBindings();
  try {
    const tcp = binding('tcp_wrap') as { TCP?: TcpHandleBindings['TCP']; TCPConnectWrap?: TcpHandleBindings['TCPConnectWrap']; constants?: { SOCKET?: number } };
    if (typeof tcp.TCP !== 'function') missing.tcp.push('tcp_wrap.TCP');
    if (typeof tcp.TCPConnectWrap !== 'function') missing.tcp.push('tcp_wrap.TCPConnectWrap');
    if (typeof tcp.constants?.SOCKET !== 'number') missing.tcp.push('tcp_wrap.constants.SOCKET');
    tcpLoaded = stream !== undefined && missing.tcp.length === 0 ? { ...stream, TCP: tcp.TCP!, TCPConnectWrap: tcp.TCPConnectWrap!, socketType: tcp.constants!.SOCKET! } : undefined;
  } catch (error) {
    missing.tcp.push(`process.binding('tcp_wrap') (${(error as Error).message})`);
    tcpLoaded = undefined;
  }
  return tcpLoaded;
}

/**
 * The runtime check: what of the internals above this Node lacks (binding members, e.g.
 * `tcp_wrap.TCPConnectWrap`), or an empty list when it has them all. It loads them if
 * that was not done yet.
 */
export function missingNodeInternals(): readonly string[] {
  streamHandleBindings();
  tcpHandleBindings();
  return [...missing.stream, ...missing.tcp];
}

/** The native handle kinds whose `readStart`/`writev` the sidecar's native I/O drives. */
const NATIVE_STREAM_KINDS: ReadonlySet<string> = new Set(['TCP', 'TLSWrap', 'Pipe']);

/** A socket's current libuv handle (`socket._handle`); null once closed or while a connect replaces it. */
export function socketHandle(socket: Socket): StreamHandle | null {
  return (socket as unknown as { _handle: StreamHandle | null })._handle;
}

/** Whether `handle` is a native stream handle (TCP, TLS or pipe) that native I/O can drive. */
export function isNativeStreamHandle(handle: StreamHandle | null): handle is StreamHandle {
  return handle !== null && NATIVE_STREAM_KINDS.has(handle.constructor?.name ?? '');
}

/**
 * A listening server's own handle (`server._handle`), whose `onconnection` receives each
 * accepted client handle before Node wraps it in a Socket; null when not listening.
 */
export function listeningHandle<Client>(server: Server): { onconnection: (status: number, client: Client | undefined) => void } | null {
  return (server as unknown as { _handle: { onconnection: (status: number, client: Client | undefined) => void } | null })._handle;
}
