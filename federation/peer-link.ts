import { createHash } from 'node:crypto';
import {
  Backoff,
  CATALOG_SCHEMA_VERSION,
  EtcdKeys,
  ExportedCluster,
  ExportedService,
  Heartbeat,
  ImportedService,
  LinkStatus,
  PeerReportedLinks,
  decodeCatalogValue,
  encodeCatalogValue,
  parseEtcdKey,
  type GatewayAddress,
  type LinkState,
  type Locality,
  type Logger,
} from '../mesh/index.js';
import { FederationError, FederationErrorCodes } from './errors.js';
import { HeartbeatFreshness } from './heartbeat-freshness.js';
import { decodeReportedLinks } from './reported-links.js';
import { MAX_TXN_OPS, type EtcdStore, type ChangeBatch, type PrefixWatch, type StoredValue, type WriteOp } from '../store/index.js';
import type { FederationMetrics } from './metrics.js';
import type { PortConflictBoard } from './port-conflicts.js';

export interface LinkTimings {
  readonly staleAfterMs: number;
  readonly expireAfterMs: number;
  readonly initialSyncTimeoutMs: number;
  /** The peer refreshes its heartbeat this often; also our status refresh and stream probe period. */
  readonly heartbeatIntervalMs: number;
}

export interface PeerLinkOptions {
  readonly peer: string;
  readonly peerStore: EtcdStore;
  readonly localStore: EtcdStore;
  readonly timings: LinkTimings;
  readonly conflicts: PortConflictBoard;
  /** Called when this link's exports changed which clusters are in conflict for `service` (`<ns>/<name>`). */
  readonly onConflictsChanged: (clusters: readonly string[], service: string) => void;
  readonly metrics: FederationMetrics;
  readonly log: Logger;
  /** This cluster's name, for what a refused link tells the operator to do. */
  readonly cluster?: string;
  /** How the link reaches the peer, e.g. `gateways 10.0.0.7:15443, 10.0.0.8:15443`, for the same message. */
  readonly reachedVia?: string;
}

/** A link's live status: the persisted {@link LinkStatus} plus what only the running process knows. */
export interface PeerLinkStatus extends LinkStatus {
  readonly connected: boolean;
  /** Age of the last heartbeat seen, or since the link started when none was ever seen. */
  readonly heartbeatAgeMs: number;
  readonly importsStale: number;
  readonly importsExpired: number;
  readonly eventsApplied: number;
  readonly resyncs: number;
}

type Freshness = 'fresh' | 'stale' | 'expired';
type ResyncReason = 'initial' | 'compacted' | 'peer-reset';

interface PeerExport {
  readonly value: ExportedService;
  readonly modRevision: string;
}

interface PeerPlacement {
  readonly locality: Locality;
  readonly network: string;
  readonly gateways: GatewayAddress[];
}

const SERVICE_KEY = (ns: string, name: string) => `${ns}/${name}`;
/** Equal for equal import JSON: what {@link PeerLink} keeps of each import it wrote. */
const fingerprint = (json: string) => createHash('sha256').update(json).digest('base64');
const MESH_NAME = (serviceKey: string) => serviceKey.split('/').reverse().join('.');
const SERVICE_KEY_OF = (meshName: string) => meshName.split('.').reverse().join('/');

/**
 * One federation link: mirrors a peer's `/causeway/v1/exports/` into this cluster's
 * `/causeway/v1/imports/<peer>/`. Watch-based; a broken stream resumes from the last
 * applied revision, a compacted one triggers a full re-list that deletes what vanished.
 * The peer's heartbeat decides freshness: stale imports stay but carry `stale: true`;
 * expired ones are removed; both come back on their own when the heartbeat does.
 */
export class PeerLink {
  readonly peer: string;
  readonly #o: PeerLinkOptions;
  readonly #log: Logger;
  readonly #startedAtMs = Date.now();

  #exports = new Map<string, PeerExport>();
  #placement: PeerPlacement | undefined;
  #heartbeatAtMs: number | undefined;
  /** The peer's heartbeat sequence; created by {@link load} with the last advance an earlier run saw. */
  #heartbeats = new HeartbeatFreshness();
  #appliedRevision = '0';
  #initialSync: LinkStatus['initialSync'] = 'pending';
  #syncedOnce = false;
  #connected = false;
  #syncing = false;
  #lastError: string | undefined;
  /** Set while the peer refuses this link's credentials (permission denied, unknown user, certificate refused). */
  #refusedBecause: string | undefined;
  /** Why the last write to the local etcd failed; undefined once one succeeds. */
  #localStoreError: string | undefined;
  #freshness: Freshness = 'fresh';
  #lastSyncLagMs: number | undefined;
  #importsExpired = 0;
  #eventsApplied = 0;
  #resyncs = 0;
  #lastStatusWriteMs = 0;
  #lastStreamDataMs = 0;
  #lastAccessCheckMs = Date.now();
  #checkingAccess = false;

  /**
   * What this link has in the local etcd: service key → fingerprint of the import JSON
   * (not the JSON itself, which with 10,000 imports would be ~9 MB held only to compare).
   */
  readonly #written = new Map<string, string>();
  readonly #dirty = new Set<string>();
  #chain: Promise<void> = Promise.resolve();
  #watch: PrefixWatch | undefined;
  #stopped = false;
  #ticker: NodeJS.Timeout | undefined;
  #initialSyncTimer: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  readonly #syncWaiters = new Set<() => void>();
  /** Ends the current watch (with the error that made the loop retry). */
  #breakWatch: ((error: Error) => void) | undefined;
  /** When the watch batches waiting for the next flush arrived (for sync lag). */
  readonly #pendingReceivedAtMs: number[] = [];
  #flushQueued = false;
  /** The last status written, without its updatedAt. */
  #lastStatusSent = '';
  /** The peer's last valid `_links` report (never replaced by an invalid one), and whether the local etcd lacks it. */
  #reported: PeerReportedLinks | undefined;
  #reportedUnwritten = false;

  constructor(options: PeerLinkOptions) {
    this.peer = options.peer;
    this.#o = options;
    this.#log = options.log;
  }

  /** Loads what an earlier run left in the local etcd (call for every link before starting any). */
  async load(): Promise<void> {
    await this.#loadLocalState();
  }

  /** Starts mirroring in the background. */
  start(): void {
    this.#initialSyncTimer = setTimeout(() => {
      if (this.#initialSync === 'pending') {
        this.#initialSync = 'timed-out';
        this.#log.warn({ timeoutMs: this.#o.timings.initialSyncTimeoutMs }, 'initial sync did not finish in time; reporting ready without it');
        this.#notifySync();
        this.#requestFlush();
      }
    }, this.#o.timings.initialSyncTimeoutMs);
    const tickMs = Math.max(50, Math.min(1000, Math.floor(Math.min(this.#o.timings.staleAfterMs, this.#o.timings.heartbeatIntervalMs) / 5)));
    this.#ticker = setInterval(() => this.#tick(), tickMs);
    this.#tick(); // an old heartbeat from the last run makes the link stale before it writes anything
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#ticker);
    clearTimeout(this.#initialSyncTimer);
    this.#breakWatch?.(new Error('stopped'));
    this.#wake?.();
    await this.#loop;
    await this.#chain;
    this.#connected = false;
    try {
      await this.#writeStatus(true);
    } catch (error) {
      this.#log.debug({ err: error }, 'could not record the stopped state');
    }
  }

  /** Resolves once the initial sync is done or timed out. */
  whenInitialSyncSettled(): Promise<void> {
    if (this.#initialSync !== 'pending') return Promise.resolve();
    return new Promise((resolve) => this.#syncWaiters.add(resolve));
  }

  get initialSync(): LinkStatus['initialSync'] {
    return this.#initialSync;
  }

  /** Re-renders imports of `serviceKey` (`<ns>/<name>`), e.g. after another link changed its conflict. */
  markDirty(serviceKey: string): void {
    this.#dirty.add(serviceKey);
    if (this.#loop) this.#requestFlush();
  }

  status(): PeerLinkStatus {
    const now = Date.now();
    const heartbeatAgeMs = Math.max(0, now - (this.#heartbeatAtMs ?? this.#startedAtMs));
    // Freshness is per link, so either every written import is stale or none is.
    const importsStale = this.#freshness === 'stale' ? this.#written.size : 0;
    const conflicts = this.#o.conflicts.losingServices(this.peer).filter((service) => this.#written.has(SERVICE_KEY_OF(service)));
    return {
      schema: CATALOG_SCHEMA_VERSION,
      peer: this.peer,
      state: this.#state(),
      initialSync: this.#initialSync,
      appliedRevision: this.#appliedRevision,
      ...(this.#heartbeatAtMs !== undefined ? { lastHeartbeatAt: new Date(this.#heartbeatAtMs).toISOString() } : {}),
      ...(this.#lastSyncLagMs !== undefined ? { lastSyncLagMs: this.#lastSyncLagMs } : {}),
      imports: this.#written.size,
      conflicts,
      ...(this.#message() ? { message: this.#message() } : {}),
      updatedAt: new Date(now).toISOString(),
      connected: this.#connected,
      heartbeatAgeMs,
      importsStale,
      importsExpired: this.#importsExpired,
      eventsApplied: this.#eventsApplied,
      resyncs: this.#resyncs,
    };
  }

  #state(): LinkState {
    // First: while imports cannot be written, nothing the link knows reaches this cluster.
    if (this.#localStoreError !== undefined && !this.#stopped) return 'local-store-down';
    // Before staleness: a refused link goes stale too, but what to do about it is to fix the credentials.
    if (this.#refusedBecause !== undefined && !this.#connected && !this.#stopped) return 'unauthorized';
    if (this.#freshness === 'expired') return 'expired';
    if (this.#freshness === 'stale') return 'stale';
    if (this.#stopped) return 'down';
    if (!this.#connected) return this.#lastError ? 'down' : 'connecting';
    return this.#syncing || !this.#syncedOnce ? 'syncing' : 'synced';
  }

  #message(): string | undefined {
    const parts: string[] = [];
    if (this.#localStoreError !== undefined && !this.#stopped) parts.push(`imports cannot be written: ${this.#localStoreError}`);
    if (this.#stopped) parts.push('federation stopped: this status is no longer updated');
    else if (!this.#connected && this.#refusedBecause !== undefined) {
      const via = this.#o.reachedVia ? ` (through ${this.#o.reachedVia})` : '';
      const grant = `causeway federation grant --peer ${this.#o.cluster ?? '<this cluster>'}`;
      parts.push(`${this.peer} refuses this cluster's credentials${via}: ${this.#refusedBecause}; ask ${this.peer} to re-run \`${grant}\` and put the new link.yaml's tls files in this link`);
    } else if (!this.#connected && this.#lastError) parts.push(`link to ${this.peer} broken: ${this.#lastError}`);
    if (this.#freshness !== 'fresh') {
      const age = Math.round((Date.now() - (this.#heartbeatAtMs ?? this.#startedAtMs)) / 1000);
      parts.push(
        this.#freshness === 'stale'
          ? `no heartbeat from ${this.peer} for ${age}s (staleAfter ${this.#o.timings.staleAfterMs / 1000}s): imports flagged stale`
          : `no heartbeat from ${this.peer} for ${age}s (expireAfter ${this.#o.timings.expireAfterMs / 1000}s): imports removed`,
      );
    }
    if (this.#syncedOnce && !this.#placement) parts.push(`${this.peer} has not published ${EtcdKeys.exportedCluster}; nothing can be imported`);
    return parts.length > 0 ? parts.join('; ') : undefined;
  }

  // ---- the mirroring loop ------------------------------------------------------------

  async #run(): Promise<void> {
    let needFullSync: ResyncReason | undefined = 'initial';
    let resuming = false;
    const backoff = new Backoff({ initialMs: 100, maxMs: Math.max(1000, this.#o.timings.heartbeatIntervalMs) });
    while (!this.#stopped) {
      try {
        if (resuming && !needFullSync) {
          // A peer etcd rebuilt from scratch restarts its revisions: resuming at our old
          // revision would wait for a future that means something else. Re-list instead.
          const { revision } = await this.#o.peerStore.list(EtcdKeys.heartbeat);
          if (BigInt(revision) < BigInt(this.#appliedRevision)) {
            this.#log.warn({ appliedRevision: this.#appliedRevision, peerRevision: revision }, 'peer etcd revision went backwards (rebuilt?); re-listing');
            needFullSync = 'peer-reset';
          }
        }
        if (needFullSync) {
          await this.#fullSync(needFullSync);
          needFullSync = undefined;
        }
        resuming = true;
        backoff.reset();
        const ending = await this.#watchUntilOver();
        if (ending === 'compacted') needFullSync = 'compacted';
      } catch (error) {
        if (this.#stopped) break;
        const message = (error as Error).message;
        // One warning per outage; the retries' errors (which vary) only at debug.
        if (this.#connected || this.#lastError === undefined) this.#log.warn({ err: error }, 'link to peer broken; retrying');
        else this.#log.debug({ err: error }, 'peer still unreachable');
        const refused = error instanceof FederationError && error.code === FederationErrorCodes.etcdPermissionDenied;
        if (refused && this.#refusedBecause === undefined) this.#log.error({ err: error, via: this.#o.reachedVia }, 'the peer refuses this link\'s credentials (unauthorized); ask it to re-run federation grant');
        this.#refusedBecause = refused ? message : undefined;
        this.#connected = false;
        this.#syncing = false;
        // The store's error names the peer's endpoints, the setting and the cause (etcd3's
        // own "circuit breaker" refusals already translated into the failure behind them).
        this.#lastError = message;
        this.#requestFlush();
        await this.#sleep(backoff.next());
      }
    }
  }

  async #sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
  }

  async #fullSync(reason: ResyncReason): Promise<void> {
    this.#syncing = true;
    const listStartMs = Date.now();
    const listing = await this.#o.peerStore.list(EtcdKeys.exportsPrefix);
    const receivedAtMs = Date.now();
    this.#connected = true;
    this.#lastError = undefined;
    this.#refusedBecause = undefined;
    if (this.#stopped) return;
    await this.#serialised(async () => {
      this.#resyncs += 1;
      this.#o.metrics.resyncs.inc({ peer: this.peer, reason: this.#syncedOnce ? reason : 'initial' });
      const seen = new Set<string>();
      let placement: PeerPlacement | undefined;
      for (const entry of listing.entries) {
        const what = this.#applyEntry(entry);
        if (what?.kind === 'service') seen.add(what.key);
        if (what?.kind === 'placement') placement = what.placement;
      }
      for (const key of [...this.#exports.keys()]) if (!seen.has(key)) this.#removeExport(key);
      if (!placement && this.#placement) {
        this.#placement = undefined;
        this.#markAllDirty();
      }
      this.#appliedRevision = listing.revision;
      this.#syncedOnce = true;
      this.#refreshFreshness();
      this.#markAllDirty();
      const decodedAtMs = Date.now();
      await this.#flush([receivedAtMs]);
      this.#log.debug({ keys: listing.entries.length, listMs: receivedAtMs - listStartMs, decodeMs: decodedAtMs - receivedAtMs, writeMs: Date.now() - decodedAtMs }, 'full sync timings');
      this.#syncing = false;
      // The flush above last set the gauge while still syncing; without this, /metrics said
      // 'syncing' after ready until the next heartbeat tick.
      this.#o.metrics.setLinkState(this.peer, this.#state());
      if (this.#initialSync !== 'done') {
        this.#initialSync = 'done';
        this.#o.metrics.initialSyncDone.set({ peer: this.peer }, 1);
        this.#log.info({ exports: this.#exports.size, revision: listing.revision }, 'initial sync done');
        this.#notifySync();
        await this.#writeStatus(true);
      }
    });
  }

  #watchUntilOver(): Promise<'compacted' | 'broken'> {
    return new Promise((resolve, reject) => {
      if (this.#stopped) return resolve('broken');
      const start = (BigInt(this.#appliedRevision) + 1n).toString();
      this.#lastStreamDataMs = Date.now();
      this.#breakWatch = (error) => {
        this.#breakWatch = undefined;
        const watch = this.#watch;
        this.#watch = undefined;
        watch?.close();
        if (this.#stopped) resolve('broken');
        else reject(error);
      };
      this.#watch = this.#o.peerStore.watchPrefix(EtcdKeys.exportsPrefix, start, {
        onBatch: (batch) => {
          this.#lastStreamDataMs = Date.now();
          if (!this.#connected) {
            this.#connected = true;
            this.#lastError = undefined;
            this.#refusedBecause = undefined;
            this.#log.info({ fromRevision: start }, 'link to peer resumed');
          }
          try {
            this.#applyBatch(batch);
          } catch (error) {
            if (error instanceof FederationError && error.code === FederationErrorCodes.peerMismatch) this.#breakWatch?.(error);
            else throw error;
          }
        },
        onCompacted: (compactRevision) => {
          this.#watch = undefined;
          this.#breakWatch = undefined;
          this.#log.warn({ appliedRevision: this.#appliedRevision, compactRevision }, 'peer compacted past the applied revision; re-listing');
          resolve('compacted');
        },
        onBroken: (error) => this.#breakWatch?.(error),
      });
    });
  }

  /**
   * Applies a watch batch to memory at once and asks for a flush. Batches arriving while
   * a flush is committing are written together by the next one, so a burst costs a few
   * transactions, not one per event.
   */
  #applyBatch(batch: ChangeBatch): void {
    let changed = false;
    for (const event of batch.events) {
      const entry: StoredValue = { key: event.key, value: event.value, modRevision: event.modRevision, lease: event.lease };
      if (event.type === 'delete') changed = this.#applyDelete(event.key) || changed;
      else changed = this.#applyEntry(entry) !== undefined || changed;
    }
    this.#eventsApplied += batch.events.length;
    this.#o.metrics.eventsApplied.inc({ peer: this.peer }, batch.events.length);
    if (BigInt(batch.revision) > BigInt(this.#appliedRevision)) this.#appliedRevision = batch.revision;
    // A heartbeat brings a stale link back at once, not at the next tick.
    if (this.#freshness !== 'fresh') changed = this.#refreshFreshness() || changed;
    if (changed || this.#dirty.size > 0) {
      this.#pendingReceivedAtMs.push(batch.receivedAtMs);
      this.#requestFlush();
    }
  }

  #requestFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    this.#enqueue(async () => {
      this.#flushQueued = false;
      await this.#flush(this.#pendingReceivedAtMs.splice(0));
    });
  }

  /** Applies one peer key's value to memory; returns what it was (undefined for skipped values). */
  #applyEntry(
    entry: StoredValue,
  ): { kind: 'service'; key: string } | { kind: 'placement'; placement: PeerPlacement } | { kind: 'heartbeat' } | { kind: 'report' } | undefined {
    let parsed;
    try {
      parsed = parseEtcdKey(entry.key);
    } catch (error) {
      this.#log.warn({ key: entry.key, err: error }, 'skipping an unknown key under the peer exports');
      return undefined;
    }
    if (parsed.kind === 'heartbeat') {
      const decoded = decodeCatalogValue(Heartbeat, entry.key, entry.value);
      if (!decoded.ok) {
        this.#log.warn({ key: entry.key, err: decoded.error }, 'skipping an invalid peer heartbeat');
        return undefined;
      }
      // Fresh only when the owner's sequence advances: a re-put, a replayed older value or
      // a relisted one changes nothing (heartbeat-freshness.ts; federation/README.md "Staleness").
      const seen = this.#heartbeats.observe(decoded.value, Date.now());
      if (!seen.advanced) return undefined;
      this.#heartbeatAtMs = seen.advancedAtMs;
      return { kind: 'heartbeat' };
    }
    if (parsed.kind === 'reported-links') return this.#applyReport(entry);
    if (parsed.kind === 'exported-cluster') {
      const decoded = decodeCatalogValue(ExportedCluster, entry.key, entry.value);
      if (!decoded.ok) {
        this.#log.warn({ key: entry.key, err: decoded.error }, 'skipping an invalid peer cluster record');
        return undefined;
      }
      if (decoded.value.name !== this.peer) {
        throw new FederationError(
          FederationErrorCodes.peerMismatch,
          `the etcd of link "${this.peer}" belongs to cluster "${decoded.value.name}"; fix links[].peer, or links[].gateways (links[].etcd.endpoints)`,
        );
      }
      this.#placement = { locality: decoded.value.locality, network: decoded.value.network, gateways: decoded.value.gateways };
      this.#markAllDirty();
      return { kind: 'placement', placement: this.#placement };
    }
    if (parsed.kind !== 'exported-service') {
      this.#log.warn({ key: entry.key }, 'skipping a key of the wrong kind under the peer exports');
      return undefined;
    }
    const decoded = decodeCatalogValue(ExportedService, entry.key, entry.value);
    if (!decoded.ok) {
      this.#log.warn({ key: entry.key, err: decoded.error }, 'skipping an invalid peer export');
      return undefined;
    }
    const { service } = decoded.value;
    if (service.name !== parsed.name || service.namespace !== parsed.namespace) {
      this.#log.warn({ key: entry.key, service: `${service.name}.${service.namespace}` }, 'skipping a peer export whose spec names another service');
      return undefined;
    }
    const key = SERVICE_KEY(parsed.namespace, parsed.name);
    this.#exports.set(key, { value: decoded.value, modRevision: entry.modRevision });
    this.#dirty.add(key);
    this.#claim(key, decoded.value);
    return { kind: 'service', key };
  }

  #applyDelete(peerKey: string): boolean {
    let parsed;
    try {
      parsed = parseEtcdKey(peerKey);
    } catch {
      return false;
    }
    if (parsed.kind === 'exported-service') return this.#removeExport(SERVICE_KEY(parsed.namespace, parsed.name));
    if (parsed.kind === 'exported-cluster') {
      this.#placement = undefined;
      this.#markAllDirty();
      return true;
    }
    // A deleted heartbeat (its lease expired) or links report proves nothing new: its age keeps growing.
    return false;
  }

  /**
   * The peer's report of its own links (federation/README.md "Links reported by peers"):
   * kept only when valid and new (another `reportedAt`), dated on the local clock; a
   * refused one is logged with its key and counted, and the last good one stays.
   */
  #applyReport(entry: StoredValue): { kind: 'report' } | undefined {
    const decoded = decodeReportedLinks(this.peer, entry.value);
    if (!decoded.ok) {
      this.#o.metrics.reportsRefused.inc({ peer: this.peer, reason: decoded.reason });
      this.#log.warn(
        { key: entry.key, code: FederationErrorCodes.reportedLinksRefused, reason: decoded.reason, err: decoded.message, keptReportedAt: this.#reported?.reportedAt },
        "refused the peer's links report; keeping the last good one",
      );
      return undefined;
    }
    if (decoded.value.reportedAt === this.#reported?.reportedAt) return undefined;
    this.#reported = { ...decoded.value, receivedAt: new Date().toISOString() };
    this.#reportedUnwritten = true;
    this.#o.metrics.reportsReceived.inc({ peer: this.peer });
    return { kind: 'report' };
  }

  async #writeReport(): Promise<void> {
    const report = this.#reported;
    if (!this.#reportedUnwritten || report === undefined) return;
    const key = EtcdKeys.peerReportedLinks(this.peer);
    this.#reportedUnwritten = false;
    try {
      await this.#o.localStore.commit([{ put: key, value: encodeCatalogValue(PeerReportedLinks, key, report) }]);
      this.#localStoreAnswered();
    } catch (error) {
      if (this.#reported === report) this.#reportedUnwritten = true;
      this.#localStoreFailed(error);
      this.#log.debug({ err: error, key }, "could not store the peer's links report; will retry");
      setTimeout(() => this.#requestFlush(), 1000).unref();
    }
  }

  #removeExport(key: string): boolean {
    if (!this.#exports.delete(key)) return false;
    this.#dirty.add(key);
    this.#claim(key, undefined);
    return true;
  }

  #claim(key: string, value: ExportedService | undefined): void {
    const service = MESH_NAME(key);
    const changed = this.#o.conflicts.claim(this.peer, service, value && { ports: value.service.ports, exportedAt: value.exportedAt });
    if (changed.length > 0) this.#o.onConflictsChanged(changed, key);
  }

  #markAllDirty(): void {
    for (const key of this.#exports.keys()) this.#dirty.add(key);
    for (const key of this.#written.keys()) this.#dirty.add(key);
  }

  // ---- writing imports ---------------------------------------------------------------

  #render(key: string): string | undefined {
    if (this.#freshness === 'expired' || !this.#placement) return undefined;
    const exported = this.#exports.get(key);
    if (!exported) return undefined;
    const conflict = this.#o.conflicts.conflictFor(this.peer, MESH_NAME(key));
    const value: ImportedService = {
      schema: CATALOG_SCHEMA_VERSION,
      peer: this.peer,
      service: exported.value.service,
      healthy: exported.value.healthy,
      gateways: this.#placement.gateways,
      peerLocality: this.#placement.locality,
      peerNetwork: this.#placement.network,
      exportedAt: exported.value.exportedAt,
      peerRevision: exported.modRevision,
      stale: this.#freshness === 'stale',
      ...(conflict ? { conflict } : {}),
    };
    // Built only from values decoded and validated above; re-validating 10k imports would
    // cost more than the whole initial sync budget.
    return JSON.stringify(value);
  }

  /** Writes every dirty import (and the status) to the local etcd; serialised by the chain. */
  async #flush(receivedAtMs: readonly number[] = []): Promise<void> {
    if (this.#stopped && this.#dirty.size === 0) return;
    const planned: Array<{ key: string; print: string | undefined; op: WriteOp }> = [];
    for (const key of this.#dirty) {
      const json = this.#render(key);
      const print = json === undefined ? undefined : fingerprint(json);
      if (print === this.#written.get(key)) continue;
      const [ns = '', name = ''] = key.split('/');
      const etcdKey = EtcdKeys.importedService(this.peer, ns, name);
      planned.push({ key, print, op: json === undefined ? { delete: etcdKey } : { put: etcdKey, value: json } });
    }
    this.#dirty.clear();
    const chunks: (typeof planned)[] = [];
    for (let i = 0; i < planned.length; i += MAX_TXN_OPS - 1) chunks.push(planned.slice(i, i + MAX_TXN_OPS - 1));
    const failed: string[] = [];
    // Each chunk is one transaction; chunks touch distinct keys, so a few run at once.
    const commitChunk = async (chunk: typeof planned, withStatus: boolean) => {
      // Applied to memory first so that the status in the same transaction counts them; undone on failure.
      const previous = chunk.map((p) => [p.key, this.#written.get(p.key)] as const);
      for (const p of chunk) {
        if (p.print === undefined) this.#written.delete(p.key);
        else this.#written.set(p.key, p.print);
      }
      const ops = chunk.map((p) => p.op);
      if (withStatus) ops.push(this.#statusOp());
      try {
        await this.#o.localStore.commit(ops);
        if (withStatus) this.#lastStatusWriteMs = Date.now();
        this.#localStoreAnswered();
      } catch (error) {
        this.#localStoreFailed(error);
        this.#log.warn({ err: error, keys: chunk.length }, 'could not write imports to the local etcd; will retry');
        for (const [key, print] of previous) {
          if (print === undefined) this.#written.delete(key);
          else this.#written.set(key, print);
          failed.push(key);
        }
      }
    };
    const last = chunks.pop();
    for (let i = 0; i < chunks.length; i += 4) await Promise.all(chunks.slice(i, i + 4).map((c) => commitChunk(c, false)));
    if (last) await commitChunk(last, true);
    else await this.#writeStatus(false);
    await this.#writeReport();
    if (failed.length > 0) {
      for (const key of failed) this.#dirty.add(key);
      setTimeout(() => this.#enqueue(() => this.#flush()), 1000).unref();
    } else if (planned.length > 0) {
      const now = Date.now();
      for (const at of receivedAtMs) {
        this.#lastSyncLagMs = now - at;
        this.#o.metrics.syncLag.observe({ peer: this.peer }, this.#lastSyncLagMs / 1000);
      }
    }
    this.#updateMetrics();
  }

  #statusOp(): WriteOp {
    const { heartbeatAgeMs: _a, eventsApplied: _b, resyncs: _c, ...persisted } = this.status();
    const json = encodeCatalogValue(LinkStatus, EtcdKeys.linkStatus(this.peer), persisted);
    return { put: EtcdKeys.linkStatus(this.peer), value: json };
  }

  /** Writes the status when it changed (or `force`, or the refresh period passed). */
  async #writeStatus(force: boolean): Promise<void> {
    const op = this.#statusOp();
    const json = 'put' in op ? op.value.replace(/"updatedAt":"[^"]*"/, '') : '';
    if (!force && json === this.#lastStatusSent && Date.now() - this.#lastStatusWriteMs < this.#o.timings.heartbeatIntervalMs) return;
    try {
      await this.#o.localStore.commit([op]);
      this.#lastStatusSent = json;
      this.#lastStatusWriteMs = Date.now();
      this.#localStoreAnswered();
    } catch (error) {
      const first = this.#localStoreError === undefined;
      this.#localStoreFailed(error);
      // One warning per outage: the status is retried every heartbeat interval.
      if (first) this.#log.warn({ err: error }, 'could not write the link status to the local etcd');
    }
  }

  #localStoreFailed(error: unknown): void {
    if (this.#stopped) return;
    const before = this.#localStoreError;
    this.#localStoreError = (error as Error)?.message ?? String(error);
    if (before === undefined) this.#o.metrics.setLinkState(this.peer, this.#state());
  }

  /** A write went through: leave local-store-down, and record the recovered state at once (the write that just succeeded still said down). */
  #localStoreAnswered(): void {
    if (this.#localStoreError === undefined) return;
    this.#localStoreError = undefined;
    this.#log.info('the local etcd takes writes again');
    this.#o.metrics.setLinkState(this.peer, this.#state());
    this.#lastStatusSent = '';
    this.#requestFlush();
  }

  /** Runs `task` after every earlier one; failures are logged (use {@link #serialised} to see them). */
  #enqueue(task: () => Promise<void>): void {
    this.#serialised(task).catch((error: unknown) => this.#log.error({ err: error }, 'link task failed'));
  }

  #serialised(task: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(task);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  /** Re-derives freshness from the heartbeat age; on a change every import is re-rendered. Returns whether it changed. */
  #refreshFreshness(now = Date.now()): boolean {
    const age = now - (this.#heartbeatAtMs ?? this.#startedAtMs);
    const { staleAfterMs, expireAfterMs } = this.#o.timings;
    const freshness: Freshness = age > expireAfterMs ? 'expired' : age > staleAfterMs ? 'stale' : 'fresh';
    if (freshness === this.#freshness) return false;
    const before = this.#freshness;
    if (freshness === 'expired') this.#importsExpired += this.#written.size;
    if (before === 'expired') this.#importsExpired = 0;
    this.#freshness = freshness;
    this.#log[freshness === 'fresh' ? 'info' : 'warn']({ from: before, to: freshness, heartbeatAgeMs: age }, `link is now ${freshness}`);
    this.#markAllDirty();
    return true;
  }

  #tick(): void {
    if (this.#stopped) return;
    const now = Date.now();
    const age = now - (this.#heartbeatAtMs ?? this.#startedAtMs);
    const { heartbeatIntervalMs } = this.#o.timings;
    if (this.#refreshFreshness(now)) {
      this.#requestFlush();
    } else if (now - this.#lastStatusWriteMs >= heartbeatIntervalMs) {
      this.#lastStatusWriteMs = now;
      this.#enqueue(() => this.#writeStatus(true));
    }
    // A watch stream can hang silently (a partition); probe it, and recycle it when mute.
    if (this.#watch && this.#connected) {
      const muteMs = now - this.#lastStreamDataMs;
      if (muteMs > 2 * heartbeatIntervalMs + 2000) {
        this.#breakWatch?.(new FederationError(FederationErrorCodes.etcdUnavailable, `watch stream silent for ${Math.round(muteMs / 1000)}s`, { retryable: true }));
      } else if (muteMs > heartbeatIntervalMs) {
        this.#watch.requestProgress();
      }
    }
    if (this.#watch && this.#connected && now - this.#lastAccessCheckMs >= Math.max(1000, this.#o.timings.staleAfterMs / 2)) this.#checkAccess(now);
    this.#o.metrics.heartbeatAge.set({ peer: this.peer }, age / 1000);
    if (this.#reported) this.#o.metrics.reportAge.set({ peer: this.peer }, Math.max(0, now - Date.parse(this.#reported.receivedAt)) / 1000);
    this.#o.metrics.setLinkState(this.peer, this.#state());
    this.#o.metrics.initialSyncDone.set({ peer: this.peer }, this.#initialSync === 'done' ? 1 : 0);
  }

  /**
   * etcd checks a watch's permission only when the watch is created: a stream opened
   * before the peer revoked this cluster's login keeps delivering. A cheap read now and
   * then finds out, and ends the watch so that the link reports `unauthorized`.
   */
  #checkAccess(now: number): void {
    if (this.#checkingAccess) return;
    this.#checkingAccess = true;
    this.#lastAccessCheckMs = now;
    this.#o.peerStore.get(EtcdKeys.exportedCluster).then(
      () => (this.#checkingAccess = false),
      (error: unknown) => {
        this.#checkingAccess = false;
        if (error instanceof FederationError && error.code === FederationErrorCodes.etcdPermissionDenied) this.#breakWatch?.(error);
      },
    );
  }

  #updateMetrics(): void {
    const s = this.status();
    const conflicts = s.conflicts.length;
    this.#o.metrics.imports.set({ peer: this.peer, state: 'stale' }, s.importsStale);
    this.#o.metrics.imports.set({ peer: this.peer, state: 'conflict' }, conflicts);
    this.#o.metrics.imports.set({ peer: this.peer, state: 'active' }, s.imports - s.importsStale);
    this.#o.metrics.conflicts.set({ peer: this.peer }, conflicts);
    this.#o.metrics.appliedRevision.set({ peer: this.peer }, Number(this.#appliedRevision));
    this.#o.metrics.setLinkState(this.peer, s.state);
  }

  #notifySync(): void {
    for (const w of this.#syncWaiters) w();
    this.#syncWaiters.clear();
  }

  /**
   * Picks up what an earlier run wrote: its imports (kept until this run syncs or they
   * expire, so a restart while the peer is down does not drop them) and the last
   * heartbeat time (so a restart does not make a dead peer look fresh).
   */
  async #loadLocalState(): Promise<void> {
    const prefix = EtcdKeys.peerImportsPrefix(this.peer);
    const listing = await this.#o.localStore.list(prefix);
    for (const entry of listing.entries) {
      if (entry.key === EtcdKeys.linkStatus(this.peer)) {
        const decoded = decodeCatalogValue(LinkStatus, entry.key, entry.value);
        if (!decoded.ok) {
          this.#log.warn({ key: entry.key, err: decoded.error }, 'ignoring an invalid link status');
          continue;
        }
        if (decoded.value.lastHeartbeatAt) {
          this.#heartbeatAtMs = Math.min(Date.now(), Date.parse(decoded.value.lastHeartbeatAt));
          this.#heartbeats = new HeartbeatFreshness(this.#heartbeatAtMs);
        }
        continue;
      }
      if (entry.key === EtcdKeys.peerReportedLinks(this.peer)) {
        const decoded = decodeCatalogValue(PeerReportedLinks, entry.key, entry.value);
        if (decoded.ok && decoded.value.cluster === this.peer) this.#reported = decoded.value;
        else this.#log.warn({ key: entry.key, ...(decoded.ok ? {} : { err: decoded.error }) }, 'ignoring an invalid stored links report; the next one replaces it');
        continue;
      }
      const decoded = decodeCatalogValue(ImportedService, entry.key, entry.value);
      let parsed;
      try {
        parsed = parseEtcdKey(entry.key);
      } catch {
        parsed = undefined;
      }
      if (!decoded.ok || parsed?.kind !== 'imported-service') {
        this.#log.warn({ key: entry.key, ...(decoded.ok ? {} : { err: decoded.error }) }, 'deleting an invalid import');
        await this.#o.localStore.commit([{ delete: entry.key }]);
        continue;
      }
      const key = SERVICE_KEY(parsed.namespace, parsed.name);
      const v = decoded.value;
      this.#written.set(key, fingerprint(entry.value.toString('utf8')));
      const exported: ExportedService = { schema: CATALOG_SCHEMA_VERSION, service: v.service, healthy: v.healthy, exportedAt: v.exportedAt };
      this.#exports.set(key, { value: exported, modRevision: v.peerRevision });
      this.#placement ??= { locality: v.peerLocality, network: v.peerNetwork, gateways: v.gateways };
      this.#claim(key, exported);
    }
  }
}
