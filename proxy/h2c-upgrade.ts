import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import { H2_PREFACE } from './h2-preface.js';
import { headerValue, type RequestHead } from './http1.js';

/**
 * `Upgrade: h2c` (RFC 7540 §3.2): an HTTP/1.1 request asks to continue the connection as
 * HTTP/2, the request itself becoming stream 1. Node's http2 cannot adopt an upgraded
 * request, so the sidecar makes the connection look to it as if the client had sent the
 * request on stream 1 itself ({@link H2cUpgradedSocket}): after the client's preface and
 * first SETTINGS frame, a HEADERS frame (and DATA frames for a body) for stream 1 is
 * slipped into what the server session reads. The header block is HPACK "literal without
 * indexing" with no Huffman coding, which never touches the decoder's dynamic table: the
 * client's encoder and the server's decoder stay in step. The settings the client sent
 * in `HTTP2-Settings` are merged into its first SETTINGS frame (one frame, one ACK: a
 * second ACK would be a protocol error to the client).
 */

/** The 101 that switches the connection (the server's SETTINGS follows it). */
export const SWITCHING_TO_H2C = 'HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\nupgrade: h2c\r\n\r\n';

/**
 * A request body carried over into stream 1 must fit HTTP/2's initial flow-control
 * window (65,535 bytes), which the session accounts it against before its own SETTINGS
 * could raise it; a larger one is served as HTTP/1.1 (the upgrade declined).
 */
export const UPGRADE_BODY_BYTES = 65_535;
/** At most this many settings in `HTTP2-Settings` (HTTP/2 defines 7; the rest are extensions). */
const MAX_SETTINGS = 64;
/** The default SETTINGS_MAX_FRAME_SIZE: the HEADERS frame, each DATA frame and the merged SETTINGS frame stay within it. */
const MAX_FRAME_BYTES = 16_384;
const FRAME_HEAD_BYTES = 9;
const FRAME_DATA = 0x0;
const FRAME_HEADERS = 0x1;
const FRAME_SETTINGS = 0x4;
const FLAG_END_STREAM = 0x1;
const FLAG_END_HEADERS = 0x4;
/** Headers of an HTTP/1.1 request that have no place in an HTTP/2 one (RFC 9113 §8.2.2), or became pseudo-headers. */
const NOT_CARRIED: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host', 'te']);

/** What to do with a request that asked for `Upgrade: h2c`. */
export type UpgradeDecision =
  | { readonly kind: 'upgrade'; readonly settings: Buffer; readonly streamOne: Buffer }
  /** Served as HTTP/1.1 instead, which RFC 9113 allows. */
  | { readonly kind: 'decline'; readonly reason: 'no-settings' | 'chunked-body' | 'body-too-large' | 'headers-too-large' }
  /** Answered with a 400: the client asked for the upgrade with settings that cannot be read. */
  | { readonly kind: 'refuse'; readonly error: ProxyError };

/** Whether an `Upgrade` header's protocols name h2c (a request asking for Upgrade at all is rare). */
export function asksForH2c(upgrade: string): boolean {
  return upgrade.split(',').some((p) => p.trim().toLowerCase() === 'h2c');
}

/** Decides the upgrade of one HTTP/1.1 request (head and `body` as received). */
export function decideUpgrade(head: RequestHead, body: Buffer): UpgradeDecision {
  const encoded = headerValue(head, 'http2-settings');
  if (encoded === undefined) return { kind: 'decline', reason: 'no-settings' };
  let settings: Buffer;
  try {
    settings = decodeHttp2Settings(encoded);
  } catch (error) {
    return { kind: 'refuse', error: error as ProxyError };
  }
  if (head.chunked) return { kind: 'decline', reason: 'chunked-body' };
  if (body.length > UPGRADE_BODY_BYTES) return { kind: 'decline', reason: 'body-too-large' };
  const block = literalHeaderBlock(streamOneHeaders(head));
  if (block.length > MAX_FRAME_BYTES) return { kind: 'decline', reason: 'headers-too-large' };
  const frames = [frame(FRAME_HEADERS, FLAG_END_HEADERS | (body.length === 0 ? FLAG_END_STREAM : 0), 1, block)];
  for (let at = 0; at < body.length; at += MAX_FRAME_BYTES) {
    const end = Math.min(body.length, at + MAX_FRAME_BYTES);
    frames.push(frame(FRAME_DATA, end === body.length ? FLAG_END_STREAM : 0, 1, body.subarray(at, end)));
  }
  return { kind: 'upgrade', settings, streamOne: Buffer.concat(frames) };
}

/**
 * The `HTTP2-Settings` value: a SETTINGS frame's payload in base64url (RFC 7540 §3.2.1).
 * Throws a {@link ProxyError} that says what is wrong with it.
 */
export function decodeHttp2Settings(value: string): Buffer {
  const text = value.replace(/=+$/, '');
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw badSettings(`HTTP2-Settings is not base64url (${JSON.stringify(value.slice(0, 40))})`);
  const payload = Buffer.from(text, 'base64url');
  if (payload.length % 6 !== 0) throw badSettings(`HTTP2-Settings decodes to ${payload.length} bytes, not a whole number of 6-byte settings`);
  if (payload.length > MAX_SETTINGS * 6) throw badSettings(`HTTP2-Settings holds ${payload.length / 6} settings (at most ${MAX_SETTINGS})`);
  return payload;
}

function badSettings(message: string): ProxyError {
  return new ProxyError(ProxyErrorCodes.badRequest, `${message}; send the client's SETTINGS payload base64url-encoded, or connect with HTTP/2 prior knowledge`);
}

/** The HTTP/2 header list of the upgraded request: pseudo-headers first, then the fields HTTP/2 keeps. */
function streamOneHeaders(head: RequestHead): [string, string][] {
  const fields: [string, string][] = [
    [':method', head.method],
    [':scheme', 'http'],
    [':path', head.target],
  ];
  const host = headerValue(head, 'host');
  if (host !== undefined) fields.push([':authority', host]);
  const tokens = head.connectionTokens;
  for (let i = 0; i < head.names.length; i++) {
    const name = head.names[i]!;
    if (NOT_CARRIED.has(name) || tokens?.includes(name)) continue;
    fields.push([name, head.values[i]!]);
  }
  const te = headerValue(head, 'te');
  if (te !== undefined && te.toLowerCase() === 'trailers') fields.push(['te', 'trailers']);
  return fields;
}

/** An HPACK header block of "literal without indexing, new name" fields with no Huffman coding (RFC 7541 §6.2.2). */
export function literalHeaderBlock(fields: readonly (readonly [string, string])[]): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    parts.push(LITERAL_NEW_NAME, hpackString(name), hpackString(value));
  }
  return Buffer.concat(parts);
}

const LITERAL_NEW_NAME = Buffer.from([0x00]);

/** A string literal: H=0, its length as a 7-bit-prefix integer (RFC 7541 §5.1), the octets. */
function hpackString(text: string): Buffer {
  const octets = Buffer.from(text, 'latin1');
  const length: number[] = [];
  let n = octets.length;
  if (n < 0x7f) length.push(n);
  else {
    length.push(0x7f);
    n -= 0x7f;
    while (n >= 0x80) {
      length.push((n & 0x7f) | 0x80);
      n >>>= 7;
    }
    length.push(n);
  }
  return Buffer.concat([Buffer.from(length), octets]);
}

function frame(type: number, flags: number, streamId: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(FRAME_HEAD_BYTES);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}

/**
 * The upgraded connection as the HTTP/2 server session reads it: the client's bytes,
 * with its first SETTINGS frame carrying the `HTTP2-Settings` values too (the client's
 * own values last, so they win) and stream 1's frames right after it. Bytes that are
 * not a preface and a SETTINGS frame pass unchanged: the session refuses them itself.
 */
export class H2cUpgradedSocket extends Duplex {
  readonly #socket: Socket;
  readonly #settings: Buffer;
  readonly #streamOne: Buffer;
  /** The client's bytes until its preface and first frame are complete; undefined afterwards. */
  #start: Buffer | undefined = Buffer.alloc(0);

  /** `early`: bytes the client sent after its HTTP/1.1 request, read before the switch. */
  constructor(socket: Socket, decision: { readonly settings: Buffer; readonly streamOne: Buffer }, early: Buffer | undefined) {
    super({ allowHalfOpen: false });
    this.#socket = socket;
    this.#settings = decision.settings;
    this.#streamOne = decision.streamOne;
    socket.on('data', (chunk: Buffer) => this.#received(chunk));
    socket.once('end', () => this.push(null));
    socket.once('close', () => this.destroy());
    socket.on('error', (error) => this.destroy(error));
    if (early && early.length > 0) this.#received(early);
  }

  override _read(): void {
    this.#socket.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#socket.write(chunk)) callback();
    else this.#socket.once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#socket.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.#socket.destroy();
    callback(error);
  }

  #received(chunk: Buffer): void {
    if (this.#start === undefined) {
      this.#pass(chunk);
      return;
    }
    const start = (this.#start = Buffer.concat([this.#start, chunk]));
    const frameAt = H2_PREFACE.length;
    if (start.length < frameAt + FRAME_HEAD_BYTES) {
      if (!H2_PREFACE.subarray(0, Math.min(start.length, frameAt)).equals(start.subarray(0, frameAt))) this.#giveUp();
      return;
    }
    const length = start.readUIntBE(frameAt, 3);
    const isSettings = start.subarray(0, frameAt).equals(H2_PREFACE) && start[frameAt + 3] === FRAME_SETTINGS && start.readUInt32BE(frameAt + 5) === 0 && start[frameAt + 4] === 0;
    if (!isSettings || length + this.#settings.length > MAX_FRAME_BYTES) {
      this.#giveUp();
      return;
    }
    const frameEnd = frameAt + FRAME_HEAD_BYTES + length;
    if (start.length < frameEnd) return;
    this.#start = undefined;
    const merged = frame(FRAME_SETTINGS, 0, 0, Buffer.concat([this.#settings, start.subarray(frameAt + FRAME_HEAD_BYTES, frameEnd)]));
    this.#pass(Buffer.concat([H2_PREFACE, merged, this.#streamOne, start.subarray(frameEnd)]));
  }

  /** Not a preface and a SETTINGS frame: the session gets the bytes as they are (and fails the connection). */
  #giveUp(): void {
    const start = this.#start!;
    this.#start = undefined;
    this.#pass(start);
  }

  #pass(bytes: Buffer): void {
    if (bytes.length > 0 && !this.push(bytes)) this.#socket.pause();
  }
}
