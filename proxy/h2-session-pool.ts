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
 * Pooled HTTP/2 client sessions to one peer (a target by its SNI, or an app port), shared
 * by every stream to it. Usually one session; a peer cluster's gateway gets as many as it
 * has healthy instances behind it (`width`, capped by the caller), and streams take them
 * in turn: the gateway balances per connection, so one session would send every stream to
 * the one endpoint it picked for that connection. A slot whose session closed, went away
 * (GOAWAY) or failed is dialled again when its turn comes; callers that arrive while a
 * slot is being dialled share the dial.
 */
export class H2SessionPool {
  readonly #dial: () => Promise<Duplex>;
  readonly #authority: string;
  readonly #gauge: { inc(): void; dec(): void };
  readonly #slots: Slot[] = [];
  #width = 1;
  #next = 0;
  #destroyed = false;

  /** `dial` opens the connection a session runs on (an mTLS connection after its checks, or plain TCP to an app). */
  constructor(dial: () => Promise<Duplex>, authority: string, gauge: { inc(): void; dec(): void }) {
    this.#dial = dial;
    this.#authority = authority;
    this.#gauge = gauge;
  }

  /**
   * How many sessions streams are spread over (at least 1). When it shrinks, the sessions
   * beyond it are closed gracefully: their streams finish, no new stream takes them.
   */
  set width(width: number) {
    const w = Math.max(1, Math.floor(width));
    if (w === this.#width) return;
    this.#width = w;
    for (const slot of this.#slots.splice(w)) slot.session?.close();
  }

  /** The next slot's live session, or a promise of one being dialled (rejects with the dial's error). */
  session(): ClientHttp2Session | Promise<ClientHttp2Session> {
    let i = 0;
    if (this.#width > 1) {
      i = this.#next;
      this.#next = (i + 1) % this.#width;
    }
    const slot = (this.#slots[i] ??= { session: undefined, connecting: undefined });
    const current = slot.session;
    if (current && !current.closed && !current.destroyed) return current;
    return (slot.connecting ??= this.#open(slot));
  }

  destroy(): void {
    this.#destroyed = true;
    for (const slot of this.#slots) slot.session?.destroy();
    this.#slots.length = 0;
  }

  async #open(slot: Slot): Promise<ClientHttp2Session> {
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
        if (slot.session === session) slot.session = undefined;
      };
      // Errors reach the streams on the session; the pool only stops handing it out.
      session.on('error', forget);
      session.once('goaway', forget);
      session.once('close', () => {
        forget();
        this.#gauge.dec();
      });
      session.setTimeout(SESSION_IDLE_MS, () => session.close());
      // A slot dropped meanwhile (the width shrank): the session serves this stream, then closes.
      if (this.#slots.includes(slot)) slot.session = session;
      else setImmediate(() => session.close());
      return session;
    } finally {
      slot.connecting = undefined;
    }
  }
}

/** One session of a pool: live, being dialled, or neither (dialled on its next turn). */
interface Slot {
  session: ClientHttp2Session | undefined;
  connecting: Promise<ClientHttp2Session> | undefined;
}
