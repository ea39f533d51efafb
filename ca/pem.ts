import { CaError, CaErrorCodes } from './errors.js';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]*?)-----END \1-----/g;

export function pemEncode(label: string, der: Buffer): string {
  const base64 = der.toString('base64');
  let body = '';
  for (let i = 0; i < base64.length; i += 64) body += `${base64.slice(i, i + 64)}\n`;
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

/** Every PEM block of `label` in `text`, as DER. Throws when there is none. */
export function pemDecodeAll(text: string, label: string, what = label.toLowerCase()): Buffer[] {
  const blocks: Buffer[] = [];
  for (const match of text.matchAll(PEM_BLOCK)) {
    if (match[1] === label) blocks.push(Buffer.from((match[2] ?? '').replace(/\s+/g, ''), 'base64'));
  }
  if (blocks.length === 0) throw new CaError(CaErrorCodes.pemInvalid, `no "${label}" PEM block found in the ${what}; pass PEM text (-----BEGIN ${label}-----)`);
  return blocks;
}

export function pemDecodeOne(text: string, label: string, what = label.toLowerCase()): Buffer {
  const blocks = pemDecodeAll(text, label, what);
  if (blocks.length !== 1) throw new CaError(CaErrorCodes.pemInvalid, `the ${what} holds ${blocks.length} "${label}" PEM blocks; expected exactly one`);
  return blocks[0] as Buffer;
}

/** Splits a PEM bundle into one PEM string per certificate (normalised line endings). */
export function splitCertificates(pem: string, what = 'certificate bundle'): string[] {
  return pemDecodeAll(pem, 'CERTIFICATE', what).map((der) => pemEncode('CERTIFICATE', der));
}
