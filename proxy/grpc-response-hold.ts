import type { ClientHttp2Stream, IncomingHttpHeaders } from 'node:http2';

/**
 * How long the response headers of a gRPC call that could still be retried are held at
 * most, waiting for its first message or its trailers (proxy/README.md "A gRPC status
 * after response headers"). A server that answers headers and then a failing status (grpc-go
 * after `SendHeader`, an interceptor, a Node server that called `respond()` first) sends
 * both within the same moment, far under this; a server-streaming call whose first
 * message takes longer gets its headers (the client's `metadata` event) at most this
 * late. Messages are never held: the first one sends the headers on at once.
 */
export const GRPC_HEADERS_HOLD_MS = 100;

/** What the exchange does with a held response. */
export interface HeldResponseOwner {
  /**
   * The headers go to the app now: a message came (it is back in `upstream`'s buffer,
   * unread), or the hold was released ({@link GrpcResponseHold.release}; `ranOut`: by
   * its time running out). `trailers`: trailers that came while a message was still
   * buffered.
   */
  releaseHeld(upstream: ClientHttp2Stream, trailers: IncomingHttpHeaders | undefined, ranOut: boolean): void;
  /** The trailers came before any message: the call's status, before anything went to the app. */
  heldTrailers(upstream: ClientHttp2Stream, trailers: IncomingHttpHeaders): void;
}

/**
 * Holds one gRPC response after its headers, until the first message, the trailers or
 * {@link GRPC_HEADERS_HOLD_MS} — whichever comes first — and hands it to its owner.
 */
export class GrpcResponseHold {
  readonly #upstream: ClientHttp2Stream;
  readonly #owner: HeldResponseOwner;
  readonly #timer: NodeJS.Timeout;
  #over = false;

  constructor(upstream: ClientHttp2Stream, owner: HeldResponseOwner, holdMs: number) {
    this.#upstream = upstream;
    this.#owner = owner;
    upstream.on('data', this.#data);
    upstream.once('trailers', this.#trailers);
    this.#timer = setTimeout(holdExpired, holdMs, this);
  }

  /** Sends the headers on now: the route's timeout passed, or (`ranOut`) the hold's time. */
  release(ranOut = false): void {
    if (this.#over) return;
    this.#stop();
    this.#upstream.pause();
    this.#owner.releaseHeld(this.#upstream, undefined, ranOut);
    this.#upstream.resume();
  }

  /** The exchange ended otherwise (deadline, the app went away, the upstream reset): nothing more to do. */
  cancel(): void {
    if (!this.#over) this.#stop();
  }

  readonly #data = (chunk: Buffer): void => {
    if (this.#over) return;
    this.#stop();
    // The relay reads the stream from its first byte on: the chunk goes back in front.
    this.#upstream.pause();
    this.#upstream.unshift(chunk);
    this.#owner.releaseHeld(this.#upstream, undefined, false);
    this.#upstream.resume();
  };

  readonly #trailers = (trailers: IncomingHttpHeaders): void => {
    if (this.#over) return;
    this.#stop();
    // Trailers are emitted as they arrive; data that came before them may still sit in
    // the buffer (the stream was not flowing yet): then a message did come first.
    if (this.#upstream.readableLength > 0) {
      this.#upstream.pause();
      this.#owner.releaseHeld(this.#upstream, trailers, false);
      this.#upstream.resume();
    } else this.#owner.heldTrailers(this.#upstream, trailers);
  };

  #stop(): void {
    this.#over = true;
    clearTimeout(this.#timer);
    this.#upstream.off('data', this.#data);
    this.#upstream.off('trailers', this.#trailers);
  }
}

function holdExpired(hold: GrpcResponseHold): void {
  hold.release(true);
}
