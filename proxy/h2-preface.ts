/** The HTTP/2 client connection preface (RFC 9113 §3.4): what an h2c client with prior knowledge sends first. */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * What the first bytes of a connection are: `'h2'` once they are the whole preface,
 * `'http1'` as soon as one byte differs from it, `'more'` while they are a proper
 * prefix of it. No HTTP/1.1 request is a prefix of the preface (its one complete head,
 * `PRI * HTTP/2.0`, is not HTTP/1.1), so an HTTP/1.1 request is never held waiting:
 * usually its first byte decides.
 */
export function sniffPreface(buf: Buffer): 'h2' | 'http1' | 'more' {
  const n = Math.min(buf.length, H2_PREFACE.length);
  for (let i = 0; i < n; i++) if (buf[i] !== H2_PREFACE[i]) return 'http1';
  return n === H2_PREFACE.length ? 'h2' : 'more';
}
