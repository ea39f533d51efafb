import { connect, type ClientHttp2Session } from 'node:http2';
import type { Duplex } from 'node:stream';
import { peerSpiffeId } from './peer-certificate.js';

/** A session carrying no stream for this long is closed (the peer's side keeps its own longer: proxy/wire.ts). */
const SESSION_IDLE_MS = 60_000;
/** Receive window per session: a stream of bulk data is not held to HTTP/2's default 64 KiB per round trip. */
const SESSION_WINDOW_BYTES = 4 * 1024 * 1024;

/** The SPIFFE ID of each pooled session's peer (mTLS), read once when it opens. */
const PEERS = new WeakMap<ClientHttp2Session, string | undefined>();

/** The SPIFFE ID the peer of a pooled session presented (undefined for plain TCP): the access log's `destination_principal`. */
export function sessionPeerSpiffeId(session: ClientHttp2Session): string | undefined {
  return PEERS.get(session);
}

/**
 * One pooled HTTP/2 client session to one peer (a target by its SNI, or an app port),
 * shared by every stream to it; a new one is dialled when the last closed, went away
 * (GOAWAY) or failed. Callers that arrive while it is being dialled share the dial.
 */
export class H2SessionPool {
  readonly #dial: () => Promise<Duplex>;
  readonly #authority: string;
  readonly #gauge: { inc(): void; dec(): void };
  #session: ClientHttp2Session | undefined;
  #connecting: Promise<ClientHttp2Session> | undefined;
  #destroyed = false;

  /** `dial` opens the connection the session runs on (an mTLS connection after its checks, or plain TCP to an app). */
  constructor(dial: () => Promise<Duplex>, authority: string, gauge: { inc(): void; dec(): void }) {
    this.#dial = dial;
    this.#authority = authority;
    this.#gauge = gauge;
  }

  /** The live session, or a promise of one being dialled (rejects with the dial's error). */
  session(): ClientHttp2Session | Promise<ClientHttp2Session> {
    const current = this.#session;
    if (current && !current.closed && !current.destroyed) return current;
    return (this.#connecting ??= this.#open());
  }

  destroy(): void {
    this.#destroyed = true;
    this.#session?.destroy();
    this.#session = undefined;
  }

  async #open(): Promise<ClientHttp2Session> {
    try {
      const socket = await this.#dial();
      if (this.#destroyed) {
        socket.destroy();
        throw new Error('the session pool was closed');
      }
      const session = connect(this.#authority, { createConnection: () => socket, settings: { initialWindowSize: SESSION_WINDOW_BYTES } });
      session.once('connect', () => session.setLocalWindowSize(SESSION_WINDOW_BYTES));
      PEERS.set(session, peerSpiffeId(socket));
      this.#gauge.inc();
      const forget = () => {
        if (this.#session === session) this.#session = undefined;
      };
      // Errors reach the streams on the session; the pool only stops handing it out.
      session.on('error', forget);
      session.once('goaway', forget);
      session.once('close', () => {
        forget();
        this.#gauge.dec();
      });
      session.setTimeout(SESSION_IDLE_MS, () => session.close());
      this.#session = session;
      return session;
    } finally {
      this.#connecting = undefined;
    }
  }
}
