import { NETWORK_LABEL, type Snapshot, type SnapshotService, type SnapshotTarget } from '../mesh/index.js';

/** What decides whether a local endpoint is directly reachable: the workload's own network and its cluster's gateway. */
export interface NetworkView {
  readonly labels: Readonly<Record<string, string>>;
  /** `host:port` of this cluster's east-west gateway as this workload reaches it. */
  readonly networkGateway?: string | undefined;
}

/**
 * Rewrites a snapshot for a workload that cannot reach every endpoint of its own cluster
 * directly (a VM outside the cluster networks, and the cluster's workloads calling
 * it). Local endpoints whose `causeway.io/network` label differs from the workload's own
 * are replaced by one target: the cluster's gateway, which routes by SNI to a healthy
 * endpoint of the service (it reaches every network of its cluster). TLS stays end to
 * end; secure naming then checks the service's allowed identities, as through any gateway.
 * Without `networkGateway` the snapshot is returned unchanged.
 */
export function reachOtherNetworks(snapshot: Snapshot, view: NetworkView): Snapshot {
  if (!view.networkGateway) return snapshot;
  const at = view.networkGateway.lastIndexOf(':');
  const address = view.networkGateway.slice(0, at);
  const port = Number(view.networkGateway.slice(at + 1));
  const own = view.labels[NETWORK_LABEL];
  let changed = false;
  const services = snapshot.services.map((service): SnapshotService => {
    const elsewhere = service.targets.filter((t) => t.kind === 'endpoint' && t.cluster === snapshot.cluster && t.labels[NETWORK_LABEL] !== own);
    // A workload outside the cluster networks reaches peers through its own gateway too:
    // the SNI still names the peer, and the gateway forwards it to the peer's gateway.
    const peers = own === undefined ? [] : service.targets.filter((t) => t.kind === 'gateway' && t.cluster !== snapshot.cluster);
    if (elsewhere.length === 0 && peers.length === 0) return service;
    changed = true;
    const viaOwnGateway = new Map<string, SnapshotTarget>();
    for (const t of peers) {
      const seen = viaOwnGateway.get(t.cluster);
      // One target per peer: its gateways all lead to the same healthy instances.
      if (!seen || (t.healthy && !seen.healthy)) viaOwnGateway.set(t.cluster, { ...t, address, port });
    }
    const kept = service.targets.filter((t) => !elsewhere.includes(t) && !peers.includes(t));
    if (elsewhere.length === 0) return { ...service, targets: [...kept, ...viaOwnGateway.values()] };
    const healthy = elsewhere.filter((t) => t.healthy).length;
    const gateway: SnapshotTarget = {
      kind: 'gateway',
      cluster: snapshot.cluster,
      address,
      port,
      locality: elsewhere[0]!.locality,
      priority: Math.min(...elsewhere.map((t) => t.priority)),
      weight: healthy,
      labels: {},
      healthy: healthy > 0,
      stale: false,
    };
    return { ...service, targets: [...kept, gateway, ...viaOwnGateway.values()] };
  });
  return changed ? { ...snapshot, services } : snapshot;
}
