import { Counter, Gauge, type Registry } from 'prom-client';

/** The mesh view server's own metrics. */
export class UiMetrics {
  readonly clients: Gauge;
  readonly eventsSent: Counter;
  readonly viewReads: Counter;
  readonly requests: Counter;

  constructor(registry: Registry) {
    const registers = [registry];
    this.clients = new Gauge({ name: 'causeway_ui_clients', help: 'Browsers connected to /api/events', registers });
    this.eventsSent = new Counter({ name: 'causeway_ui_events_sent_total', help: 'Server-sent events written to browsers (one per view per client)', registers });
    this.viewReads = new Counter({ name: 'causeway_ui_view_reads_total', help: 'Reads of the mesh view from the local etcd, by result (ok, error)', labelNames: ['result'], registers });
    this.requests = new Counter({ name: 'causeway_ui_requests_total', help: 'HTTP requests by route and status code', labelNames: ['route', 'code'], registers });
  }
}
