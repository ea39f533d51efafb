import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { HealthState } from '../mesh/index.js';
import type { RouteStats } from './route-table.js';

/**
 * The gateway's Prometheus metrics. The per-connection path only bumps plain numbers
 * and observes two histograms; counters are read from those numbers at scrape time.
 */
export class GatewayMetrics {
  /** Refusals by reason (ClientHello, routing, limits). */
  readonly refusals = new Map<string, number>();
  readonly routeStats = new Map<string, RouteStats>();
  bytesUpstream = 0;
  bytesDownstream = 0;
  upstreamConnectFailures = 0;
  /** Open connections, counted by the relay (read through `activeConnections`). */
  active = 0;
  readonly helloWait: Histogram;
  readonly upstreamConnect: Histogram;

  /** `endpointsByHealth`: the exported services' endpoints in the active route table, by health. */
  constructor(registry: Registry, routeCount: () => number, activeConnections: () => number, endpointsByHealth: () => Readonly<Record<HealthState, number>>) {
    const self = this;
    new Counter({
      name: 'causeway_gateway_connections_total',
      help: 'Connections handled, by route and result (ok, error, upstream-failed, refused).',
      labelNames: ['route', 'result'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [route, stats] of self.routeStats) {
          if (stats.ok) this.inc({ route, result: 'ok' }, stats.ok);
          if (stats.error) this.inc({ route, result: 'error' }, stats.error);
          if (stats.upstreamFailed) this.inc({ route, result: 'upstream-failed' }, stats.upstreamFailed);
        }
        let refused = 0;
        for (const count of self.refusals.values()) refused += count;
        if (refused) this.inc({ route: '', result: 'refused' }, refused);
      },
    });
    new Counter({
      name: 'causeway_gateway_refusals_total',
      help: 'Connections closed without routing, by reason.',
      labelNames: ['reason'],
      registers: [registry],
      collect() {
        this.reset();
        for (const [reason, count] of self.refusals) this.inc({ reason }, count);
      },
    });
    new Gauge({
      name: 'causeway_gateway_active_connections',
      help: 'Client connections open now (inspecting, connecting or spliced).',
      registers: [registry],
      collect() {
        this.set(activeConnections());
      },
    });
    new Counter({
      name: 'causeway_gateway_bytes_total',
      help: 'Bytes spliced, by direction (upstream = client to server).',
      labelNames: ['direction'],
      registers: [registry],
      collect() {
        this.reset();
        this.inc({ direction: 'upstream' }, self.bytesUpstream);
        this.inc({ direction: 'downstream' }, self.bytesDownstream);
      },
    });
    new Counter({
      name: 'causeway_gateway_upstream_connect_failures_total',
      help: 'Upstream connection attempts that failed before any byte came back.',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(self.upstreamConnectFailures);
      },
    });
    new Gauge({
      name: 'causeway_gateway_routes',
      help: 'Routes in the active route table.',
      registers: [registry],
      // Every worker holds the same table: across workers this is a max, not a sum.
      aggregator: 'max',
      collect() {
        this.set(routeCount());
      },
    });
    new Gauge({
      name: 'causeway_gateway_service_endpoints',
      help: "Endpoints of exported services in the active route table, by health: 'healthy' ones get connections; 'unknown' (not checked yet) only when a service has no healthy one.",
      labelNames: ['health'],
      registers: [registry],
      aggregator: 'max',
      collect() {
        for (const [health, count] of Object.entries(endpointsByHealth())) this.set({ health }, count);
      },
    });
    this.helloWait = new Histogram({
      name: 'causeway_gateway_client_hello_wait_seconds',
      help: 'Time from accept until the whole ClientHello was read.',
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [registry],
    });
    this.upstreamConnect = new Histogram({
      name: 'causeway_gateway_upstream_connect_seconds',
      help: 'Time to establish the upstream TCP connection.',
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [registry],
    });
  }

  refuse(reason: string): void {
    this.refusals.set(reason, (this.refusals.get(reason) ?? 0) + 1);
  }

  statsFor = (route: string): RouteStats => {
    let stats = this.routeStats.get(route);
    if (stats === undefined) {
      stats = { ok: 0, error: 0, upstreamFailed: 0 };
      this.routeStats.set(route, stats);
    }
    return stats;
  };
}
