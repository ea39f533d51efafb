/**
 * Node's stream-handle bindings (`stream_wrap`): the layer under `net.Socket` and
 * `tls.TLSSocket` where a read is one `onread` call on the native handle and a write is
 * one `WriteWrap`. The gateway's relay and the sidecar's socket I/O drive handles through
 * them, because the stream machinery on top (buffering, events, per-read ticks) cost a
 * quarter of a proxied round trip.
 *
 * They are internal to Node: {@link streamHandleBindings} checks their shape once and
 * answers `undefined` when this Node does not have them, and callers fall back to streams.
 */

/** A native stream handle (TCP, pipe, TLS) as its bindings expose it. */
export interface StreamHandle {
  onread: ((this: StreamHandle, arrayBuffer: ArrayBuffer | undefined) => void) | undefined;
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
  oncomplete: (this: StreamWriteReq, status: number) => void;
  async: boolean;
  /** What is being written, kept alive until the write is done. */
  buffer: Buffer | Buffer[] | string | undefined;
}

export interface StreamShutdownReq {
  handle: StreamHandle;
  oncomplete: (this: StreamShutdownReq, status: number) => void;
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

/** libuv's UV_EOF: the same value on every platform libuv supports. */
export const UV_EOF = -4095;

let loaded: StreamHandleBindings | undefined | null = null;

/** The stream-handle bindings of this Node, or `undefined` when it does not expose them. */
export function streamHandleBindings(): StreamHandleBindings | undefined {
  if (loaded !== null) return loaded;
  try {
    const binding = (process as unknown as { binding(name: string): Record<string, unknown> }).binding;
    const stream = binding('stream_wrap') as Partial<StreamHandleBindings> & { streamBaseState?: StreamHandleBindings['state'] };
    loaded =
      typeof stream.WriteWrap === 'function' &&
      typeof stream.ShutdownWrap === 'function' &&
      stream.streamBaseState !== undefined &&
      typeof stream.kReadBytesOrError === 'number' &&
      typeof stream.kArrayBufferOffset === 'number' &&
      typeof stream.kLastWriteWasAsync === 'number'
        ? {
            WriteWrap: stream.WriteWrap,
            ShutdownWrap: stream.ShutdownWrap,
            state: stream.streamBaseState,
            kReadBytesOrError: stream.kReadBytesOrError,
            kArrayBufferOffset: stream.kArrayBufferOffset,
            kLastWriteWasAsync: stream.kLastWriteWasAsync,
          }
        : undefined;
  } catch {
    loaded = undefined;
  }
  return loaded;
}
