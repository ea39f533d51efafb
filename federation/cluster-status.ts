import {
  ClusterInfo,
  EtcdKeys,
  Gateway,
  ImportedService,
  LinkStatus,
  PeerReportedLinks,
  decodeCatalogValue,
  parseEtcdKey,
  type ClusterConfig,
  type LinkState,
  type ReportedLink,
} from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';

/**
 * `causeway status`: one cluster and its links, read from the local etcd. Imports are
 * counted from the keys themselves, and ages are computed now, so the report stays true
 * when a peer — or the federation process itself — is down.
 */
export interface LinkStatusView {
  readonly peer: string;
  /** In the cluster config's links. */
  readonly configured: boolean;
  /** The state the federation last recorded, or `unknown` when it never did. */
  readonly state: LinkState | 'unknown';
  readonly connected: boolean | undefined;
  readonly initialSync: LinkStatus['initialSync'] | undefined;
  readonly heartbeatAgeMs: number | undefined;
  readonly appliedRevision: string | undefined;
  readonly syncLagMs: number | undefined;
  readonly imports: number;
  readonly importsStale: number;
  readonly importsExpired: number;
  readonly importsInConflict: number;
  /** Imports in conflict: `<name>.<namespace>` and why (which older export wins). */
  readonly conflicts: ReadonlyArray<{ service: string; reason: string }>;
  /** How long ago the federation last wrote this link's status. */
  readonly statusAgeMs: number | undefined;
  readonly message: string | undefined;
  readonly warnings: readonly string[];
}

/**
 * A link between two other clusters, as its holder reported it (`exports/_links`, mirrored by
 * the local federation to `imports/<peer>/_links`): the holder's word, shown with its age.
 */
export interface ReportedLinkView extends ReportedLink {
  /** The cluster that holds the link — and reported it. */
  readonly cluster: string;
  readonly reportedBy: string;
  /** The reporter's clock when it wrote the report. */
  readonly reportedAt: string;
  /** Since the local federation received this report, on the local clock. */
  readonly reportAgeMs: number;
  /** Older than `staleAfter`: the reporter's federation, or the local link to the reporter, stopped bringing news. */
  readonly staleReport: boolean;
  /** `peer` is the local cluster: the reporter's side of a link into it (the local cluster's own links come from its own data only). */
  readonly towardsLocal: boolean;
}

export interface ClusterStatus {
  readonly cluster: { name: string; locality: string; network: string; source: 'etcd' | 'config' };
  readonly gateways: ReadonlyArray<{ id: string; address: string; port: number; locality: string }>;
  readonly links: LinkStatusView[];
  /** Links of the peers, as each reported its own, ordered by reporter then peer. */
  readonly reportedLinks: ReportedLinkView[];
  readonly generatedAt: string;
}

const loc = (l: { region: string; zone: string }) => `${l.region}/${l.zone}`;

export async function readClusterStatus(store: EtcdStore, config: ClusterConfig, now = Date.now()): Promise<ClusterStatus> {
  const [clusterKv, gateways, imports] = await Promise.all([
    store.get(EtcdKeys.cluster),
    store.list(EtcdKeys.gatewaysPrefix),
    store.list(EtcdKeys.importsPrefix),
  ]);
  let cluster: ClusterStatus['cluster'] = { name: config.cluster.name, locality: loc(config.cluster.locality), network: config.cluster.network, source: 'config' };
  if (clusterKv) {
    const decoded = decodeCatalogValue(ClusterInfo, EtcdKeys.cluster, clusterKv.value);
    if (decoded.ok) cluster = { name: decoded.value.name, locality: loc(decoded.value.locality), network: decoded.value.network, source: 'etcd' };
  }
  const gatewayRows = gateways.entries.flatMap((entry) => {
    const decoded = decodeCatalogValue(Gateway, entry.key, entry.value);
    return decoded.ok ? [{ id: decoded.value.id, address: decoded.value.address, port: decoded.value.port, locality: loc(decoded.value.locality) }] : [];
  });

  interface Tally {
    status?: LinkStatus;
    reported?: PeerReportedLinks;
    imports: number;
    stale: number;
    conflicts: Array<{ service: string; reason: string }>;
  }
  const byPeer = new Map<string, Tally>();
  const tally = (peer: string) => {
    let t = byPeer.get(peer);
    if (!t) byPeer.set(peer, (t = { imports: 0, stale: 0, conflicts: [] }));
    return t;
  };
  for (const link of config.links) tally(link.peer);
  for (const entry of imports.entries) {
    let key;
    try {
      key = parseEtcdKey(entry.key);
    } catch {
      continue;
    }
    if (key.kind === 'link-status') {
      const decoded = decodeCatalogValue(LinkStatus, entry.key, entry.value);
      if (decoded.ok) tally(key.peer).status = decoded.value;
    } else if (key.kind === 'peer-reported-links') {
      const decoded = decodeCatalogValue(PeerReportedLinks, entry.key, entry.value);
      if (decoded.ok && decoded.value.cluster === key.peer) tally(key.peer).reported = decoded.value;
    } else if (key.kind === 'imported-service') {
      const decoded = decodeCatalogValue(ImportedService, entry.key, entry.value);
      if (!decoded.ok) continue;
      const t = tally(key.peer);
      t.imports += 1;
      if (decoded.value.stale) t.stale += 1;
      if (decoded.value.conflict) t.conflicts.push({ service: `${key.name}.${key.namespace}`, reason: decoded.value.conflict });
    }
  }
  // The federation rewrites each status at least every heartbeat interval.
  const silentAfterMs = Math.max(3 * config.federation.heartbeatIntervalMs, 10_000);
  const configured = new Set(config.links.map((l) => l.peer));
  const links = [...byPeer.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([peer, t]): LinkStatusView => {
      const s = t.status;
      const warnings: string[] = [];
      const statusAgeMs = s ? Math.max(0, now - Date.parse(s.updatedAt)) : undefined;
      const heartbeatAgeMs = s?.lastHeartbeatAt ? Math.max(0, now - Date.parse(s.lastHeartbeatAt)) : undefined;
      if (!configured.has(peer)) warnings.push('not in this cluster config’s links');
      if (!s) warnings.push('no status recorded: the federation has never run this link');
      else if (statusAgeMs !== undefined && statusAgeMs > silentAfterMs) {
        warnings.push(`status not updated for ${Math.round(statusAgeMs / 1000)}s: is the federation (controller or causeway federation) running?`);
      }
      if (s && (s.state === 'synced' || s.state === 'syncing') && heartbeatAgeMs !== undefined && heartbeatAgeMs > config.federation.staleAfterMs) {
        warnings.push(`last heartbeat ${Math.round(heartbeatAgeMs / 1000)}s ago is past staleAfter, but the recorded state is ${s.state}`);
      }
      return {
        peer,
        configured: configured.has(peer),
        state: s?.state ?? 'unknown',
        connected: s?.connected,
        initialSync: s?.initialSync,
        heartbeatAgeMs,
        appliedRevision: s?.appliedRevision,
        syncLagMs: s?.lastSyncLagMs,
        imports: t.imports,
        importsStale: t.stale,
        importsExpired: s?.importsExpired ?? 0,
        importsInConflict: t.conflicts.length,
        conflicts: t.conflicts,
        statusAgeMs,
        message: s?.message,
        warnings,
      };
    });
  const reportedLinks = [...byPeer.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .flatMap(([, t]) => (t.reported ? reportedLinkViews(t.reported, cluster.name, config.federation.staleAfterMs, now) : []));
  return { cluster, gateways: gatewayRows, links, reportedLinks, generatedAt: new Date(now).toISOString() };
}

function reportedLinkViews(report: PeerReportedLinks, local: string, staleAfterMs: number, now: number): ReportedLinkView[] {
  const reportAgeMs = Math.max(0, now - Date.parse(report.receivedAt));
  return [...report.links]
    .sort((a, b) => a.peer.localeCompare(b.peer))
    .map((link) => ({
      ...link,
      cluster: report.cluster,
      reportedBy: report.cluster,
      reportedAt: report.reportedAt,
      reportAgeMs,
      staleReport: reportAgeMs > staleAfterMs,
      towardsLocal: link.peer === local,
    }));
}

/** A duration for humans: 850ms, 12.3s, 7m; `-` when unknown. */
export function formatAge(ms: number | undefined): string {
  if (ms === undefined) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.round(ms / 60_000)}m`;
}

/** Rows as aligned, two-space-indented columns (the first row is the header). */
export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd()).join('\n');
}

/** The human table of `causeway status`. */
export function renderClusterStatus(status: ClusterStatus): string {
  const out: string[] = [];
  out.push(`cluster ${status.cluster.name}  locality ${status.cluster.locality}  network ${status.cluster.network}`);
  out.push('');
  out.push('gateways');
  out.push(status.gateways.length === 0 ? '  (none registered)' : formatTable([['ID', 'ADDRESS', 'LOCALITY'], ...status.gateways.map((g) => [g.id, `${g.address}:${g.port}`, g.locality])]));
  out.push('');
  out.push('links');
  if (status.links.length === 0) out.push('  (none configured)');
  else {
    out.push(
      formatTable([
        ['PEER', 'STATE', 'CONNECTED', 'HEARTBEAT', 'REVISION', 'LAG', 'IMPORTS', 'STALE', 'EXPIRED', 'CONFLICTS', 'INITIAL SYNC'],
        ...status.links.map((l) => [
          l.peer,
          l.state,
          l.connected === undefined ? '-' : l.connected ? 'yes' : 'no',
          l.heartbeatAgeMs === undefined ? 'never' : `${formatAge(l.heartbeatAgeMs)} ago`,
          l.appliedRevision ?? '-',
          formatAge(l.syncLagMs),
          String(l.imports),
          String(l.importsStale),
          String(l.importsExpired),
          String(l.importsInConflict),
          l.initialSync ?? '-',
        ]),
      ]),
    );
    for (const l of status.links) {
      for (const line of [l.message, ...l.warnings]) if (line) out.push(`  ${l.peer}: ${line}`);
      for (const c of l.conflicts) out.push(`  ${l.peer}: conflict on ${c.service}: ${c.reason}`);
    }
  }
  return `${out.join('\n')}\n`;
}
