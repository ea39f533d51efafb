import { isIPv4, isIPv6 } from 'node:net';

/** PROXY protocol v2 signature (haproxy's proxy-protocol.txt §2.2). */
const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/**
 * Custom TLV types (0xE0–0xEF are reserved for applications): the caller's verified
 * SPIFFE ID and its cluster, both UTF-8. Documented in proxy/README.md.
 */
export const PP2_TYPE_CAUSEWAY_SPIFFE_ID = 0xe0;
export const PP2_TYPE_CAUSEWAY_CLUSTER = 0xe1;

export interface ProxyHeaderFields {
  sourceAddress: string;
  sourcePort: number;
  destinationAddress: string;
  destinationPort: number;
  spiffeId?: string | undefined;
  cluster?: string | undefined;
}

function tlv(type: number, value: string): Buffer {
  const bytes = Buffer.from(value, 'utf8');
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(bytes.length, 1);
  return Buffer.concat([head, bytes]);
}

function v4(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

function v6(address: string): Buffer {
  const [head = '', tail = ''] = address.split('::');
  const parts = (s: string) => (s ? s.split(':') : []);
  const h = parts(head);
  const t = parts(tail);
  const groups = address.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16) || 0, i * 2));
  return out;
}

/** Encodes a PROXY v2 header (command PROXY, STREAM over INET/INET6) with the Causeway TLVs. */
export function encodeProxyV2(fields: ProxyHeaderFields): Buffer {
  const tlvs = Buffer.concat([
    ...(fields.spiffeId ? [tlv(PP2_TYPE_CAUSEWAY_SPIFFE_ID, fields.spiffeId)] : []),
    ...(fields.cluster ? [tlv(PP2_TYPE_CAUSEWAY_CLUSTER, fields.cluster)] : []),
  ]);
  const src = fields.sourceAddress.replace(/^::ffff:/, '');
  const dst = fields.destinationAddress.replace(/^::ffff:/, '');
  let family: number;
  let addresses: Buffer;
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(fields.sourcePort, 0);
  ports.writeUInt16BE(fields.destinationPort, 2);
  if (isIPv4(src) && isIPv4(dst)) {
    family = 0x11;
    addresses = Buffer.concat([v4(src), v4(dst), ports]);
  } else if (isIPv6(src) || isIPv6(dst)) {
    family = 0x21;
    addresses = Buffer.concat([v6(isIPv4(src) ? `::ffff:${src}` : src), v6(isIPv4(dst) ? `::ffff:${dst}` : dst), ports]);
  } else {
    family = 0x00;
    addresses = Buffer.alloc(0);
  }
  const header = Buffer.alloc(16);
  SIGNATURE.copy(header, 0);
  header[12] = 0x21; // version 2, command PROXY
  header[13] = family;
  header.writeUInt16BE(addresses.length + tlvs.length, 14);
  return Buffer.concat([header, addresses, tlvs]);
}

/** Decodes a PROXY v2 header at the start of `data` (for apps and tests); undefined when incomplete or absent. */
export function decodeProxyV2(data: Buffer): { length: number; sourceAddress?: string; sourcePort?: number; tlvs: Map<number, string> } | undefined {
  if (data.length < 16 || !data.subarray(0, 12).equals(SIGNATURE)) return undefined;
  const length = 16 + data.readUInt16BE(14);
  if (data.length < length) return undefined;
  const family = data[13];
  let offset = 16;
  let sourceAddress: string | undefined;
  let sourcePort: number | undefined;
  if (family === 0x11) {
    sourceAddress = [...data.subarray(16, 20)].join('.');
    sourcePort = data.readUInt16BE(24);
    offset = 28;
  } else if (family === 0x21) {
    sourcePort = data.readUInt16BE(48);
    offset = 52;
  }
  const tlvs = new Map<number, string>();
  while (offset + 3 <= length) {
    const type = data[offset]!;
    const len = data.readUInt16BE(offset + 1);
    tlvs.set(type, data.subarray(offset + 3, offset + 3 + len).toString('utf8'));
    offset += 3 + len;
  }
  return { length, sourceAddress, sourcePort, tlvs };
}
