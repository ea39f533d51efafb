import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** The controller's Prometheus metrics (prefix `causeway_controller_`). */
export class ControllerMetrics {
  readonly registrations: Counter<'result'>;
  readonly heartbeats: Counter<'result'>;
  readonly connectedNodes: Gauge<'kind'>;
  readonly pushes: Counter<'encoding'>;
  readonly acks: Counter;
  readonly nacks: Counter;
  readonly pushToAckSeconds: Histogram;
  readonly snapshotBuildSeconds: Histogram;
  readonly snapshotBytes: Gauge<'view'>;
  readonly endpoints: Gauge;
  readonly services: Gauge;
  readonly invalidValues: Counter;
  readonly exportWrites: Counter<'kind'>;
  readonly exportPassServices: Histogram<'kind'>;
  readonly healthChecks: Counter<'result'>;
  readonly dnsQueries: Counter<'rcode'>;
  readonly exportedHealthyEndpoints: Gauge<'namespace' | 'service'>;
  readonly caReloads: Counter<'result'>;
  readonly trustBundleRoots: Gauge;

  constructor(registry: Registry) {
    const registers = [registry];
    this.registrations = new Counter({ name: 'causeway_controller_registrations_total', help: 'Register calls by result (ok or the refusal code)', labelNames: ['result'], registers });
    this.heartbeats = new Counter({ name: 'causeway_controller_heartbeats_total', help: 'Heartbeat calls by result', labelNames: ['result'], registers });
    this.connectedNodes = new Gauge({ name: 'causeway_controller_connected_nodes', help: 'Nodes with an open discovery stream', labelNames: ['kind'], registers });
    this.pushes = new Counter({ name: 'causeway_controller_snapshot_pushes_total', help: 'Snapshots sent to nodes', labelNames: ['encoding'], registers });
    this.acks = new Counter({ name: 'causeway_controller_snapshot_acks_total', help: 'Snapshot versions acknowledged by nodes', registers });
    this.nacks = new Counter({ name: 'causeway_controller_snapshot_nacks_total', help: 'Snapshot versions rejected by nodes (they keep the previous one)', registers });
    this.pushToAckSeconds = new Histogram({
      name: 'causeway_controller_push_to_ack_seconds',
      help: 'Time from a catalog change to a node acknowledging the snapshot that carries it',
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.snapshotBuildSeconds = new Histogram({ name: 'causeway_controller_snapshot_build_seconds', help: 'Time to build one view\'s snapshot', buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers });
    this.snapshotBytes = new Gauge({ name: 'causeway_controller_snapshot_bytes', help: 'Size of the current snapshot JSON per view', labelNames: ['view'], registers });
    this.endpoints = new Gauge({ name: 'causeway_controller_endpoints', help: 'Registered endpoints in the catalog', registers });
    this.services = new Gauge({ name: 'causeway_controller_services', help: 'Services in the catalog', registers });
    this.invalidValues = new Counter({ name: 'causeway_controller_invalid_etcd_values_total', help: 'etcd values skipped because they failed validation', registers });
    this.exportWrites = new Counter({ name: 'causeway_controller_export_writes_total', help: 'Writes to /causeway/v1/exports/', labelNames: ['kind'], registers });
    this.exportPassServices = new Histogram({
      name: 'causeway_controller_export_pass_services',
      help: 'Services an export pass compared with the export store (kind: full = every service, changed = only those that changed)',
      labelNames: ['kind'],
      buckets: [1, 2, 5, 10, 50, 100, 500, 1000, 5000],
      registers,
    });
    this.healthChecks = new Counter({ name: 'causeway_controller_health_checks_total', help: 'Active health checks by result', labelNames: ['result'], registers });
    this.dnsQueries = new Counter({ name: 'causeway_controller_dns_queries_total', help: 'Operator DNS queries by response code', labelNames: ['rcode'], registers });
    this.exportedHealthyEndpoints = new Gauge({
      name: 'causeway_controller_exported_service_healthy_endpoints',
      help: 'Healthy endpoints of each exported service, as published to peers (all localities)',
      labelNames: ['namespace', 'service'],
      registers,
    });
    this.caReloads = new Counter({ name: 'causeway_controller_ca_reloads_total', help: 'Changes of controller.caDir seen while running: ok (installed) or refused (the intermediate in effect kept signing)', labelNames: ['result'], registers });
    for (const result of ['ok', 'refused']) this.caReloads.inc({ result }, 0);
    this.trustBundleRoots = new Gauge({ name: 'causeway_controller_trust_bundle_roots', help: 'Roots in the trust bundle the controller serves (2 during a root rotation)', registers });
  }
}
