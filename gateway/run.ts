import cluster from 'node:cluster';
import { hostname } from 'node:os';
import { AggregatorRegistry, Registry, collectDefaultMetrics } from 'prom-client';
import {
  ListenError,
  listenError,
  logger as moduleLogger,
  startObservabilityServer,
  type ClusterConfig,
  type GatewayConfig,
  type Logger,
  type ObservabilityConfig,
  type ObservabilityServer,
  type Readiness,
} from '../mesh/index.js';
import { Etcd3Store, type EtcdStore } from '../store/index.js';
import { CatalogRouteSource, GatewayRegistration, exportStoreTargets } from './catalog-routes.js';
import { GatewayError, GatewayErrorCodes } from './errors.js';
import type { TargetAddress } from './route-table.js';
import { loadRoutesFile } from './routes-file.js';
import { SniGateway } from './sni-gateway.js';

/**
 * Runs a complete gateway process: listener, route source (etcd catalog or routes file),
 * registration, `/healthz/ready` and `/metrics`, and graceful drain. With `workers` > 1
 * the primary forks that many listener processes sharing the port with SO_REUSEPORT,
 * serves health and aggregated metrics, and owns the etcd registration.
 */
export interface RunGatewayOptions {
  /** The cluster config: etcd catalog routing, gateway and observability settings. */
  readonly cluster?: ClusterConfig;
  /** Static routes file, instead of (or without) a cluster config. */
  readonly routesFile?: string;
  /** Overrides of the config's gateway section (e.g. `port` from the command line). */
  readonly gateway?: Partial<GatewayConfig>;
  readonly observability?: Partial<ObservabilityConfig>;
  /** Listener processes; 1 runs everything in this process. */
  readonly workers?: number;
  /** `/causeway/v1/gateways/<id>`; defaults to `<hostname>-<port>`. */
  readonly id?: string;
  /** Controller gRPC addresses when the catalog lists none. */
  readonly controllers?: readonly TargetAddress[];
  readonly logger?: Logger;
}

export interface RunningGateway {
  readonly port: number;
  readonly readyPort: number;
  readonly metricsPort: number;
  /** Resolves when the gateway has drained and stopped. */
  readonly stopped: Promise<void>;
  /** Deregisters, drains (up to drainTimeoutMs) and stops. */
  stop(): Promise<void>;
}

const WORKER_ENV = 'CAUSEWAY_GATEWAY_WORKER_PORT';

interface WorkerMessage {
  readonly causewayGateway: 'ready' | 'drained' | 'failed';
  readonly message?: string;
  /** A listener that could not bind, rebuilt as the same ListenError in the primary. */
  readonly listen?: { readonly setting: string; readonly flag?: string; readonly host: string; readonly port: number; readonly errno: string };
}

/** True inside a listener process forked by {@link runGateway}. */
export function isGatewayWorker(): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] !== undefined;
}

function gatewaySettings(options: RunGatewayOptions): Partial<GatewayConfig> {
  return { ...(options.cluster?.gateway ?? {}), ...(options.gateway ?? {}) };
}

function defaultId(port: number): string {
  const host = hostname().toLowerCase().replace(/[^a-z0-9.-]+/g, '-').replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '') || 'gateway';
  return `${host.slice(0, 100)}-${port}`;
}

/** The process's one etcd client, when it reads the catalog or registers (a cluster config and no routes file). */
function connectGatewayStore(options: RunGatewayOptions): EtcdStore | undefined {
  return options.cluster && !options.routesFile ? new Etcd3Store(options.cluster.etcd) : undefined;
}

/** Starts the route source and hands its tables to `gateway`; returns a closer. */
async function startRouteSource(options: RunGatewayOptions, store: EtcdStore | undefined, gateway: SniGateway, log: Logger): Promise<() => Promise<void>> {
  if (options.routesFile) {
    gateway.setRoutes(loadRoutesFile(options.routesFile));
    return async () => undefined;
  }
  const config = options.cluster;
  if (!config || !store) throw new GatewayError(GatewayErrorCodes.routesInvalid, 'give the gateway a route source: a cluster config (--config) or a routes file (--routes)');
  const source = new CatalogRouteSource({
    store,
    cluster: config.cluster.name,
    trustDomain: config.trustDomain,
    controllers: options.controllers,
    exportStore: exportStoreTargets(config),
    onRoutes: (spec) => gateway.setRoutes(spec),
    logger: log.child({ module: 'gateway-catalog' }),
  });
  try {
    await source.start();
  } catch (error) {
    await source.close();
    // The store's error names the endpoints, the cause and the setting to check.
    throw new GatewayError(GatewayErrorCodes.catalogUnavailable, `cannot read the catalog: ${(error as Error).message}`, { cause: error });
  }
  return () => source.close();
}

async function startRegistration(options: RunGatewayOptions, store: EtcdStore | undefined, port: number, log: Logger): Promise<() => Promise<void>> {
  const config = options.cluster;
  if (!config || !store) return async () => undefined;
  const settings = gatewaySettings(options);
  const address = settings.advertiseAddress ?? (settings.host && settings.host !== '0.0.0.0' && settings.host !== '::' ? settings.host : '127.0.0.1');
  const registration = new GatewayRegistration({
    store,
    gateway: { id: options.id ?? defaultId(port), cluster: config.cluster.name, network: config.cluster.network, locality: config.cluster.locality, address, port },
    logger: log.child({ module: 'gateway-registration' }),
  });
  await registration.start();
  log.info({ key: registration.key, address, port }, 'gateway registered');
  return () => registration.close();
}

function observabilitySettings(options: RunGatewayOptions): ObservabilityConfig {
  return { host: '0.0.0.0', readyPort: 15021, metricsPort: 15090, ...(options.cluster?.observability ?? {}), ...(options.observability ?? {}) };
}

/** Runs the gateway (primary or single process). In a forked worker, use {@link runGatewayWorker}. */
export async function runGateway(options: RunGatewayOptions): Promise<RunningGateway> {
  const log = options.logger ?? moduleLogger('gateway');
  const workers = options.workers ?? 1;
  if (workers > 1) return runPrimary(options, workers, log);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  const gateway = new SniGateway({ ...gatewaySettings(options), registry, logger: log });
  // One etcd client for the route source and the registration.
  const store = connectGatewayStore(options);
  const closeStore = async () => store?.close();
  const closeSource = await startRouteSource(options, store, gateway, log).catch(async (error: unknown) => {
    await closeStore();
    throw error;
  });
  // Every listener is bound before the gateway registers: one that cannot bind fails
  // start-up and leaves nothing under /causeway/v1/gateways/ (docs/architecture.md "Ports").
  const undo: Array<() => Promise<void>> = [closeStore, closeSource];
  const unwind = async (error: unknown): Promise<never> => {
    for (const step of undo.reverse()) await step().catch(() => undefined);
    throw error;
  };
  const { port } = await gateway.listen().catch(unwind);
  undo.push(() => gateway.close());
  const obs = observabilitySettings(options);
  const observability = await startObservabilityServer({ host: obs.host, readyPort: obs.readyPort, metricsPort: obs.metricsPort, registry, readiness: () => gateway.readiness() }).catch(unwind);
  undo.push(() => observability.close());
  const closeRegistration = await startRegistration(options, store, port, log).catch(unwind);
  log.info({ port, readyPort: observability.readyPort, metricsPort: observability.metricsPort }, 'gateway listening');
  return stoppable(port, observability, async () => {
    await closeRegistration();
    const { forced } = await gateway.drain();
    if (forced > 0) log.warn({ forced }, 'drain timeout: closed connections still open');
    await closeSource();
    await closeStore();
  });
}

function stoppable(port: number, observability: ObservabilityServer, shutdown: () => Promise<void>): RunningGateway {
  let stopping: Promise<void> | undefined;
  let resolveStopped!: () => void;
  const stopped = new Promise<void>((resolve) => (resolveStopped = resolve));
  return {
    port,
    readyPort: observability.readyPort,
    metricsPort: observability.metricsPort,
    stopped,
    stop() {
      stopping ??= shutdown()
        .finally(() => observability.close())
        .finally(resolveStopped);
      return stopping;
    },
  };
}

async function pickPort(host: string): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

class ClusterRegistry extends AggregatorRegistry<'text/plain; version=0.0.4; charset=utf-8'> {
  override metrics(): Promise<string> {
    return this.clusterMetrics();
  }
}

/**
 * Workers share the data port with SO_REUSEPORT, which would let a second gateway (same
 * user) bind the same port too and silently take half of its connections. The primary
 * first holds a Linux abstract socket named after the address — per network namespace,
 * like the port itself, and gone when the process dies — so a second gateway on the same
 * address and port fails start-up naming gateway.port instead.
 */
async function claimSharedPort(host: string, port: number): Promise<() => Promise<void>> {
  const { createServer } = await import('node:net');
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) => reject(listenError(error, { host, port }, { setting: 'gateway.port', flag: '--port' })));
    server.listen({ path: `\0causeway/gateway/${host}:${port}` }, () => resolve());
  });
  return () => new Promise<void>((resolve) => server.close(() => resolve()));
}

async function runPrimary(options: RunGatewayOptions, workers: number, log: Logger): Promise<RunningGateway> {
  const settings = gatewaySettings(options);
  const port = settings.port && settings.port > 0 ? settings.port : await pickPort(settings.host ?? '0.0.0.0');
  const releasePort = await claimSharedPort(settings.host ?? '0.0.0.0', port);
  const ready = new Set<number>();
  const forked = new Set<import('node:cluster').Worker>();
  let stopping = false;
  const started = new Promise<void>((resolve, reject) => {
    for (let i = 0; i < workers; i++) {
      const worker = cluster.fork({ [WORKER_ENV]: String(port) });
      forked.add(worker);
      worker.on('message', (message: WorkerMessage) => {
        if (message?.causewayGateway === 'ready') {
          ready.add(worker.id);
          if (ready.size === workers) resolve();
        } else if (message?.causewayGateway === 'failed') {
          reject(
            message.listen
              ? new ListenError(message.listen)
              : new GatewayError(GatewayErrorCodes.workerFailed, `gateway worker failed to start: ${message.message ?? 'unknown error'}`),
          );
        }
      });
      worker.on('exit', (code, signal) => {
        forked.delete(worker);
        ready.delete(worker.id);
        if (!stopping) {
          log.error({ worker: worker.id, code, signal }, 'gateway worker exited');
          reject(new GatewayError(GatewayErrorCodes.workerFailed, `gateway worker exited (${signal ?? code}) before it was ready`));
        }
      });
    }
  });
  const killAll = () => {
    stopping = true;
    for (const worker of forked) worker.kill('SIGKILL');
    void releasePort();
  };
  await started.catch((error: unknown) => {
    killAll();
    throw error;
  });
  const registry = new ClusterRegistry();
  const readiness = (): Readiness => {
    const reasons = ready.size === workers && !stopping ? [] : stopping ? ['draining'] : [`${workers - ready.size} of ${workers} workers not ready`];
    return { ready: reasons.length === 0, reasons, details: { workers, ready: ready.size } };
  };
  const obs = observabilitySettings(options);
  // Registered only once every listener is bound (see runGateway).
  const observability = await startObservabilityServer({ host: obs.host, readyPort: obs.readyPort, metricsPort: obs.metricsPort, registry, readiness }).catch((error: unknown) => {
    killAll();
    throw error;
  });
  const store = connectGatewayStore(options);
  const closeRegistration = await startRegistration(options, store, port, log).catch(async (error: unknown) => {
    killAll();
    await store?.close();
    await observability.close();
    throw error;
  });
  log.info({ port, workers, readyPort: observability.readyPort, metricsPort: observability.metricsPort }, 'gateway listening');
  return stoppable(port, observability, async () => {
    stopping = true;
    await closeRegistration();
    await store?.close();
    const exits = [...forked].map((worker) => new Promise<void>((resolve) => worker.once('exit', () => resolve())));
    for (const worker of forked) worker.send({ causewayGateway: 'drain' });
    await Promise.all(exits);
    await releasePort();
  });
}

/** The body of a forked listener process: serve until the primary says drain. */
export async function runGatewayWorker(options: RunGatewayOptions): Promise<void> {
  const log = (options.logger ?? moduleLogger('gateway')).child({ worker: cluster.worker?.id });
  const port = Number(process.env[WORKER_ENV]);
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 100 });
  AggregatorRegistry.setRegistries([registry]);
  // prom-client installs a worker's answer to the primary's metrics requests only when an AggregatorRegistry is constructed.
  new AggregatorRegistry();
  const gateway = new SniGateway({ ...gatewaySettings(options), port, reusePort: true, registry, logger: log });
  let closeSource: () => Promise<void>;
  try {
    closeSource = await startRouteSource(options, connectGatewayStore(options), gateway, log);
    await gateway.listen();
  } catch (error) {
    const listen = error instanceof ListenError ? { setting: error.setting, ...(error.flag ? { flag: error.flag } : {}), host: error.host, port: error.port, errno: error.errno } : undefined;
    const failed: WorkerMessage = { causewayGateway: 'failed', message: (error as Error).message, ...(listen ? { listen } : {}) };
    // Exit only once the primary has the reason, not just the exit code.
    await new Promise<void>((resolve) => (process.send ? process.send(failed, undefined, {}, () => resolve()) : resolve()));
    process.exit(1);
  }
  process.on('message', (message: { causewayGateway?: string }) => {
    if (message?.causewayGateway !== 'drain') return;
    void gateway
      .drain()
      .then(({ forced }) => {
        if (forced > 0) log.warn({ forced }, 'drain timeout: closed connections still open');
        return closeSource();
      })
      .finally(() => process.exit(0));
  });
  // The primary handles signals; a worker only drains when told to. SIGHUP too: a closed
  // terminal sends it to every process of the group, and its default would kill the worker
  // with its connections undrained. A worker whose primary is gone exits with the IPC channel.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => undefined);
  process.send?.({ causewayGateway: 'ready' } satisfies WorkerMessage);
}
