/**
 * Reads a TLS ClientHello off the wire without terminating TLS: it only needs the
 * server name. The hello may span several TLS records and arrive one byte per TCP
 * segment; every byte read is kept so it can be replayed to the upstream unchanged.
 *
 * Only the framing is parsed here. The server name itself is judged by the one SNI
 * codec in mesh/ (the router calls it); it leaves here lower-cased (docs/architecture.md "Names":
 * server names are case-insensitive), so exact routes, the route cache and metric labels
 * all see one spelling.
 */
import { lowerCaseServerName } from '../mesh/index.js';

/** Largest ClientHello handshake message accepted (header included). */
export const MAX_HELLO_BYTES = 16 * 1024;
/** Raw bytes accepted before the hello is complete: a 16 KiB hello cut into 1-byte records is 6× larger. */
export const MAX_HELLO_WIRE_BYTES = 6 * MAX_HELLO_BYTES + 5;

const RECORD_HANDSHAKE = 0x16;
const HANDSHAKE_CLIENT_HELLO = 0x01;
const MAX_RECORD_PAYLOAD = 16 * 1024;
const EXTENSION_SERVER_NAME = 0x0000;
const NAME_TYPE_HOST = 0x00;

/** Why a ClientHello was refused; also the `reason` label of the refusal metric. */
export type HelloRefusal = 'not-tls' | 'sslv2' | 'malformed' | 'no-sni' | 'hello-too-large';

export type HelloOutcome = { readonly ok: true; readonly serverName: string } | { readonly ok: false; readonly reason: HelloRefusal };

const refusals: Record<HelloRefusal, HelloOutcome> = {
  'not-tls': { ok: false, reason: 'not-tls' },
  sslv2: { ok: false, reason: 'sslv2' },
  malformed: { ok: false, reason: 'malformed' },
  'no-sni': { ok: false, reason: 'no-sni' },
  'hello-too-large': { ok: false, reason: 'hello-too-large' },
};

/**
 * Incremental ClientHello reader for one connection. Feed it chunks with {@link push};
 * it returns `undefined` until it can decide. {@link wireBytes} are all bytes fed so far.
 */
export class ClientHelloReader {
  #data: Buffer | undefined;
  #length = 0;
  /** True once `data` is our own growable copy rather than the first chunk itself. */
  #owned = false;
  /** Offset in `data` of the next record header not yet consumed. */
  #recordOffset = 0;
  #fragments: Buffer[] = [];
  #handshakeBytes = 0;
  #helloLength = -1;

  /** Every byte received so far, to replay upstream exactly. */
  get wireBytes(): Buffer {
    return this.#data === undefined ? Buffer.alloc(0) : this.#data.subarray(0, this.#length);
  }

  push(chunk: Buffer): HelloOutcome | undefined {
    this.#append(chunk);
    return this.#advance();
  }

  #append(chunk: Buffer): void {
    if (this.#data === undefined) {
      // The common case: the whole hello in the first segment, read in place without a copy.
      this.#data = chunk;
      this.#length = chunk.length;
      return;
    }
    const needed = this.#length + chunk.length;
    if (!this.#owned || needed > this.#data.length) {
      const grown = Buffer.allocUnsafe(Math.min(Math.max(needed, this.#length * 2, 2048), MAX_HELLO_WIRE_BYTES + 16 * 1024));
      if (needed > grown.length) {
        // Over the wire limit: keep counting, advance() refuses it.
        this.#length = needed;
        return;
      }
      this.#data.copy(grown, 0, 0, this.#length);
      this.#data = grown;
      this.#owned = true;
    }
    chunk.copy(this.#data, this.#length);
    this.#length = needed;
  }

  #advance(): HelloOutcome | undefined {
    const data = this.#data!;
    if (this.#recordOffset === 0) {
      const first = data[0]!;
      if (first !== RECORD_HANDSHAKE) {
        if ((first & 0x80) === 0) return refusals['not-tls'];
        // SSLv2 record header: 2-byte length with the high bit set, then message type 1 (CLIENT-HELLO).
        if (this.#length < 3) return undefined;
        return refusals[data[2] === 0x01 ? 'sslv2' : 'not-tls'];
      }
    }
    if (this.#length > MAX_HELLO_WIRE_BYTES) return refusals['hello-too-large'];
    for (;;) {
      const off = this.#recordOffset;
      const available = this.#length - off;
      if (available < 1) return undefined;
      if (data[off] !== RECORD_HANDSHAKE) return refusals.malformed;
      if (available < 5) return available >= 2 && data[off + 1] !== 0x03 ? refusals.malformed : undefined;
      if (data[off + 1] !== 0x03) return refusals.malformed;
      const recordLength = (data[off + 3]! << 8) | data[off + 4]!;
      if (recordLength === 0 || recordLength > MAX_RECORD_PAYLOAD) return refusals.malformed;
      if (available < 5 + recordLength) return undefined;
      this.#fragments.push(data.subarray(off + 5, off + 5 + recordLength));
      this.#handshakeBytes += recordLength;
      this.#recordOffset = off + 5 + recordLength;
      if (this.#helloLength < 0 && this.#handshakeBytes >= 4) {
        const head = this.#fragments.length === 1 ? this.#fragments[0]! : Buffer.concat(this.#fragments, 4);
        if (head[0] !== HANDSHAKE_CLIENT_HELLO) return refusals.malformed;
        this.#helloLength = (head[1]! << 16) | (head[2]! << 8) | head[3]!;
        if (this.#helloLength + 4 > MAX_HELLO_BYTES) return refusals['hello-too-large'];
      }
      if (this.#helloLength >= 0 && this.#handshakeBytes >= this.#helloLength + 4) {
        const hello = this.#fragments.length === 1 ? this.#fragments[0]! : Buffer.concat(this.#fragments, this.#handshakeBytes);
        this.#fragments = [];
        return parseClientHello(hello, this.#helloLength + 4);
      }
    }
  }
}

/**
 * Parses one complete ClientHello handshake message (`end` bytes of `hello`, 4-byte
 * handshake header included) and returns its host_name server name.
 */
export function parseClientHello(hello: Buffer, end: number): HelloOutcome {
  // Handshake header (4), legacy_version (2), random (32).
  let p = 4 + 2 + 32;
  if (end < p + 1) return refusals.malformed;
  const sessionIdLength = hello[p]!;
  if (sessionIdLength > 32) return refusals.malformed;
  p += 1 + sessionIdLength;
  if (end < p + 2) return refusals.malformed;
  const cipherSuitesLength = (hello[p]! << 8) | hello[p + 1]!;
  if (cipherSuitesLength < 2 || (cipherSuitesLength & 1) !== 0) return refusals.malformed;
  p += 2 + cipherSuitesLength;
  if (end < p + 1) return refusals.malformed;
  const compressionLength = hello[p]!;
  if (compressionLength < 1) return refusals.malformed;
  p += 1 + compressionLength;
  if (p === end) return refusals['no-sni'];
  if (end < p + 2) return refusals.malformed;
  const extensionsLength = (hello[p]! << 8) | hello[p + 1]!;
  p += 2;
  if (p + extensionsLength !== end) return refusals.malformed;
  let serverName: string | undefined;
  while (p < end) {
    if (end - p < 4) return refusals.malformed;
    const type = (hello[p]! << 8) | hello[p + 1]!;
    const length = (hello[p + 2]! << 8) | hello[p + 3]!;
    p += 4;
    if (end - p < length) return refusals.malformed;
    if (type === EXTENSION_SERVER_NAME) {
      if (serverName !== undefined) return refusals.malformed;
      const name = readServerName(hello, p, p + length);
      if (name === undefined) return refusals.malformed;
      serverName = name;
    }
    p += length;
  }
  return serverName === undefined || serverName.length === 0 ? refusals['no-sni'] : { ok: true, serverName };
}

/** The host_name of a server_name extension body, '' when it lists none, undefined when malformed. */
function readServerName(b: Buffer, start: number, end: number): string | undefined {
  if (end - start < 2) return undefined;
  const listLength = (b[start]! << 8) | b[start + 1]!;
  let p = start + 2;
  if (p + listLength !== end || listLength === 0) return undefined;
  let hostName = '';
  while (p < end) {
    if (end - p < 3) return undefined;
    const nameType = b[p]!;
    const length = (b[p + 1]! << 8) | b[p + 2]!;
    p += 3;
    if (length === 0 || end - p < length) return undefined;
    if (nameType === NAME_TYPE_HOST) {
      if (hostName !== '') return undefined;
      hostName = lowerCaseServerName(b.toString('latin1', p, p + length));
    }
    p += length;
  }
  return hostName;
}

/** Reads a whole buffer as if it arrived at once; for tests and tools. */
export function readClientHello(bytes: Buffer): HelloOutcome | undefined {
  if (bytes.length === 0) return undefined;
  return new ClientHelloReader().push(bytes);
}
