import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { LinkStates, type LinkState } from '../mesh/index.js';

/** The federation's Prometheus metrics, one set per registry (labelled by peer). */
export class FederationMetrics {
  readonly syncLag: Histogram<'peer'>;
  readonly linkState: Gauge<'peer' | 'state'>;
  readonly heartbeatAge: Gauge<'peer'>;
  readonly imports: Gauge<'peer' | 'state'>;
  readonly eventsApplied: Counter<'peer'>;
  readonly resyncs: Counter<'peer' | 'reason'>;
  readonly conflicts: Gauge<'peer'>;
  readonly appliedRevision: Gauge<'peer'>;
  readonly initialSyncDone: Gauge<'peer'>;
  readonly reportsPublished: Counter<'result'>;
  readonly reportsReceived: Counter<'peer'>;
  readonly reportsRefused: Counter<'peer' | 'reason'>;
  readonly reportAge: Gauge<'peer'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.syncLag = new Histogram({
      name: 'causeway_federation_sync_lag_seconds',
      help: 'Time from a peer change reaching this federation until its import is committed locally',
      labelNames: ['peer'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.linkState = new Gauge({ name: 'causeway_federation_link_state', help: '1 for the state each link is in, 0 for the others', labelNames: ['peer', 'state'], registers });
    this.heartbeatAge = new Gauge({ name: 'causeway_federation_heartbeat_age_seconds', help: "Age of the peer's last heartbeat seen", labelNames: ['peer'], registers });
    this.imports = new Gauge({ name: 'causeway_federation_imports', help: 'Imported services by state (active, stale, conflict)', labelNames: ['peer', 'state'], registers });
    this.eventsApplied = new Counter({ name: 'causeway_federation_events_applied_total', help: 'Peer export events applied', labelNames: ['peer'], registers });
    this.resyncs = new Counter({ name: 'causeway_federation_resyncs_total', help: 'Full re-lists of a peer (initial, compacted, restarted)', labelNames: ['peer', 'reason'], registers });
    this.conflicts = new Gauge({ name: 'causeway_federation_port_conflicts', help: "Services whose ports from this peer lose to an older export's", labelNames: ['peer'], registers });
    this.appliedRevision = new Gauge({ name: 'causeway_federation_applied_revision', help: "Peer etcd revision applied locally", labelNames: ['peer'], registers });
    this.initialSyncDone = new Gauge({
      name: 'causeway_federation_initial_sync_done',
      help: "1 once the link's first full sync finished; 0 while pending or after initialSyncTimeout passed without it",
      labelNames: ['peer'],
      registers,
    });
    this.reportsPublished = new Counter({
      name: 'causeway_federation_links_reports_published_total',
      help: "Writes of this cluster's own links to exports/_links in its export store, by result (ok, error)",
      labelNames: ['result'],
      registers,
    });
    this.reportsReceived = new Counter({ name: 'causeway_federation_peer_link_reports_total', help: "New _links reports of a peer's own links, accepted and stored", labelNames: ['peer'], registers });
    this.reportsRefused = new Counter({
      name: 'causeway_federation_peer_link_reports_refused_total',
      help: "A peer's _links reports refused (too-large, too-many-links, invalid, spoofed); the last good one is kept",
      labelNames: ['peer', 'reason'],
      registers,
    });
    this.reportAge = new Gauge({ name: 'causeway_federation_peer_link_report_age_seconds', help: "Since the peer's last valid _links report was received (local clock)", labelNames: ['peer'], registers });
  }

  setLinkState(peer: string, state: LinkState): void {
    for (const s of LinkStates) this.linkState.set({ peer, state: s }, s === state ? 1 : 0);
  }
}
