import { hostname } from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { Server } from '@grpc/grpc-js';
import type { Registry } from 'prom-client';
import { addCertificateService, certificateRefusalInterceptor, createCertificateServiceCredentials, loadIntermediateCa, type CertificateServiceHandle, type IntermediateCa, type SwappableServerCredentials } from '../ca/index.js';
import {
  Backoff,
  ControllerRegistration,
  EtcdKeys,
  ShutdownSteps,
  controllerIdentity,
  createMetricsRegistry,
  listenError,
  encodeCatalogValue,
  logger,
  startObservabilityServer,
  type ClusterConfig,
  type ObservabilityServer,
  type Readiness,
} from '../mesh/index.js';
import { Federation, HeartbeatPublisher, ensureExportStoreAuth, publishExportedCluster } from '../federation/index.js';
import { LeasedKey, MAX_TXN_OPS, type EtcdStore } from '../store/index.js';
import { MeshViewService } from '../ui/index.js';
import { CatalogCache, CatalogChanges } from './catalog-cache.js';
import { ClusterRecord, sortedAddresses } from './cluster-record.js';
import { DiscoveryService, type NodeStatus } from './discovery-service.js';
import { OperatorDnsServer } from './dns-server.js';
import { ControllerError, ControllerErrorCodes } from './errors.js';
import { connectControllerStore } from './etcd-connection.js';
import { ExportPublisher, gatewayAddresses } from './export-publisher.js';
import { ExportStoreView } from './export-store-view.js';
import { DEFAULT_HEALTH_CHECKS, HealthChecker, type HealthCheckSettings } from './health-checker.js';
import { ControllerMetrics } from './metrics.js';
import { CaDirectoryWatch } from './ca-directory-watch.js';
import { discoveryService, registrationService, type TlsIdentity } from '../api-client/index.js';
import { RegistrationService } from './registration-service.js';
import { SnapshotBuilder } from './snapshot-builder.js';

/** Lifetime of the controller's own serving certificate; renewed at half-life. */
const SERVER_CERT_TTL_SECONDS = 24 * 3600;

export interface ControllerOptions {
  /** The validated cluster config (`loadConfigFile('cluster', …)`). */
  readonly config: ClusterConfig;
  /**
   * The controller's serving identity. Default: issued from the cluster's intermediate
   * (`intermediate`, else `config.controller.caDir`) for
   * `spiffe://<td>/ns/causeway-system/sa/controller`, renewed at half-life.
   */
  readonly tls?: TlsIdentity;
  /** The cluster's intermediate CA, when the caller has it loaded already. */
  readonly intermediate?: IntermediateCa;
  /** Address written to `/causeway/v1/cluster` `controllers` (default: the gRPC host, or the host name when it is a wildcard). */
  readonly advertiseAddress?: string;
  /**
   * Host the CA's `CertificateService` on the same port (default: whenever the
   * intermediate is known, i.e. `intermediate` or `config.controller.caDir` is set).
   */
  readonly hostCa?: boolean;
  /** Adds more services to the gRPC server before it starts. */
  readonly addServices?: (server: Server, context: { intermediate: IntermediateCa | undefined; registry: Registry }) => void | Promise<void>;
  /** Serve `/healthz/ready` and `/metrics` (default true). */
  readonly observability?: boolean;
  /**
   * Active health checks by the controller (off unless `enabled`): endpoints of workload
   * groups with a `probe` are dialled from the controller. Leave off when workloads sit
   * in networks the controller cannot reach (their sidecars probe locally and report
   * health in heartbeats). Timing defaults: 5 s interval, 1 s timeout, 2 failures.
   */
  readonly healthChecks?: Partial<HealthCheckSettings> & { readonly enabled?: boolean };
  /** Prometheus registry to use (default: a fresh one labelled component=controller). */
  readonly registry?: Registry;
  /** A store other than etcd3 over `config.etcd` (tests of fault handling). */
  readonly store?: EtcdStore;
  /** How often the export store is swept for keys no controller wrote, besides start and re-lists (default 30 s). */
  readonly exportStoreSweepIntervalMs?: number;
  /**
   * Run the federation's links in this process when the config has `links` (default
   * true). Set false when `causeway federation` runs separately: only one federation may
   * write a cluster's imports.
   */
  readonly federation?: boolean;
  /** More components to run in-process, their readiness folded into the controller's. */
  readonly components?: ReadonlyArray<HostedComponent>;
  /**
   * How `config.controller.caDir` is watched for a new intermediate or trust bundle
   * (root rotation without a restart). Default: file events, settled for 500 ms, and a
   * re-read every 5 s.
   */
  readonly caReload?: { readonly settleMs?: number; readonly pollIntervalMs?: number };
}

/** Something the controller runs alongside itself, e.g. the federation's links. */
export interface HostedComponent {
  readonly name: string;
  start(): Promise<void>;
  stop(): Promise<void>;
  readiness(): Readiness;
}

/**
 * The per-cluster control plane: catalog on etcd, Registration and Discovery
 * over gRPC/mTLS on 15012, exports for peers, active health checks, operator DNS,
 * readiness and metrics. Several controllers may share one etcd.
 *
 * ```ts
 * const controller = new Controller({ config });
 * await controller.start();
 * // … controller.grpcPort, controller.readiness(), controller.nodes()
 * await controller.stop();
 * ```
 */
export class Controller {
  readonly registry: Registry;
  readonly metrics: ControllerMetrics;
  readonly #log = logger('controller');
  readonly #config: ClusterConfig;
  #store: EtcdStore | undefined;
  /** The export store's client (config with `exportStore`), besides the main etcd's. */
  #exportStore: EtcdStore | undefined;
  #exportStoreView: ExportStoreView | undefined;
  #catalog: CatalogCache | undefined;
  #discovery: DiscoveryService | undefined;
  private builder: SnapshotBuilder | undefined;
  #publisher: ExportPublisher | undefined;
  #checker: HealthChecker | undefined;
  #dns: OperatorDnsServer | undefined;
  #server: Server | undefined;
  #credentials: SwappableServerCredentials | undefined;
  #record: ClusterRecord | undefined;
  #observability: ObservabilityServer | undefined;
  #intermediate: IntermediateCa | undefined;
  #caWatch: CaDirectoryWatch | undefined;
  #renewTimer: NodeJS.Timeout | undefined;
  #boundPort = 0;
  #serving = false;
  #stopped = false;
  #advertised: { address: string; port: number } | undefined;
  #heartbeat: HeartbeatPublisher | undefined;
  readonly #hosted: HostedComponent[] = [];
  #meshView: MeshViewService | undefined;
  #hostedFederation: Federation | undefined;

  readonly #options: ControllerOptions;

  constructor(options: ControllerOptions) {
    this.#options = options;
    this.#config = options.config;
    this.registry = options.registry ?? createMetricsRegistry('controller');
    this.metrics = new ControllerMetrics(this.registry);
  }

  /** The bound gRPC port (useful with `grpcPort: 0`). */
  get grpcPort(): number {
    return this.#boundPort;
  }

  get dnsPort(): number | undefined {
    return this.#dns?.port;
  }

  get readyPort(): number | undefined {
    return this.#observability?.readyPort;
  }

  get metricsPort(): number | undefined {
    return this.#observability?.metricsPort;
  }

  /** The catalog as this controller sees it (read-only use). */
  get catalogView(): CatalogCache | undefined {
    return this.#catalog;
  }

  /** The mesh view's address when the config has a `ui:` section (ui/README.md). */
  get meshViewUrl(): string | undefined {
    return this.#meshView?.url;
  }

  /** The in-process federation (config with links), for status. */
  get federation(): Federation | undefined {
    return this.#hostedFederation;
  }

  /** Connected discovery nodes and the versions they hold. */
  nodes(): NodeStatus[] {
    return this.#discovery?.status() ?? [];
  }

  readiness(): Readiness {
    const reasons: string[] = [];
    if (!this.#catalog?.loaded) reasons.push('catalog not loaded from etcd yet');
    else if (!this.#catalog.watching) reasons.push('etcd watch not connected');
    if (!this.#serving) reasons.push('gRPC server not serving');
    if (this.#exportStoreView && !this.#exportStoreView.loaded) reasons.push('export store not loaded yet');
    const details: Record<string, unknown> = {};
    for (const c of this.#hosted) {
      const r = c.readiness();
      reasons.push(...r.reasons);
      details[c.name] = r.details ?? r.ready;
    }
    return { ready: reasons.length === 0, reasons, details };
  }

  /** Starts serving; when a step fails (a port in use, etcd refusing), what started is stopped again before the error is thrown. */
  async start(): Promise<void> {
    try {
      await this.#startServing();
    } catch (error) {
      await this.stop().catch((stopError: Error) => this.#log.warn({ err: stopError.message }, 'cleanup after a failed start failed'));
      throw error;
    }
  }

  async #startServing(): Promise<void> {
    const config = this.#config;
    const td = config.trustDomain;
    const tls = await this.#servingIdentity();
    // One etcd client for everything this process writes to its own etcd: catalog,
    // registrations, exports, heartbeat and the hosted federation's imports.
    this.#store = this.#options.store ?? connectControllerStore(config.etcd);
    const store = this.#store;
    // With an export store, what peers read lives there, written through a second client
    // (controller/README.md "The export store"); without one, in the main etcd as before.
    const exportStore = (this.#exportStore = config.exportStore ? connectControllerStore(config.exportStore) : undefined);
    const exportsStore = exportStore ?? store;
    this.#hosted.push(...(this.#options.components ?? []));
    if (config.links.length > 0 && (this.#options.federation ?? true)) {
      const federation = (this.#hostedFederation = new Federation(Federation.optionsFrom(config, { registry: this.registry, local: store, exports: exportsStore })));
      this.#hosted.push({ name: 'federation', start: () => federation.start(), stop: () => federation.stop(), readiness: () => federation.readiness() });
    }
    const catalog = (this.#catalog = new CatalogCache(store));
    catalog.on('invalid', () => this.metrics.invalidValues.inc());
    const settings = { ...DEFAULT_HEALTH_CHECKS, ...this.#options.healthChecks };
    let discovery: DiscoveryService | undefined;
    let publisher: ExportPublisher | undefined;
    const checker = (this.#checker = new HealthChecker(catalog, settings, this.metrics, (services) => {
      const changes = new CatalogChanges();
      for (const s of services) changes.services.add(s);
      discovery?.onCatalogChange(changes);
      publisher?.onCatalogChange(changes);
    }));
    const endpointHealthy = checker.endpointHealthy.bind(checker);
    const trustBundle = () => splitPem(String(this.#credentialsTls?.trustBundle ?? ''));
    const builder = (this.builder = new SnapshotBuilder(catalog, { cluster: config.cluster.name, trustDomain: td, locality: config.cluster.locality, trustBundle, endpointHealthy }));
    discovery = this.#discovery = new DiscoveryService(builder, { cluster: config.cluster.name, trustDomain: td, locality: config.cluster.locality, debounceMs: config.controller.pushDebounceMs }, this.metrics);
    const view = (this.#exportStoreView = exportStore
      ? new ExportStoreView({ store: exportStore, cluster: config.cluster.name, log: logger('controller-export-store'), onChange: (changes) => publisher?.onExportsChange(changes), sweepIntervalMs: this.#options.exportStoreSweepIntervalMs })
      : undefined);
    publisher = this.#publisher = new ExportPublisher(
      exportsStore,
      catalog,
      {
        cluster: config.cluster.name,
        locality: config.cluster.locality,
        network: config.cluster.network,
        trustDomain: td,
        debounceMs: config.controller.pushDebounceMs,
        ...(this.#options.exportStoreSweepIntervalMs ? { fullPassIntervalMs: this.#options.exportStoreSweepIntervalMs } : {}),
        endpointHealthy,
        publishCluster: (value) => publishExportedCluster(exportsStore, value),
        ...(view ? { view } : {}),
      },
      this.metrics,
    );
    const record = (this.#record = new ClusterRecord(store, { name: config.cluster.name, locality: config.cluster.locality, network: config.cluster.network, trustDomain: td }));
    let lastGateways = '';
    catalog.on('change', (changes) => {
      discovery!.onCatalogChange(changes);
      publisher!.onCatalogChange(changes);
      this.metrics.endpoints.set(catalog.endpointCount());
      this.metrics.services.set(catalog.services.size);
      if (changes.everything || changes.gateways) {
        const gateways = gatewayAddresses(catalog);
        const text = JSON.stringify(gateways);
        if (text !== lastGateways) {
          lastGateways = text;
          record.setGateways(gateways).catch((error: Error) => this.#log.warn({ err: error.message }, 'cannot update gateways in the cluster record'));
        }
      }
      if (changes.everything || changes.cluster || changes.controllers) this.#syncControllers();
    });

    if (this.#options.observability ?? true) {
      // Up first, so that /healthz/ready tells what is missing while etcd is not.
      const o = config.observability;
      this.#observability = await startObservabilityServer({ host: o.host, readyPort: o.readyPort, metricsPort: o.metricsPort, registry: this.registry, readiness: () => this.readiness() });
    }
    if (config.ui) {
      // Bound with the other listeners, read once the controller serves. Always ready for
      // the controller's readiness: a view that cannot read says so on its own page.
      const view = (this.#meshView = new MeshViewService({ config, store, registry: this.registry }));
      this.#hosted.push({ name: 'mesh view', start: async () => view.startReading(), stop: () => view.stop(), readiness: () => ({ ready: true, reasons: [] }) });
      await view.listen();
    }
    await this.#loadCatalog(catalog);
    this.#log.info({ revision: catalog.revision, services: catalog.services.size, endpoints: catalog.endpointCount() }, 'catalog loaded');

    const registration = new RegistrationService(store, catalog, { cluster: config.cluster.name, trustDomain: td, locality: config.cluster.locality, leaseTtlSeconds: config.controller.endpointLeaseTtlSeconds }, this.metrics);
    let signer: CertificateServiceHandle | undefined;
    const server = (this.#server = new Server({
      // First: it counts the CA refusals grpc-js makes before the handler (a CSR over 4 MiB).
      interceptors: [certificateRefusalInterceptor(() => signer)],
      'grpc.max_receive_message_length': 4 * 1024 * 1024,
      'grpc.max_send_message_length': -1,
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 5_000,
    }));
    server.addService(registrationService, registration.implementation());
    server.addService(discoveryService, discovery.implementation());
    if (this.#intermediate && (this.#options.hostCa ?? true)) {
      // A function: a reloaded caDir signs the next request (root rotation).
      signer = addCertificateService(server, { ca: () => this.#intermediate!, registry: this.registry, logger: logger('controller-ca') });
    }
    await this.#options.addServices?.(server, { intermediate: this.#intermediate, registry: this.registry });
    this.#credentials = createCertificateServiceCredentials(material(tls));
    const grpc = { host: config.controller.host, port: config.controller.grpcPort };
    this.#boundPort = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${bracket(grpc.host)}:${grpc.port}`, this.#credentials!.credentials, (error, port) => (error ? reject(listenError(error, grpc, { setting: 'controller.grpcPort' })) : resolve(port)));
    });
    this.#serving = true;
    if (config.controller.dns) {
      this.#dns = new OperatorDnsServer(catalog, { host: config.controller.dns.host, port: config.controller.dns.port, meshDomain: config.meshDomain, cluster: config.cluster.name, region: config.cluster.locality.region, endpointHealthy }, this.metrics);
      await this.#dns.start();
    }
    // Every listener is bound: only now does this controller publish itself (docs/architecture.md
    // "Ports": a controller that fails to start leaves nothing in /causeway/v1/cluster).
    const advertised = (this.#advertised = { address: this.#options.advertiseAddress ?? advertiseHost(config.controller.host), port: this.#boundPort });
    const registrationId = (this.#registrationId = controllerRegistrationId(advertised));
    const registrationKey = EtcdKeys.controller(registrationId);
    this.#registration = new LeasedKey({
      store,
      key: registrationKey,
      ttlSeconds: config.controller.leaseTtlSeconds,
      value: () => encodeCatalogValue(ControllerRegistration, registrationKey, { schema: 1, id: registrationId, ...advertised, registeredAt: new Date().toISOString() }),
    });
    await this.#registration.start();
    // In the record at once; from now on syncControllers() keeps it (on the registration's watch event).
    await record.addController(advertised);
    if (exportStore && view) await this.#openExportStore(exportStore, view, store);
    await publisher.start();
    this.#heartbeat = new HeartbeatPublisher({ cluster: config.cluster.name, store: exportsStore, intervalMs: config.federation.heartbeatIntervalMs });
    await this.#heartbeat.start();
    if (this.#options.healthChecks?.enabled) checker.start();
    for (const c of this.#hosted) await c.start();
    await this.#watchCaDirectory();
    this.#log.info({ grpcPort: this.#boundPort, identity: controllerIdentity(td), cluster: config.cluster.name, dnsPort: this.#dns?.port }, 'controller serving');
  }

  #credentialsTls: TlsIdentity | undefined;
  #registration: LeasedKey | undefined;
  #registrationId: string | undefined;
  /** Listed addresses without a registration, by how often this controller removed them. */
  readonly #prunedUnregistered = new Map<string, number>();

  /**
   * Liveness in the cluster record: this controller's registration back if it vanished
   * under a live lease, and `controllers` rewritten from the live registrations when they
   * differ — only once this controller sees its own, so that it never writes a view from
   * before its registration arrived. An address listed without a registration is removed;
   * one that is put back after two removals is kept up by a controller that does not
   * register (an earlier version, which re-adds itself): it stays, so that the two never
   * rewrite the record back and forth.
   */
  #syncControllers(): void {
    const catalog = this.#catalog;
    const record = this.#record;
    const registration = this.#registration;
    const registrationId = this.#registrationId;
    if (this.#stopped || !catalog?.loaded || !record || !registration || registrationId === undefined) return;
    if (!catalog.controllers.has(registrationId)) {
      registration.ensure();
      return;
    }
    const live = [...catalog.controllers.values()].map(({ value }) => ({ address: value.address, port: value.port }));
    const registered = new Set(live.map(addressText));
    const listed = catalog.cluster?.value.controllers ?? [];
    const unregistered = listed.filter((c) => !registered.has(addressText(c)));
    const kept = unregistered.filter((c) => (this.#prunedUnregistered.get(addressText(c)) ?? 0) >= 2);
    const next = sortedAddresses([...live, ...kept]);
    if (isDeepStrictEqual(next, listed)) return;
    for (const c of unregistered) {
      if (!kept.includes(c)) this.#prunedUnregistered.set(addressText(c), (this.#prunedUnregistered.get(addressText(c)) ?? 0) + 1);
    }
    if (kept.length > 0) this.#log.debug({ kept: kept.map(addressText) }, 'listed controllers without a registration (an earlier version?) left in the record');
    record.setControllers(next).catch((error: Error) => this.#log.warn({ err: error.message }, 'cannot update the controllers in the cluster record'));
  }

  /**
   * Before the first export is written there: auth on in the export store (bootstrapped
   * as root when it is off), its exports listed and watched, keys outside exports/
   * removed — waiting (unready, with backoff) for an export store that is not up yet.
   * Then, once, the exports an earlier layout left in the main etcd are removed: peers
   * no longer read them there.
   */
  async #openExportStore(exportStore: EtcdStore, view: ExportStoreView, main: EtcdStore): Promise<void> {
    await this.#untilReachable('export store', async () => {
      await ensureExportStoreAuth(exportStore, this.#log);
      await view.start();
    });
    const left = await main.list(EtcdKeys.exportsPrefix);
    if (left.entries.length === 0) return;
    for (let i = 0; i < left.entries.length; i += MAX_TXN_OPS) await main.commit(left.entries.slice(i, i + MAX_TXN_OPS).map((e) => ({ delete: e.key })));
    this.#log.info({ keys: left.entries.length }, `removed ${EtcdKeys.exportsPrefix} from the main etcd: with an export store configured, peers read the exports there`);
  }

  /** Loads the catalog, waiting (unready, with backoff) for an etcd that is not up yet. */
  async #loadCatalog(catalog: CatalogCache): Promise<void> {
    await this.#untilReachable('etcd', () => catalog.start());
  }

  /** Runs `step` until it succeeds, with backoff, warning once; a stop ends the wait with the last error. */
  async #untilReachable(what: string, step: () => Promise<void>): Promise<void> {
    const backoff = new Backoff({ initialMs: 200, maxMs: 5000, jitter: false });
    for (;;) {
      try {
        await step();
        return;
      } catch (error) {
        if (this.#stopped) throw error;
        if (backoff.attempts === 0) this.#log.warn({ err: (error as Error).message }, `${what} not reachable; retrying until it is (not ready meanwhile)`);
        await new Promise((resolve) => setTimeout(resolve, backoff.next()));
      }
    }
  }

  async #servingIdentity(): Promise<TlsIdentity> {
    if (this.#options.tls) return (this.#credentialsTls = this.#options.tls);
    this.#intermediate = this.#options.intermediate ?? (this.#config.controller.caDir ? await loadIntermediateCa(this.#config.controller.caDir) : undefined);
    if (!this.#intermediate) {
      throw new ControllerError(ControllerErrorCodes.tlsMissing, 'the controller needs its cluster intermediate CA: set controller.caDir in the cluster config (see causeway ca intermediate)');
    }
    return (this.#credentialsTls = await this.#issueServingCertificate());
  }

  async #issueServingCertificate(): Promise<TlsIdentity> {
    const ca = this.#intermediate!;
    const cert = await ca.issue({ spiffeId: controllerIdentity(this.#config.trustDomain), ttlSeconds: SERVER_CERT_TTL_SECONDS });
    const tls = { key: cert.privateKeyPem, certChain: cert.certChainPem, trustBundle: cert.trustBundlePem };
    // Renew at half-life with ±10 % jitter; open connections keep the old certificate.
    const delay = SERVER_CERT_TTL_SECONDS * 500 * (0.9 + Math.random() * 0.2);
    clearTimeout(this.#renewTimer);
    this.#renewTimer = setTimeout(() => {
      this.#renewServingCertificate().then(
        () => this.#log.info('serving certificate renewed'),
        (error: Error) => this.#log.error({ err: error.message }, 'serving certificate renewal failed'),
      );
    }, delay);
    this.#renewTimer.unref();
    this.#credentialsTls = tls;
    return tls;
  }

  /** A new serving certificate from the intermediate in effect, served to new handshakes, its bundle pushed to every node. */
  async #renewServingCertificate(): Promise<void> {
    const next = await this.#issueServingCertificate();
    this.#credentials?.update(material(next));
    this.metrics.trustBundleRoots.set(splitPem(String(next.trustBundle)).length);
    // The bundle travels in snapshots: a rotated root reaches every node.
    this.builder?.invalidateAll();
    this.#discovery?.schedulePush();
  }

  /**
   * With the intermediate from `controller.caDir`: a new intermediate or bundle written
   * there is checked and installed while the controller runs — the signer issues from
   * it, the controller's own certificate is re-issued from it, and the bundle goes to
   * every node (ca/README.md "Root rotation without downtime").
   */
  async #watchCaDirectory(): Promise<void> {
    const dir = this.#config.controller.caDir;
    this.metrics.trustBundleRoots.set(splitPem(String(this.#credentialsTls?.trustBundle ?? '')).length);
    if (this.#options.tls || this.#options.intermediate || !dir || !this.#intermediate) return;
    this.#caWatch = new CaDirectoryWatch({
      dir,
      current: this.#intermediate,
      log: logger('controller-ca-dir'),
      ...this.#options.caReload,
      install: async (ca) => {
        const before = this.#intermediate;
        this.#intermediate = ca;
        try {
          await this.#renewServingCertificate();
        } catch (error) {
          this.#intermediate = before;
          throw error;
        }
      },
      onResult: (result) => this.metrics.caReloads.inc({ result }),
    });
    await this.#caWatch.start();
  }

  /**
   * Stops serving: discovery streams end with UNAVAILABLE (nodes keep their snapshot and
   * reconnect), this controller leaves the cluster record, and etcd is closed. Endpoint
   * leases stay in etcd — sidecars heartbeat through the next controller. Every step
   * that talks to etcd is bounded (ETCD_STOP_STEP_MS), so an etcd that is gone costs
   * seconds, not the etcd client's retries; `steps` names each step while it runs (the
   * command's drain deadline logs what did not close).
   */
  async stop(steps: ShutdownSteps = new ShutdownSteps()): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#serving = false;
    clearTimeout(this.#renewTimer);
    this.#caWatch?.close();
    this.#discovery?.close();
    if (this.#server) {
      const server = this.#server;
      await steps.run('grpc server', () =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 2000);
          server.tryShutdown(() => {
            clearTimeout(timer);
            resolve();
          });
        }),
      );
    }
    for (const c of [...this.#hosted].reverse()) {
      await steps.run(c.name, () => withTimeout(c.stop(), ETCD_STOP_STEP_MS)).catch((error: Error) => this.#log.warn({ err: error.message, component: c.name }, 'component stop failed'));
    }
    this.#checker?.close();
    await steps.run('export publisher', () => withTimeout(this.#publisher?.close() ?? Promise.resolve(), ETCD_STOP_STEP_MS)).catch((error: Error) => this.#log.warn({ err: error.message }, 'export publisher did not close'));
    await steps.run('operator dns', async () => this.#dns?.close());
    // Revoked first: the registration goes at once, and no other controller's next
    // rewrite of the record puts this one back.
    await steps.run('controller registration', () => withTimeout(this.#registration?.close() ?? Promise.resolve(), ETCD_STOP_STEP_MS)).catch((error: Error) => this.#log.warn({ err: error.message }, 'cannot revoke this controller\'s registration lease (it expires within its TTL)'));
    if (this.#advertised && this.#record) {
      const record = this.#record;
      const advertised = this.#advertised;
      await steps.run('cluster record', () => withTimeout(record.removeController(advertised), ETCD_STOP_STEP_MS)).catch((error: Error) => this.#log.warn({ err: error.message }, 'cannot remove this controller from the cluster record'));
    }
    // Not revoked: a restarting controller (or another one) beats again before peers call
    // this cluster stale; with none left, the lease expires within ~3 intervals.
    await steps.run('heartbeat', () => withTimeout(this.#heartbeat?.stop({ revoke: false }) ?? Promise.resolve(), ETCD_STOP_STEP_MS)).catch(() => undefined);
    await steps.run('catalog watch', () => withTimeout(this.#catalog?.close() ?? Promise.resolve(), ETCD_STOP_STEP_MS)).catch(() => undefined);
    await steps.run('export store', async () => {
      await withTimeout(this.#exportStoreView?.close() ?? Promise.resolve(), ETCD_STOP_STEP_MS).catch(() => undefined);
      await withTimeout(this.#exportStore?.close() ?? Promise.resolve(), ETCD_STOP_STEP_MS).catch(() => undefined);
    });
    await steps.run('etcd client', async () => {
      if (!this.#options.store) await withTimeout(this.#store?.close() ?? Promise.resolve(), ETCD_STOP_STEP_MS).catch(() => undefined);
    });
    await steps.run('observability server', async () => this.#observability?.close());
    this.#log.info('controller stopped');
  }
}

/** The most one etcd step of stop() may take: a write that etcd does not answer by then will not be answered. */
const ETCD_STOP_STEP_MS = 2000;

function material(tls: TlsIdentity) {
  return { privateKeyPem: String(tls.key), certChainPem: String(tls.certChain), trustBundlePem: String(tls.trustBundle) };
}

function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((p) => `${p}\n`) ?? [];
}

function bracket(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

function advertiseHost(host: string): string {
  return host === '0.0.0.0' || host === '::' ? hostname() : host;
}

const addressText = (a: { address: string; port: number }) => `${a.address}:${a.port}`;

/** This controller's id under `/causeway/v1/controllers/`: its advertised address and port, as a key segment. */
export function controllerRegistrationId(address: { address: string; port: number }): string {
  const host = address.address.toLowerCase().replace(/[^a-z0-9.-]+/g, '-').replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '');
  return `${host || 'controller'}-${address.port}`.slice(-128).replace(/^[^a-z0-9]+/, '');
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms).unref())]);
}
