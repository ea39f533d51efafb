import type { PeerCertificate, TLSSocket } from 'node:tls';
import { clusterNameProblem, isSpiffeId } from '../mesh/index.js';

/**
 * The SPIFFE ID of a verified peer certificate: its one URI SAN. A certificate with no
 * or several SPIFFE URIs has no identity (SPIFFE X509-SVID: exactly one).
 */
export function spiffeIdOf(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined | null): string | undefined {
  const san = cert?.subjectaltname;
  if (!san) return undefined;
  const uris: string[] = [];
  for (const part of splitSan(san)) {
    if (part.startsWith('URI:')) uris.push(part.slice(4));
  }
  if (uris.length !== 1) return undefined;
  const id = uris[0]!;
  return isSpiffeId(id) ? id : undefined;
}

/** Node renders SANs as `URI:a, DNS:b`; values with commas are JSON-quoted. */
function splitSan(san: string): string[] {
  const out: string[] = [];
  const re = /(?:^|,\s*)([A-Za-z ]+:(?:"(?:[^"\\]|\\.)*"|[^,]*))/g;
  for (let m = re.exec(san); m; m = re.exec(san)) {
    const part = m[1]!;
    const colon = part.indexOf(':');
    const value = part.slice(colon + 1);
    out.push(`${part.slice(0, colon + 1)}${value.startsWith('"') ? (JSON.parse(value) as string) : value}`);
  }
  return out;
}

/**
 * The cluster a verified peer certificate was issued in. The SPIFFE ID has no cluster
 * (the same service account in two clusters is one identity), but every cluster signs
 * with its own intermediate, whose key only that cluster's controller holds; so the
 * issuer's name, once the chain verified against the mesh roots, names the caller's
 * cluster without anyone being able to forge it. We read it from the issuer's
 * `OU` (the CA's convention), else from a `cluster=<name>`/`CN=… <name>` suffix.
 */
export function clusterOfIssuer(cert: Pick<PeerCertificate, 'issuer'> | undefined | null): string | undefined {
  const issuer = cert?.issuer as unknown as Record<string, string | string[] | undefined> | undefined;
  if (!issuer) return undefined;
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
  const candidates: string[] = [];
  const ou = first(issuer.OU);
  if (ou) candidates.push(ou);
  const cn = first(issuer.CN);
  if (cn) {
    const tagged = /cluster[=: ]([a-z0-9-]+)/.exec(cn);
    if (tagged) candidates.push(tagged[1]!);
    const last = cn.trim().split(/\s+/).pop();
    if (last) candidates.push(last);
  }
  return candidates.find((c) => clusterNameProblem(c) === undefined);
}

/** The SPIFFE ID the peer of a TLS socket presented (undefined for a plain socket). */
export function peerSpiffeId(socket: object): string | undefined {
  return 'getPeerCertificate' in socket && typeof socket.getPeerCertificate === 'function' ? spiffeIdOf((socket as TLSSocket).getPeerCertificate()) : undefined;
}
