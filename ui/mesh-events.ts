import type { CertificatesView, ServedCertificates } from './certificate-expiries.js';
import type { MeshCatalogView } from './mesh-view.js';

/**
 * What changed in the mesh between two reads of the view: link state changes (also those
 * peers report of their own links), failovers
 * (a cluster that served a service healthy no longer does, so its callers' traffic moves
 * to the clusters that still do), gateways that came or went, certificates entering the
 * expiry window and certificates renewed. Every event names its cluster.
 */
export interface MeshEvent {
  readonly at: string;
  readonly cluster: string;
  readonly kind: 'link-state' | 'failover' | 'recovery' | 'gateway' | 'certificate-expiry' | 'certificate-renewed';
  readonly severity: 'info' | 'warning' | 'critical';
  readonly message: string;
}

const BAD_LINK_STATES = new Set(['stale', 'expired', 'unauthorized', 'down', 'local-store-down']);

function healthyBy(view: MeshCatalogView): Map<string, Map<string, number>> {
  return new Map(view.services.map((s) => [s.service, new Map(s.locations.map((l) => [l.cluster, l.stale ? 0 : l.healthy]))]));
}

/** The events that lead from `before` to `after` (none for the first read). */
export function meshEvents(before: MeshCatalogView | undefined, after: MeshCatalogView): MeshEvent[] {
  if (!before) return [];
  const at = after.generatedAt;
  const events: MeshEvent[] = [];
  const oldLinks = new Map(before.links.map((l) => [`${l.cluster}>${l.peer}`, l]));
  for (const link of after.links) {
    const old = oldLinks.get(`${link.cluster}>${link.peer}`);
    if (old?.state === link.state) continue;
    events.push({
      at,
      cluster: link.cluster,
      kind: 'link-state',
      severity: BAD_LINK_STATES.has(link.state) ? 'critical' : 'info',
      message: `link ${link.cluster} → ${link.peer}: ${old?.state ?? 'new'} → ${link.state}${link.message ? ` (${link.message})` : ''}`,
    });
  }
  // Links between other clusters, in their holders' words: a warning at most (hearsay, and not this cluster's to fix).
  const reported = (l: MeshCatalogView['reportedLinks'][number]) => (l.staleReport ? 'stale report' : l.state);
  const oldReported = new Map(before.reportedLinks.map((l) => [`${l.cluster}>${l.peer}`, reported(l)]));
  for (const link of after.reportedLinks) {
    const was = oldReported.get(`${link.cluster}>${link.peer}`);
    const is = reported(link);
    if (was === is) continue;
    events.push({
      at,
      cluster: link.cluster,
      kind: 'link-state',
      severity: BAD_LINK_STATES.has(link.state) || link.staleReport ? 'warning' : 'info',
      message: `link ${link.cluster} → ${link.peer}: ${was ?? 'new'} → ${is} (reported by ${link.reportedBy})`,
    });
  }
  const oldHealthy = healthyBy(before);
  for (const [service, now] of healthyBy(after)) {
    const then = oldHealthy.get(service);
    if (!then) continue;
    for (const [cluster, was] of then) {
      const is = now.get(cluster) ?? 0;
      const elsewhere = [...now.entries()].filter(([c, n]) => c !== cluster && n > 0).map(([c]) => c);
      if (was > 0 && is === 0) {
        const to = elsewhere.length > 0 ? `traffic moves to ${elsewhere.join(', ')}` : 'no other cluster serves it healthy';
        events.push({ at, cluster, kind: 'failover', severity: elsewhere.length > 0 ? 'warning' : 'critical', message: `${service} has no healthy endpoint left in ${cluster}: ${to}` });
      } else if (was === 0 && is > 0) {
        events.push({ at, cluster, kind: 'recovery', severity: 'info', message: `${service} is healthy again in ${cluster} (${is} endpoints)` });
      }
    }
  }
  const gatewaySet = (v: MeshCatalogView) => new Set(v.clusters.flatMap((c) => c.gateways.map((g) => `${c.name}|${g.address}:${g.port}`)));
  const oldGateways = gatewaySet(before);
  const newGateways = gatewaySet(after);
  for (const g of newGateways) if (!oldGateways.has(g)) events.push({ at, cluster: g.split('|')[0]!, kind: 'gateway', severity: 'info', message: `gateway ${g.split('|')[1]} of ${g.split('|')[0]} appeared` });
  for (const g of oldGateways) if (!newGateways.has(g)) events.push({ at, cluster: g.split('|')[0]!, kind: 'gateway', severity: 'warning', message: `gateway ${g.split('|')[1]} of ${g.split('|')[0]} is gone` });
  return events;
}

function left(seconds: number): string {
  if (seconds <= 0) return 'has expired';
  if (seconds < 3600) return `expires in ${Math.round(seconds / 60)}m`;
  return `expires in ${(seconds / 3600).toFixed(1)}h`;
}

/**
 * A sidecar's certificate that entered the warning window (or expired) since the last
 * read. Once per sidecar and identity while it stays inside: a renewal that is still
 * inside (a lifetime shorter than the window) is a `certificate-renewed` event, not a
 * new warning.
 */
export function certificateEvents(before: CertificatesView | undefined, after: CertificatesView, at: string): MeshEvent[] {
  const key = (c: CertificatesView['expiring'][number]) => `${c.instance}|${c.identity}|${c.secondsLeft <= 0}`;
  const seen = new Set((before?.expiring ?? []).map(key));
  return after.expiring
    .filter((c) => !seen.has(key(c)))
    .map((c) => ({
      at,
      cluster: c.cluster,
      kind: 'certificate-expiry' as const,
      severity: c.secondsLeft <= 3600 ? ('critical' as const) : ('warning' as const),
      message: `certificate of ${c.identity} at ${c.instance} ${left(c.secondsLeft)} (notAfter ${c.notAfter}): its renewals are failing`,
    }));
}

/**
 * A sidecar that now serves a certificate expiring later than the one of the last read
 * (same scrape target and SPIFFE ID): it renewed. A target seen for the first time, or a
 * notAfter that moved back (a restart with an older certificate), is no renewal.
 */
export function certificateRenewals(before: ServedCertificates | undefined, after: ServedCertificates, at: string): MeshEvent[] {
  const key = (c: ServedCertificates['served'][number]) => `${c.instance}|${c.identity}`;
  const old = new Map((before?.served ?? []).map((c) => [key(c), c]));
  return after.served.flatMap((c) => {
    const was = old.get(key(c));
    if (!was || Date.parse(c.notAfter) <= Date.parse(was.notAfter)) return [];
    return [{ at, cluster: c.cluster, kind: 'certificate-renewed' as const, severity: 'info' as const, message: `certificate of ${c.identity} at ${c.instance} renewed: valid until ${c.notAfter} (was ${was.notAfter})` }];
  });
}

/** The newest events, oldest first, at most `capacity`. */
export class EventLog {
  readonly #capacity: number;
  #events: MeshEvent[] = [];

  constructor(capacity = 200) {
    this.#capacity = capacity;
  }

  add(events: readonly MeshEvent[]): void {
    if (events.length === 0) return;
    this.#events = [...this.#events, ...events].slice(-this.#capacity);
  }

  get list(): readonly MeshEvent[] {
    return this.#events;
  }
}
