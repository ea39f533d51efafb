import { formatAge, formatTable } from '../federation/index.js';
import type { MeshView } from './mesh-view.js';

const pct = (ratio: number) => `${(ratio * 100).toFixed(ratio < 0.01 ? 2 : 1)}%`;

/** The human text of `causeway status --all`: every cluster, link and service the local cluster sees. */
export function renderMeshStatus(view: MeshView): string {
  const out: string[] = [`the mesh as ${view.seenFrom} sees it (${view.generatedAt})`];
  if (view.error) out.push(`  warning: ${view.error}`);
  out.push('', 'clusters');
  out.push(
    formatTable([
      ['CLUSTER', 'LOCALITY', 'NETWORK', 'SEEN AS', 'CONTROLLERS', 'GATEWAYS'],
      ...view.clusters.map((c) => [
        c.name,
        c.locality,
        c.network,
        c.local ? 'local' : `link ${c.linkState}`,
        c.controllers === undefined ? '-' : String(c.controllers),
        c.gateways.length === 0 ? '(none)' : c.gateways.map((g) => `${g.address}:${g.port}${g.live ? '' : ' (not live)'}`).join(' '),
      ]),
    ]),
  );
  out.push('', 'links');
  if (view.links.length === 0) out.push('  (none configured)');
  else {
    out.push(
      formatTable([
        ['FROM', 'TO', 'STATE', 'HEARTBEAT', 'LAG', 'REVISION', 'IMPORTS', 'STALE', 'CONFLICTS'],
        ...view.links.map((l) => [
          l.cluster,
          l.peer,
          l.state,
          l.heartbeatAgeMs === undefined ? 'never' : `${formatAge(l.heartbeatAgeMs)} ago`,
          formatAge(l.syncLagMs),
          l.appliedRevision ?? '-',
          String(l.imports),
          String(l.importsStale),
          String(l.importsInConflict),
        ]),
      ]),
    );
    for (const l of view.links) for (const line of [l.message, ...l.warnings]) if (line) out.push(`  ${l.cluster} → ${l.peer}: ${line}`);
  }
  out.push('', 'links reported by peers (each peer reports its own links; ages on this clock)');
  if (view.reportedLinks.length === 0) out.push('  (none: no linked peer has reported its links yet)');
  else {
    out.push(
      formatTable([
        ['FROM', 'TO', 'STATE', 'HEARTBEAT', 'LAG', 'IMPORTS', 'CONFLICTS', 'REPORT'],
        ...view.reportedLinks.map((l) => [
          l.cluster,
          l.towardsLocal ? `${l.peer} (this cluster)` : l.peer,
          l.staleReport ? `${l.state} (stale report)` : l.state,
          l.heartbeatAgeMs === undefined ? 'never' : `${formatAge(l.heartbeatAgeMs)} ago`,
          formatAge(l.syncLagMs),
          String(l.imports),
          String(l.conflicts),
          `by ${l.reportedBy}, ${formatAge(l.reportAgeMs)} ago`,
        ]),
      ]),
    );
    for (const reporter of new Set(view.reportedLinks.map((l) => l.reportedBy))) {
      const links = view.reportedLinks.filter((l) => l.reportedBy === reporter);
      const line = links.map((l) => `${l.cluster} → ${l.peer} ${l.state}${l.syncLagMs === undefined ? '' : `, ${formatAge(l.syncLagMs)} lag`}`).join('; ');
      const stale = links[0]!.staleReport ? ` — a stale report, ${formatAge(links[0]!.reportAgeMs)} old: ${reporter}'s federation, or the link to ${reporter}, stopped updating it` : '';
      out.push(`  ${reporter} reports: ${line}${stale}`);
    }
  }
  out.push('', 'services');
  if (view.services.length === 0) out.push('  (none)');
  else {
    out.push(
      formatTable([
        ['SERVICE', 'CLUSTER', 'HEALTHY', 'HOW', 'SUBSETS', 'SPLIT'],
        ...view.services.flatMap((s) =>
          s.locations.map((l, i) => [
            i === 0 ? s.service : '',
            l.cluster,
            `${l.healthy}/${l.total}`,
            [l.source === 'local' ? (l.exported ? 'local, exported' : 'local') : 'imported', l.stale ? 'stale' : '', l.conflict ? 'conflict' : ''].filter(Boolean).join(', '),
            i === 0 ? s.subsets.join(',') || '-' : '',
            i === 0 && s.split ? s.split.map((p) => `${p.subset}=${p.weight}`).join(',') : '',
          ]),
        ),
      ]),
    );
  }
  out.push('', 'traffic');
  if (view.traffic.source === 'none') out.push('  (no --prometheus given)');
  else if (view.traffic.error) out.push(`  ${view.traffic.error}`);
  else if (view.traffic.flows.length === 0) out.push(`  (no requests in the last minute, per ${view.traffic.prometheus})`);
  else {
    out.push(
      formatTable([
        ['FROM', 'TO', 'SERVICE', 'REQ/S', '5XX', 'P99', 'HEALTH'],
        ...view.traffic.flows.map((f) => [f.sourceCluster, f.destinationCluster, f.service, f.requestsPerSecond.toFixed(2), pct(f.errorRatio), f.p99Ms === undefined ? '-' : `${f.p99Ms.toFixed(1)}ms`, f.health]),
      ]),
    );
  }
  out.push('', 'certificates expiring');
  if (view.certificates.source === 'none') out.push('  (no --prometheus given)');
  else if (view.certificates.error) out.push(`  ${view.certificates.error}`);
  else if (view.certificates.expiring.length === 0) out.push('  (none within the warning window)');
  else {
    out.push(
      formatTable([
        ['CLUSTER', 'IDENTITY', 'SIDECAR', 'NOT AFTER', 'LEFT'],
        ...view.certificates.expiring.map((c) => [c.cluster, c.identity, c.instance, c.notAfter, c.secondsLeft <= 0 ? 'EXPIRED' : formatAge(c.secondsLeft * 1000)]),
      ]),
    );
  }
  return `${out.join('\n')}\n`;
}
