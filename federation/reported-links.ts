import {
  CATALOG_SCHEMA_VERSION,
  EtcdKeys,
  MAX_REPORTED_LINKS,
  MAX_REPORTED_LINKS_BYTES,
  ReportedLinks,
  decodeCatalogValue,
  encodeCatalogValue,
  type ReportedLink,
} from '../mesh/index.js';
import type { PeerLinkStatus } from './peer-link.js';

/** Why a peer's `_links` report was refused (the `reason` label of the refusal metric). */
export const ReportRefusals = ['too-large', 'too-many-links', 'invalid', 'spoofed'] as const;
export type ReportRefusal = (typeof ReportRefusals)[number];

export type DecodedReport = { ok: true; value: ReportedLinks } | { ok: false; reason: ReportRefusal; message: string };

/**
 * Reads `peer`'s `/causeway/v1/exports/_links` as a reader must treat anything a peer
 * wrote: bounded before it is parsed (bytes, then the number of links), validated strictly,
 * and only about the peer itself — a cluster reports its own links, never another's.
 */
export function decodeReportedLinks(peer: string, raw: Buffer | string): DecodedReport {
  const bytes = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length;
  if (bytes > MAX_REPORTED_LINKS_BYTES) return { ok: false, reason: 'too-large', message: `${bytes} bytes, more than the ${MAX_REPORTED_LINKS_BYTES} a report may take` };
  const text = typeof raw === 'string' ? raw : raw.toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return { ok: false, reason: 'invalid', message: `not JSON (${(error as Error).message})` };
  }
  const links = (json as { links?: unknown } | null)?.links;
  if (Array.isArray(links) && links.length > MAX_REPORTED_LINKS) return { ok: false, reason: 'too-many-links', message: `${links.length} links, more than the ${MAX_REPORTED_LINKS} a report may hold` };
  const decoded = decodeCatalogValue(ReportedLinks, EtcdKeys.reportedLinks, text);
  if (!decoded.ok) return { ok: false, reason: 'invalid', message: decoded.error.message };
  if (decoded.value.cluster !== peer) return { ok: false, reason: 'spoofed', message: `it names cluster "${decoded.value.cluster}", but a peer may report only its own links (this is ${peer}'s export store)` };
  return { ok: true, value: decoded.value };
}

/** The one builder of `_links`: this cluster's links as the view needs them (no address, no message). */
export function reportedLinksValue(cluster: string, links: readonly PeerLinkStatus[], now = Date.now()): string {
  const reported = links.slice(0, MAX_REPORTED_LINKS).map(
    (l): ReportedLink => ({
      peer: l.peer,
      state: l.state,
      heartbeatAgeMs: l.heartbeatAgeMs,
      ...(l.lastSyncLagMs !== undefined ? { syncLagMs: l.lastSyncLagMs } : {}),
      imports: l.imports,
      conflicts: l.conflicts.length,
    }),
  );
  return encodeCatalogValue(ReportedLinks, EtcdKeys.reportedLinks, { schema: CATALOG_SCHEMA_VERSION, cluster, reportedAt: new Date(now).toISOString(), links: reported });
}

/** What changes a report's meaning (states and counts), without the ages that change on every read. */
export function reportSignature(links: readonly PeerLinkStatus[]): string {
  return links.map((l) => `${l.peer}:${l.state}:${l.imports}:${l.conflicts.length}`).join(',');
}
