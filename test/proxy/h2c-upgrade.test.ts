/**
 * The h2c codecs on their own (proxy/h2-preface.ts, proxy/h2c-upgrade.ts): the preface
 * sniffer on every split and mutation, HTTP2-Settings validation, and the frames an
 * upgrade injects for stream 1. End to end (Node's and nghttp's HPACK decoders reading
 * the injected header block) in h2c.test.ts.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { H2_PREFACE, sniffPreface } from '../../proxy/h2-preface.js';
import { decideUpgrade, decodeHttp2Settings, literalHeaderBlock } from '../../proxy/h2c-upgrade.js';
import { parseRequestHead } from '../../proxy/http1.js';

// Parsed without headEnd's 16 KiB limit, so that a head whose header block would not fit one frame can be made.
const head = (text: string) => {
  const buf = Buffer.from(text, 'latin1');
  return parseRequestHead(buf, 0, buf.length);
};
const upgradeHead = (extra = '', settings: string | null = 'AAMAAABk') =>
  head(`POST /x HTTP/1.1\r\nhost: reviews\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\n${settings === null ? '' : `http2-settings: ${settings}\r\n`}${extra}\r\n`);

test('sniffPreface: every proper prefix of the preface waits, the whole preface is h2, any other byte is HTTP/1.1 at once', (t) => {
  for (let n = 1; n < H2_PREFACE.length; n++) t.is(sniffPreface(H2_PREFACE.subarray(0, n)), 'more', `prefix of ${n}`);
  t.is(sniffPreface(H2_PREFACE), 'h2');
  t.is(sniffPreface(Buffer.concat([H2_PREFACE, Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])])), 'h2');
  for (let at = 0; at < H2_PREFACE.length; at++) {
    const mutated = Buffer.from(H2_PREFACE.subarray(0, at + 1));
    mutated[at] = mutated[at]! ^ 0x20;
    t.is(sniffPreface(mutated), 'http1', `byte ${at} differs`);
  }
  // Real HTTP/1.1 requests, however short their first read: decided without waiting.
  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS', 'PRIZE']) t.is(sniffPreface(Buffer.from(`${method} / HTTP/1.1\r\n\r\n`)), 'http1', method);
  t.is(sniffPreface(Buffer.from('PRI * HTTP/1.1\r\n\r\n')), 'http1');
  for (let i = 0; i < 500; i++) {
    const bytes = randomBytes(1 + (i % 40));
    const verdict = sniffPreface(bytes);
    const n = Math.min(bytes.length, H2_PREFACE.length);
    t.is(verdict, bytes.subarray(0, n).equals(H2_PREFACE.subarray(0, n)) ? (n === H2_PREFACE.length ? 'h2' : 'more') : 'http1');
  }
});

test('decodeHttp2Settings takes base64url SETTINGS payloads and names what is wrong with others', (t) => {
  t.deepEqual(decodeHttp2Settings(''), Buffer.alloc(0));
  // nghttp's: SETTINGS_MAX_CONCURRENT_STREAMS 100, SETTINGS_INITIAL_WINDOW_SIZE 65535.
  t.deepEqual([...decodeHttp2Settings('AAMAAABkAAQAAP__')], [0, 3, 0, 0, 0, 100, 0, 4, 0, 0, 0xff, 0xff]);
  t.deepEqual([...decodeHttp2Settings('AAMAAABk==')], [0, 3, 0, 0, 0, 100], 'trailing padding is tolerated');
  const refusal = (value: string) => t.throws(() => decodeHttp2Settings(value), { code: 'CW_PROXY_BAD_REQUEST' })?.message ?? '';
  t.regex(refusal('AAMA+AB/'), /not base64url/, 'base64, not base64url');
  t.regex(refusal('AAMAA'), /not base64url/, 'a length no base64 has');
  t.regex(refusal('AAMAAAB'), /decodes to 5 bytes/);
  t.regex(refusal('A'.repeat(520)), /holds 65 settings \(at most 64\)/);
  t.regex(refusal('has space'), /send the client's SETTINGS payload base64url-encoded, or connect with HTTP\/2 prior knowledge/);
});

test('decideUpgrade: stream 1 as one HEADERS frame and DATA frames of at most 16 KiB, END_STREAM on the last; declines what HTTP/2 cannot carry that way', (t) => {
  const body = Buffer.alloc(40_000, 0x62);
  const decision = decideUpgrade(upgradeHead(`content-length: ${body.length}\r\nx-a: 1\r\nte: trailers\r\nkeep-alive: 5\r\n`), body);
  if (decision.kind !== 'upgrade') return t.fail(decision.kind);
  t.deepEqual([...decision.settings], [0, 3, 0, 0, 0, 100]);
  const frames: { type: number; flags: number; stream: number; payload: Buffer }[] = [];
  for (let at = 0; at < decision.streamOne.length; ) {
    const length = decision.streamOne.readUIntBE(at, 3);
    frames.push({ type: decision.streamOne[at + 3]!, flags: decision.streamOne[at + 4]!, stream: decision.streamOne.readUInt32BE(at + 5), payload: decision.streamOne.subarray(at + 9, at + 9 + length) });
    at += 9 + length;
  }
  t.deepEqual(frames.map((f) => [f.type, f.flags, f.stream, f.payload.length]), [
    [1, 0x4, 1, frames[0]!.payload.length],
    [0, 0, 1, 16_384],
    [0, 0, 1, 16_384],
    [0, 0x1, 1, 40_000 - 2 * 16_384],
  ]);
  // Pseudo-headers first; host as :authority; hop-by-hop headers gone; te only as trailers.
  t.deepEqual(frames[0]!.payload, literalHeaderBlock([[':method', 'POST'], [':scheme', 'http'], [':path', '/x'], [':authority', 'reviews'], ['content-length', '40000'], ['x-a', '1'], ['te', 'trailers']]));
  t.deepEqual(Buffer.concat(frames.slice(1).map((f) => f.payload)), body);

  const empty = decideUpgrade(upgradeHead(), Buffer.alloc(0));
  t.is(empty.kind === 'upgrade' && empty.streamOne[4], 0x5, 'no body: END_HEADERS | END_STREAM on the HEADERS frame');

  t.like(decideUpgrade(upgradeHead('', null), Buffer.alloc(0)), { kind: 'decline', reason: 'no-settings' });
  t.like(decideUpgrade(upgradeHead('transfer-encoding: chunked\r\n'), Buffer.from('0\r\n\r\n')), { kind: 'decline', reason: 'chunked-body' });
  t.like(decideUpgrade(upgradeHead('content-length: 65536\r\n'), Buffer.alloc(65_536)), { kind: 'decline', reason: 'body-too-large' });
  t.like(decideUpgrade(upgradeHead(`x-wide: ${'w'.repeat(17_000)}\r\n`), Buffer.alloc(0)), { kind: 'decline', reason: 'headers-too-large' });
  t.like(decideUpgrade(upgradeHead('', '!!'), Buffer.alloc(0)), { kind: 'refuse' });
});

test('literalHeaderBlock: literal without indexing, new name, no Huffman; lengths as 7-bit-prefix integers (RFC 7541 §5.1, §6.2.2)', (t) => {
  t.deepEqual([...literalHeaderBlock([['a', 'bc']])], [0x00, 1, 0x61, 2, 0x62, 0x63]);
  // 126 fits the prefix; 127 is the prefix's maximum plus 0; 300 = 127 + 173 → 0xad 0x01.
  t.deepEqual([...literalHeaderBlock([['x', 'v'.repeat(126)]]).subarray(3, 4)], [126]);
  t.deepEqual([...literalHeaderBlock([['x', 'v'.repeat(127)]]).subarray(3, 5)], [0x7f, 0x00]);
  t.deepEqual([...literalHeaderBlock([['x', 'v'.repeat(300)]]).subarray(3, 6)], [0x7f, 0xad, 0x01]);
});
