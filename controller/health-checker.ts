import { request } from 'node:http';
import { connect } from 'node:net';
import { logger, type WorkloadGroup } from '../mesh/index.js';
import { serviceKey, type CatalogCache, type ServiceKey, type StoredEndpoint } from './catalog-cache.js';
import type { ControllerMetrics } from './metrics.js';

export interface HealthCheckSettings {
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Consecutive failures that mark an endpoint unhealthy. */
  readonly unhealthyThreshold: number;
  /** Consecutive successes that mark it healthy again. */
  readonly healthyThreshold: number;
}

export const DEFAULT_HEALTH_CHECKS: HealthCheckSettings = { intervalMs: 5000, timeoutMs: 1000, unhealthyThreshold: 2, healthyThreshold: 1 };

type Probe = NonNullable<WorkloadGroup['probe']>;

interface CheckState {
  healthy: boolean;
  failures: number;
  successes: number;
}

/**
 * Active health checks run by the controller (opt-in: `healthChecks.enabled`). An endpoint is checked when a workload
 * group (`/causeway/v1/workloads/<ns>/<name>`) of its service and namespace, whose labels
 * the endpoint carries, declares a `probe` (TCP connect, or HTTP GET expecting 2xx/3xx)
 * — the probe port is dialled on the endpoint's address.
 *
 * Results live in this controller's memory and combine with the lease (presence) and
 * the health the sidecar reports: an endpoint takes traffic unless either says
 * unhealthy. Every controller of a cluster checks the same endpoints, so their views —
 * and the export counts they compute — agree without writing check results to etcd
 * (where they would race with the sidecar's own heartbeat updates).
 */
export class HealthChecker {
  readonly #states = new Map<string, CheckState>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  readonly #log = logger('controller-health');

  readonly #catalog: CatalogCache;
  readonly #settings: HealthCheckSettings;
  readonly #metrics: ControllerMetrics;
  /** Called with the services whose endpoints changed health. */
  readonly #onChange: (services: Set<ServiceKey>) => void;

  constructor(
    catalog: CatalogCache,
    settings: HealthCheckSettings,
    metrics: ControllerMetrics,
    onChange: (services: Set<ServiceKey>) => void,
  ) {
    this.#catalog = catalog;
    this.#settings = settings;
    this.#metrics = metrics;
    this.#onChange = onChange;
  }

  start(): void {
    this.#schedule(0);
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  /** Whether the endpoint should take traffic: lease alive (it exists), not reported unhealthy, not failing checks. */
  endpointHealthy(endpoint: StoredEndpoint): boolean {
    if (endpoint.value.health === 'unhealthy') return false;
    return this.#states.get(endpoint.key)?.healthy ?? true;
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.#round().finally(() => this.#schedule(this.#settings.intervalMs));
    }, delayMs);
    this.#timer.unref();
  }

  #probesByService(): Map<ServiceKey, Array<{ labels: Record<string, string>; probe: Probe }>> {
    const result = new Map<ServiceKey, Array<{ labels: Record<string, string>; probe: Probe }>>();
    for (const { value: group } of this.#catalog.workloadGroups.values()) {
      if (!group.probe) continue;
      const key = serviceKey(group.namespace, group.service);
      const list = result.get(key) ?? [];
      list.push({ labels: group.labels, probe: group.probe });
      result.set(key, list);
    }
    return result;
  }

  async #round(): Promise<void> {
    const probes = this.#probesByService();
    const seen = new Set<string>();
    const jobs: Array<() => Promise<void>> = [];
    const changed = new Set<ServiceKey>();
    for (const [key, groups] of probes) {
      for (const endpoint of this.#catalog.endpointsOf(key).values()) {
        const match = groups.find((g) => Object.entries(g.labels).every(([k, v]) => endpoint.value.labels[k] === v));
        if (!match) continue;
        seen.add(endpoint.key);
        jobs.push(async () => {
          const ok = await this.#check(endpoint.value.address, match.probe);
          this.#metrics.healthChecks.inc({ result: ok ? 'pass' : 'fail' });
          const state = this.#states.get(endpoint.key) ?? { healthy: true, failures: 0, successes: 0 };
          if (ok) {
            state.successes++;
            state.failures = 0;
            if (!state.healthy && state.successes >= this.#settings.healthyThreshold) {
              state.healthy = true;
              changed.add(key);
              this.#log.info({ endpoint: endpoint.key }, 'endpoint passes its health check again');
            }
          } else {
            state.failures++;
            state.successes = 0;
            if (state.healthy && state.failures >= this.#settings.unhealthyThreshold) {
              state.healthy = false;
              changed.add(key);
              this.#log.warn({ endpoint: endpoint.key }, 'endpoint fails its health check; taking it out of load balancing');
            }
          }
          this.#states.set(endpoint.key, state);
        });
      }
    }
    // Bounded concurrency: 10,000 endpoints must not open 10,000 sockets at once.
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(64, jobs.length) }, async () => {
        while (next < jobs.length) await jobs[next++]!();
      }),
    );
    for (const key of this.#states.keys()) {
      if (!seen.has(key)) this.#states.delete(key);
    }
    if (changed.size > 0 && !this.#closed) this.#onChange(changed);
  }

  #check(address: string, probe: Probe): Promise<boolean> {
    const timeoutMs = this.#settings.timeoutMs;
    return new Promise((resolve) => {
      if ('tcp' in probe) {
        const socket = connect({ host: address, port: probe.tcp.port });
        socket.setTimeout(timeoutMs, () => {
          socket.destroy();
          resolve(false);
        });
        socket.once('connect', () => {
          socket.destroy();
          resolve(true);
        });
        socket.once('error', () => resolve(false));
        return;
      }
      const req = request({ host: address, port: probe.http.port, path: probe.http.path, method: 'GET', timeout: timeoutMs, headers: { 'user-agent': 'causeway-controller-health' } }, (res) => {
        res.resume();
        resolve((res.statusCode ?? 500) < 400);
      });
      req.once('timeout', () => req.destroy(new Error('timeout')));
      req.once('error', () => resolve(false));
      req.end();
    });
  }
}
