import { Registry } from 'prom-client';
import {
  EtcdKeys,
  logger as moduleLogger,
  parseEtcdKey,
  type ClusterConfig,
  type EtcdConnection,
  type FederationConfig,
  type LinkConfig,
  type Logger,
  type Readiness,
} from '../mesh/index.js';
import { MAX_TXN_OPS, type EtcdStore } from '../store/index.js';
import { connectFederationStore, connectPeerStore } from './etcd-connection.js';
import { LinksReportPublisher } from './links-report-publisher.js';
import { LocalExportClaims } from './local-exports.js';
import { FederationMetrics } from './metrics.js';
import { PeerLink, type PeerLinkStatus } from './peer-link.js';
import { PortConflictBoard, type PortConflict } from './port-conflicts.js';

export interface FederationOptions {
  /** This cluster's name (imports are written for peers of it). */
  readonly cluster: string;
  /** The local etcd: where imports and link status are written. A store the host already has, or a connection. */
  readonly local: EtcdStore | EtcdConnection;
  /**
   * Where this cluster's own exports are (for namespace sameness): its export store when
   * it has one (`exportStore`), else the local etcd (the default).
   */
  readonly exports?: EtcdStore | EtcdConnection;
  readonly links: readonly LinkConfig[];
  readonly settings: FederationConfig;
  /** The mesh's trust domain: names a peer's export store when a link goes through its gateways (default causeway.internal). */
  readonly trustDomain?: string;
  /** Metrics land here (the host's registry); a private one otherwise. */
  readonly registry?: Registry;
  readonly logger?: Logger;
  /** Opens a peer's etcd; defaults to etcd3 over the link's endpoints and TLS files. */
  readonly connectPeer?: (link: LinkConfig) => EtcdStore;
}

export interface FederationStatus {
  readonly cluster: string;
  readonly ready: boolean;
  readonly links: PeerLinkStatus[];
  readonly conflicts: PortConflict[];
}

/**
 * The federation service of one cluster: one {@link PeerLink} per configured link, a
 * shared port-conflict board, metrics, and a readiness the controller can embed. Run it
 * inside the controller (`new Federation(Federation.optionsFrom(config)).start()`) or
 * standalone with `causeway federation`.
 */
export class Federation {
  readonly #o: FederationOptions;
  readonly #log: Logger;
  readonly #local: EtcdStore;
  readonly #ownsLocal: boolean;
  readonly #exports: EtcdStore;
  readonly #ownsExports: boolean;
  readonly #peerStores: EtcdStore[] = [];
  readonly #links = new Map<string, PeerLink>();
  readonly #conflicts = new PortConflictBoard();
  readonly metrics: FederationMetrics;
  #localExports: LocalExportClaims | undefined;
  #report: LinksReportPublisher | undefined;
  #stopping: Promise<void> | undefined;
  #started = false;
  /** Set once every link exists: until then readiness has no link to wait for and must not say ready. */
  #linksCreated = false;

  constructor(options: FederationOptions) {
    this.#o = options;
    this.#log = options.logger ?? moduleLogger('federation', { cluster: options.cluster });
    this.#ownsLocal = !('list' in options.local);
    this.#local = 'list' in options.local ? options.local : connectFederationStore(options.local);
    const exports = options.exports ?? this.#local;
    this.#ownsExports = !('list' in exports);
    this.#exports = 'list' in exports ? exports : connectFederationStore(exports);
    this.metrics = new FederationMetrics(options.registry ?? new Registry());
  }

  /** Options for a cluster config as `causeway federation` and the controller read it. */
  static optionsFrom(config: ClusterConfig, extra: Partial<Pick<FederationOptions, 'registry' | 'logger' | 'local' | 'exports'>> = {}): FederationOptions {
    return {
      cluster: config.cluster.name,
      local: extra.local ?? config.etcd,
      links: config.links,
      settings: config.federation,
      trustDomain: config.trustDomain,
      ...(config.exportStore ? { exports: config.exportStore } : {}),
      ...extra,
    };
  }

  /** Loads earlier state, removes imports of peers no longer linked, and starts every link. */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    await this.#removeUnlinkedPeers();
    for (const link of this.#o.links) {
      if (link.peer === this.#o.cluster) {
        this.#log.warn({ peer: link.peer }, 'ignoring a link to this cluster itself');
        continue;
      }
      const peerStore = this.#o.connectPeer ? this.#o.connectPeer(link) : connectPeerStore(link, this.#o.trustDomain ?? 'causeway.internal');
      this.#peerStores.push(peerStore);
      const peerLink = new PeerLink({
        peer: link.peer,
        peerStore,
        localStore: this.#local,
        timings: this.#o.settings,
        conflicts: this.#conflicts,
        onConflictsChanged: (clusters, service) => this.#conflictsChanged(clusters, service, link.peer),
        metrics: this.metrics,
        log: this.#log.child({ peer: link.peer }),
        cluster: this.#o.cluster,
        reachedVia: link.gateways ? `gateway${link.gateways.length === 1 ? '' : 's'} ${link.gateways.join(', ')}` : link.etcd ? `etcd ${link.etcd.endpoints.join(', ')}` : undefined,
      });
      this.#links.set(link.peer, peerLink);
    }
    this.#linksCreated = true;
    for (const link of this.#links.values()) await link.load();
    this.#localExports = new LocalExportClaims({
      cluster: this.#o.cluster,
      store: this.#exports,
      conflicts: this.#conflicts,
      onConflictsChanged: (clusters, service) => this.#conflictsChanged(clusters, service, this.#o.cluster),
      log: this.#log.child({ peer: this.#o.cluster }),
    });
    await this.#localExports.start();
    for (const link of this.#links.values()) link.start();
    this.#report = new LinksReportPublisher({
      cluster: this.#o.cluster,
      store: this.#exports,
      links: () => this.#linkStatuses(),
      intervalMs: this.#o.settings.heartbeatIntervalMs,
      metrics: this.metrics,
      log: this.#log,
    });
    this.#report.start();
    this.#log.info({ links: [...this.#links.keys()] }, 'federation started');
  }

  /** Re-renders the imports whose conflict changed, except on the link that caused it (it already does). */
  #conflictsChanged(clusters: readonly string[], serviceKey: string, cause: string): void {
    for (const cluster of clusters) if (cluster !== cause) this.#links.get(cluster)?.markDirty(serviceKey);
  }

  /** Stops the links, publishes them down, closes the stores it opened. A second call waits for the first. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    this.#localExports?.stop();
    await this.#report?.pause();
    await Promise.all([...this.#links.values()].map((l) => l.stop()));
    // Peers see this cluster's links go down now, not only once the report has grown old.
    await this.#report?.stop(() => this.#linkStatuses());
    await Promise.all(this.#peerStores.map((store) => store.close()));
    if (this.#ownsLocal) await this.#local.close();
    if (this.#ownsExports) await this.#exports.close();
  }

  /** Ready once every link finished its initial sync or passed `initialSyncTimeout`. */
  readiness(): Readiness {
    const reasons: string[] = [];
    const links: Record<string, string> = {};
    for (const link of this.#links.values()) {
      links[link.peer] = link.initialSync;
      if (link.initialSync === 'pending') reasons.push(`link ${link.peer}: initial sync pending`);
    }
    if (!this.#started) reasons.push('federation not started');
    else if (!this.#linksCreated) reasons.push('federation starting: links not created yet');
    return { ready: reasons.length === 0, reasons, details: { initialSync: links } };
  }

  /** Resolves when {@link readiness} turns ready (at most `initialSyncTimeout` after start). */
  async whenReady(): Promise<Readiness> {
    await Promise.all([...this.#links.values()].map((l) => l.whenInitialSyncSettled()));
    return this.readiness();
  }

  status(): FederationStatus {
    return {
      cluster: this.#o.cluster,
      ready: this.readiness().ready,
      links: this.#linkStatuses(),
      conflicts: this.#conflicts.conflicts(),
    };
  }

  #linkStatuses(): PeerLinkStatus[] {
    return [...this.#links.values()].map((l) => l.status());
  }

  async #removeUnlinkedPeers(): Promise<void> {
    const linked = new Set(this.#o.links.map((l) => l.peer));
    const listing = await this.#local.list(EtcdKeys.importsPrefix);
    const orphans: string[] = [];
    for (const entry of listing.entries) {
      let peer: string | undefined;
      try {
        const key = parseEtcdKey(entry.key);
        peer = key.kind === 'imported-service' || key.kind === 'link-status' || key.kind === 'peer-reported-links' ? key.peer : undefined;
      } catch {
        peer = undefined;
      }
      if (peer === undefined || !linked.has(peer)) orphans.push(entry.key);
    }
    if (orphans.length === 0) return;
    this.#log.info({ keys: orphans.length }, 'removing imports of peers that are no longer linked');
    for (let i = 0; i < orphans.length; i += MAX_TXN_OPS) {
      await this.#local.commit(orphans.slice(i, i + MAX_TXN_OPS).map((key) => ({ delete: key })));
    }
  }
}
