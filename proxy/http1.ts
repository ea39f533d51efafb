/**
 * HTTP/1.1 message heads and body framing on the raw byte stream, for the sidecar's
 * HTTP fast path: a request or response head is parsed once, rewritten as a string
 * (hop-by-hop headers out, identity headers in) and its body bytes are forwarded as they
 * came, with only enough parsing to find where each message ends.
 *
 * Strict on purpose: the bytes are forwarded verbatim, so any message whose framing the
 * next hop could read differently (request smuggling) is refused here — obs-fold, space
 * before a colon, both Content-Length and Transfer-Encoding, a Transfer-Encoding other
 * than `chunked`, malformed chunk sizes, bare LF line ends. Messages that are valid but
 * unusual (HTTP/1.0, CONNECT, `Expect: 100-continue`, absolute-form targets)
 * are reported as such, and the caller hands the connection to Node's HTTP server.
 */

/** The most a message head may take (Node's default max header size is 16 KiB). */
export const MAX_HEAD_BYTES = 16 * 1024;

export class Http1Error extends Error {
  /** The status a server answers the peer with (400, 431, 501, 502). */
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'Http1Error';
    this.status = status;
  }
}

export interface MessageHead {
  /** The first line as received (`GET / HTTP/1.1` or `HTTP/1.1 200 OK`). */
  readonly startLine: string;
  /** Header lines as received (`Name: value`), in order. */
  readonly lines: string[];
  /** Lower-cased names, parallel to `lines`. */
  readonly names: string[];
  /** Values without surrounding whitespace, parallel to `lines`. */
  readonly values: string[];
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  readonly minorVersion: number;
  /** Declared Content-Length, or -1. */
  readonly contentLength: number;
  readonly chunked: boolean;
  /** The sender wants the connection closed after this message. */
  readonly close: boolean;
  /** Header names the Connection header lists (lower case), beyond close/keep-alive. */
  readonly connectionTokens: readonly string[] | undefined;
}

export interface RequestHead extends MessageHead {
  readonly method: string;
  readonly target: string;
  /** Valid but not for the fast path (HTTP/1.0, CONNECT, Expect, absolute-form…): hand it to Node's server. */
  readonly unusual: string | undefined;
  /** The protocol asked for (`Upgrade` header with `Connection: upgrade`, e.g. `websocket`), if any. */
  readonly upgrade: string | undefined;
}

export interface ResponseHead extends MessageHead {
  readonly status: number;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Visible ASCII, obs-text, space and tab; no CR, LF, NUL or other controls.
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const REQUEST_TARGET = /^[\x21-\x7e\x80-\xff]+$/;
// RFC 9112 §7.1.1: *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )
const CHUNK_EXTENSIONS = /^(?:[ \t]*;[ \t]*[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:[ \t]*=[ \t]*(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+|"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"))?)*[ \t]*$/;
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1');

/**
 * Where the head at the start of `buf` ends (the index just past its CRLFCRLF), -1 if
 * it is not complete yet. Throws 431 when more than {@link MAX_HEAD_BYTES} arrived without one.
 */
export function headEnd(buf: Buffer, start = 0): number {
  const at = buf.indexOf(CRLFCRLF, start);
  if (at >= 0) {
    if (at - start > MAX_HEAD_BYTES) throw new Http1Error(431, `message head larger than ${MAX_HEAD_BYTES} bytes`);
    return at + 4;
  }
  // The end of the buffer may be the start of the final CRLFCRLF: the limit must not depend on the split.
  const n = buf.length;
  const partial = n >= 3 && buf[n - 3] === 0x0d && buf[n - 2] === 0x0a && buf[n - 1] === 0x0d ? 3 : n >= 2 && buf[n - 2] === 0x0d && buf[n - 1] === 0x0a ? 2 : n >= 1 && buf[n - 1] === 0x0d ? 1 : 0;
  if (n - start - partial > MAX_HEAD_BYTES) throw new Http1Error(431, `message head larger than ${MAX_HEAD_BYTES} bytes`);
  return -1;
}

/** Empty lines before a request line may be ignored (RFC 9112 §2.2): how many bytes of them. */
export function leadingEmptyLines(buf: Buffer, start = 0): number {
  let i = start;
  while (i + 1 < buf.length && buf[i] === 0x0d && buf[i + 1] === 0x0a) i += 2;
  return i - start;
}

interface Fields {
  lines: string[];
  names: string[];
  values: string[];
  contentLength: number;
  chunked: boolean;
  close: boolean;
  keepAlive: boolean;
  connectionTokens: string[] | undefined;
  connectionUpgrade: boolean;
  upgrade: string | undefined;
  expect: boolean;
  te: boolean;
}

/** One `name: value` line of a head or trailer section, checked; throws `status` when malformed. */
function checkFieldLine(line: string, status: number): { name: string; value: string } {
  const colon = line.indexOf(':');
  if (colon <= 0) throw new Http1Error(status, `header line without a name: ${JSON.stringify(line.slice(0, 60))}`);
  const name = line.slice(0, colon);
  if (!TOKEN.test(name)) throw new Http1Error(status, `invalid header name ${JSON.stringify(name.slice(0, 60))}`);
  // Only SP and HTAB are optional whitespace (RFC 9110 §5.6.3); String#trim would also
  // eat CR, VT, FF and NBSP, which other parsers keep — a smuggling gap.
  const value = trimOws(line.slice(colon + 1));
  if (!FIELD_VALUE.test(value)) throw new Http1Error(status, `invalid character in header ${name}`);
  return { name, value };
}

function parseFields(text: string, from: number, status: number): Fields {
  const f: Fields = { lines: [], names: [], values: [], contentLength: -1, chunked: false, close: false, keepAlive: false, connectionTokens: undefined, connectionUpgrade: false, upgrade: undefined, expect: false, te: false };
  let pos = from;
  const end = text.length;
  while (pos < end) {
    let eol = text.indexOf('\r\n', pos);
    if (eol < 0) eol = end;
    const line = text.slice(pos, eol);
    pos = eol + 2;
    if (line.length === 0) continue;
    const first = line.charCodeAt(0);
    if (first === 0x20 || first === 0x09) throw new Http1Error(status, 'obsolete line folding in a header');
    if (line.includes('\n')) throw new Http1Error(status, 'bare LF in the message head (lines must end in CRLF)');
    const { name, value } = checkFieldLine(line, status);
    const lower = name.toLowerCase();
    f.lines.push(line);
    f.names.push(lower);
    f.values.push(value);
    switch (lower) {
      case 'content-length': {
        if (!/^\d{1,15}$/.test(value)) throw new Http1Error(status, `invalid Content-Length ${JSON.stringify(value.slice(0, 40))}`);
        const n = Number(value);
        if (f.contentLength >= 0 && f.contentLength !== n) throw new Http1Error(status, 'conflicting Content-Length headers');
        f.contentLength = n;
        break;
      }
      case 'transfer-encoding':
        if (f.te || value.toLowerCase() !== 'chunked') throw new Http1Error(status === 400 ? 501 : status, `Transfer-Encoding ${JSON.stringify(value.slice(0, 40))} is not supported (only a single "chunked")`);
        f.te = true;
        f.chunked = true;
        break;
      case 'connection':
        for (const raw of value.split(',')) {
          const token = raw.trim().toLowerCase();
          if (token === 'close') f.close = true;
          else if (token === 'keep-alive') f.keepAlive = true;
          else if (token === 'upgrade') f.connectionUpgrade = true;
          else if (token !== '') (f.connectionTokens ??= []).push(token);
        }
        break;
      case 'upgrade':
        if (f.upgrade !== undefined) throw new Http1Error(status, 'more than one Upgrade header');
        f.upgrade = value;
        break;
      case 'expect':
        f.expect = true;
        break;
    }
  }
  if (f.chunked && f.contentLength >= 0) throw new Http1Error(status, 'both Content-Length and Transfer-Encoding');
  return f;
}

/** Parses a request head (`buf[start, end)`, including its final CRLFCRLF). */
export function parseRequestHead(buf: Buffer, start: number, end: number): RequestHead {
  const text = buf.toString("latin1", start, end - 4);
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = text.length;
  const startLine = text.slice(0, eol);
  const sp1 = startLine.indexOf(' ');
  const sp2 = startLine.indexOf(' ', sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || startLine.indexOf(' ', sp2 + 1) >= 0) throw new Http1Error(400, `malformed request line ${JSON.stringify(startLine.slice(0, 80))}`);
  const method = startLine.slice(0, sp1);
  const target = startLine.slice(sp1 + 1, sp2);
  const version = startLine.slice(sp2 + 1);
  if (!TOKEN.test(method)) throw new Http1Error(400, `invalid method ${JSON.stringify(method.slice(0, 40))}`);
  if (!REQUEST_TARGET.test(target)) throw new Http1Error(400, 'invalid request target');
  let minorVersion: number;
  if (version === 'HTTP/1.1') minorVersion = 1;
  else if (version === 'HTTP/1.0') minorVersion = 0;
  else throw new Http1Error(version.startsWith('HTTP/') ? 505 : 400, `unsupported protocol version ${JSON.stringify(version.slice(0, 20))}`);
  const f = parseFields(text, eol + 2, 400);
  let unusual: string | undefined;
  if (minorVersion === 0) unusual = 'HTTP/1.0';
  else if (method === 'CONNECT') unusual = 'CONNECT';
  else if (f.expect) unusual = 'Expect';
  else if (target.charCodeAt(0) !== 0x2f && target !== '*') unusual = 'absolute-form target';
  return {
    startLine,
    lines: f.lines,
    names: f.names,
    values: f.values,
    minorVersion,
    contentLength: f.contentLength,
    chunked: f.chunked,
    close: f.close || (minorVersion === 0 && !f.keepAlive),
    connectionTokens: f.connectionTokens,
    method,
    target,
    unusual,
    // Both halves or none: an Upgrade header without the Connection token is dropped as hop-by-hop.
    upgrade: f.connectionUpgrade && f.upgrade ? f.upgrade : undefined,
  };
}

/** Parses a response head (`buf[start, end)`, including its final CRLFCRLF). Errors are 502s: the upstream misbehaved. */
export function parseResponseHead(buf: Buffer, start: number, end: number): ResponseHead {
  const text = buf.toString("latin1", start, end - 4);
  let eol = text.indexOf('\r\n');
  if (eol < 0) eol = text.length;
  const startLine = text.slice(0, eol);
  let minorVersion: number;
  if (startLine.startsWith('HTTP/1.1 ')) minorVersion = 1;
  else if (startLine.startsWith('HTTP/1.0 ')) minorVersion = 0;
  else throw new Http1Error(502, `malformed status line ${JSON.stringify(startLine.slice(0, 80))}`);
  const code = startLine.slice(9, 12);
  if (!/^[1-9]\d\d$/.test(code) || (startLine.length > 12 && startLine.charCodeAt(12) !== 0x20)) throw new Http1Error(502, `malformed status line ${JSON.stringify(startLine.slice(0, 80))}`);
  if (!FIELD_VALUE.test(startLine)) throw new Http1Error(502, 'invalid character in the status line');
  const f = parseFields(text, eol + 2, 502);
  return {
    startLine,
    lines: f.lines,
    names: f.names,
    values: f.values,
    minorVersion,
    contentLength: f.contentLength,
    chunked: f.chunked,
    close: f.close || (minorVersion === 0 && !f.keepAlive),
    connectionTokens: f.connectionTokens,
    status: Number(code),
  };
}

/** The value of the first header named `lowerName`, if any. */
export function headerValue(head: MessageHead, lowerName: string): string | undefined {
  const i = head.names.indexOf(lowerName);
  return i < 0 ? undefined : head.values[i];
}

/** How a response body is delimited, given the request it answers (RFC 9112 §6.3). */
export function responseBodyKind(request: { method: string }, response: ResponseHead): 'none' | 'length' | 'chunked' | 'close' {
  if (request.method === 'HEAD' || response.status < 200 || response.status === 204 || response.status === 304) return 'none';
  if (response.chunked) return 'chunked';
  if (response.contentLength >= 0) return response.contentLength === 0 ? 'none' : 'length';
  return 'close';
}

const enum Chunk {
  Size,
  SizeLf,
  Extension,
  Data,
  DataCr,
  DataLf,
  TrailerStart,
  TrailerLine,
  TrailerLf,
  FinalLf,
  Done,
}

/**
 * Finds where a message body ends in the stream, without copying it: `consume` returns
 * how many of the offered bytes belong to the body. Chunked bodies are followed chunk by
 * chunk (sizes, CRLFs, trailers) and any malformed framing throws.
 */
export class BodyFramer {
  #kind: 'none' | 'length' | 'chunked' | 'close';
  #remaining: number;
  #state = Chunk.Size;
  #sizeDigits = 0;
  #trailerBytes = 0;
  /** The chunk extension or trailer line being read (validated at its end). */
  #text = '';

  constructor(kind: 'none' | 'length' | 'chunked' | 'close', length = 0) {
    this.#kind = kind;
    this.#remaining = kind === 'length' ? length : 0;
    if (kind === 'none' || (kind === 'length' && length === 0)) this.#state = Chunk.Done;
  }

  /** Framing for a request body (requests without length or chunking have none). */
  static forRequest(head: MessageHead): BodyFramer {
    if (head.chunked) return new BodyFramer('chunked');
    return head.contentLength > 0 ? new BodyFramer('length', head.contentLength) : new BodyFramer('none');
  }

  get done(): boolean {
    return this.#state === Chunk.Done;
  }

  /** Ends with the connection (a close-delimited response body). */
  get untilClose(): boolean {
    return this.#kind === 'close';
  }

  /** Bytes of `buf[start, end)` that belong to the body (all of them until close-delimited bodies end). */
  consume(buf: Buffer, start: number, end: number): number {
    if (this.#state === Chunk.Done) return 0;
    if (this.#kind === 'close') return end - start;
    if (this.#kind === 'length') {
      const n = Math.min(this.#remaining, end - start);
      this.#remaining -= n;
      if (this.#remaining === 0) this.#state = Chunk.Done;
      return n;
    }
    let i = start;
    while (i < end && this.#state !== Chunk.Done) {
      const c = buf[i]!;
      switch (this.#state) {
        case Chunk.Size: {
          const digit = c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;
          if (digit >= 0) {
            if (++this.#sizeDigits > 12) throw new Http1Error(400, 'chunk size too large');
            this.#remaining = this.#remaining * 16 + digit;
            i++;
          } else if (this.#sizeDigits === 0) {
            throw new Http1Error(400, 'chunk size missing');
          } else if (c === 0x0d) {
            this.#state = Chunk.SizeLf;
            i++;
          } else if (c === 0x3b) {
            this.#state = Chunk.Extension;
            this.#text = String.fromCharCode(c);
            i++;
          } else {
            throw new Http1Error(400, 'invalid character in a chunk size');
          }
          break;
        }
        case Chunk.Extension:
          // Extensions are passed on as they are, so they must read the same to the next hop.
          if (c === 0x0d) {
            if (!CHUNK_EXTENSIONS.test(this.#text)) throw new Http1Error(400, 'malformed chunk extension');
            this.#text = '';
            this.#state = Chunk.SizeLf;
          } else {
            if (this.#text.length >= MAX_HEAD_BYTES) throw new Http1Error(400, 'chunk extension too long');
            this.#text += String.fromCharCode(c);
          }
          i++;
          break;
        case Chunk.SizeLf:
          if (c !== 0x0a) throw new Http1Error(400, 'chunk size line not ended by CRLF');
          i++;
          this.#sizeDigits = 0;
          this.#state = this.#remaining === 0 ? Chunk.TrailerStart : Chunk.Data;
          break;
        case Chunk.Data: {
          const n = Math.min(this.#remaining, end - i);
          this.#remaining -= n;
          i += n;
          if (this.#remaining === 0) this.#state = Chunk.DataCr;
          break;
        }
        case Chunk.DataCr:
          if (c !== 0x0d) throw new Http1Error(400, 'chunk data not followed by CRLF');
          this.#state = Chunk.DataLf;
          i++;
          break;
        case Chunk.DataLf:
          if (c !== 0x0a) throw new Http1Error(400, 'chunk data not followed by CRLF');
          this.#state = Chunk.Size;
          i++;
          break;
        case Chunk.TrailerStart:
          // After the last chunk: either CRLF (no trailers) or trailer lines, then CRLF.
          if (c === 0x0d) this.#state = Chunk.FinalLf;
          else if (c === 0x0a || c === 0x20 || c === 0x09) throw new Http1Error(400, 'malformed trailer section');
          else {
            this.#state = Chunk.TrailerLine;
            this.#text = String.fromCharCode(c);
          }
          i++;
          break;
        case Chunk.TrailerLine:
          if (++this.#trailerBytes > MAX_HEAD_BYTES) throw new Http1Error(431, 'trailer section too large');
          if (c === 0x0d) {
            // A trailer is a header field: the same rules as in the head.
            checkFieldLine(this.#text, 400);
            this.#state = Chunk.TrailerLf;
          } else this.#text += String.fromCharCode(c);
          i++;
          break;
        case Chunk.TrailerLf:
          if (c !== 0x0a) throw new Http1Error(400, 'trailer line not ended by CRLF');
          this.#state = Chunk.TrailerStart;
          i++;
          break;
        case Chunk.FinalLf:
          if (c !== 0x0a) throw new Http1Error(400, 'chunked body not ended by CRLF');
          this.#state = Chunk.Done;
          i++;
          break;
      }
    }
    return i - start;
  }
}

/**
 * The head to forward: the start line, then every header line except hop-by-hop ones
 * (the fixed list, those the Connection header names, and `drop`), then `extra` lines.
 */
export function rewriteHead(head: MessageHead, drop: ReadonlySet<string>, extra: string): string {
  let out = `${head.startLine}\r\n`;
  const tokens = head.connectionTokens;
  const names = head.names;
  const lines = head.lines;
  for (let i = 0; i < names.length; i++) {
    const name = names[i]!;
    if (HOP_BY_HOP.has(name) || drop.has(name) || (tokens !== undefined && tokens.includes(name) && !FRAMING.has(name))) continue;
    out += `${lines[i]}\r\n`;
  }
  return `${out}${extra}\r\n`;
}

/**
 * Hop-by-hop headers (RFC 9110 §7.6.1; `HTTP2-Settings` belongs to an `Upgrade: h2c`, RFC 7540
 * §3.2.1) that a proxy does not forward. Transfer-Encoding
 * stays: chunked bodies are forwarded as they came.
 */
const HOP_BY_HOP: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'http2-settings', 'proxy-authorization', 'proxy-authenticate']);

/** Headers that frame the body or name the authority: kept even when Connection lists them (the body is forwarded as framed). */
const FRAMING: ReadonlySet<string> = new Set(['content-length', 'transfer-encoding', 'host']);

function trimOws(text: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && (text.charCodeAt(start) === 0x20 || text.charCodeAt(start) === 0x09)) start++;
  while (end > start && (text.charCodeAt(end - 1) === 0x20 || text.charCodeAt(end - 1) === 0x09)) end--;
  return start === 0 && end === text.length ? text : text.slice(start, end);
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 413: 'Content Too Large', 426: 'Upgrade Required', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout', 505: 'HTTP Version Not Supported' };

/** The Connection and Upgrade lines an upgrade request or its 101 carries on (both are hop-by-hop otherwise). */
export function upgradeLines(protocol: string): string {
  return `connection: upgrade\r\nupgrade: ${protocol}\r\n`;
}

/** A complete plain-text response the sidecar itself answers with. */
export function textResponse(status: number, body: string, headers: Readonly<Record<string, string>> = {}, close = false): Buffer {
  let head = `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\n`;
  for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
  if (close) head += 'connection: close\r\n';
  return Buffer.from(`${head}\r\n${body}`, 'utf8');
}
