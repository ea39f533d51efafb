import { EtcdKeys, type Logger } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';
import type { FederationMetrics } from './metrics.js';
import type { PeerLinkStatus } from './peer-link.js';
import { reportSignature, reportedLinksValue } from './reported-links.js';

const FINAL_WRITE_MS = 2000;

export interface LinksReportPublisherOptions {
  readonly cluster: string;
  /** Where peers read this cluster's exports: its export store, or its etcd without one. */
  readonly store: EtcdStore;
  /** The links' live status, read at each check. */
  readonly links: () => PeerLinkStatus[];
  /** Rewritten at least this often (the heartbeat interval), so that readers can age it. */
  readonly intervalMs: number;
  readonly metrics: FederationMetrics;
  readonly log: Logger;
}

/**
 * Publishes this cluster's own links to `/causeway/v1/exports/_links` (federation/README.md
 * "Links reported by peers"), so a peer's view can draw links between other clusters. A
 * change of state or counts is written at the next check (a fraction of the interval:
 * changes close together go out as one write); otherwise the report is rewritten every
 * interval. A plain put, like `_cluster`: when this federation dies the report stays and
 * grows old in every reader, which is how readers tell.
 */
export class LinksReportPublisher {
  readonly #o: LinksReportPublisherOptions;
  #timer: NodeJS.Timeout | undefined;
  #writing: Promise<void> = Promise.resolve();
  /** The states and counts of the last write started (a failed one is retried at the interval). */
  #lastSignature: string | undefined;
  #lastWriteMs = 0;
  #failing = false;
  #stopped = false;

  constructor(options: LinksReportPublisherOptions) {
    this.#o = options;
  }

  start(): void {
    const checkMs = Math.max(50, Math.min(1000, Math.floor(this.#o.intervalMs / 4)));
    this.#timer = setInterval(() => this.#check(), checkMs);
    this.#check();
  }

  /** Stops checking (a write under way finishes). */
  async pause(): Promise<void> {
    clearInterval(this.#timer);
    await this.#writing;
  }

  /** Stops for good; `final` (the links once stopped) is published once more, best effort. Idempotent. */
  async stop(final?: () => PeerLinkStatus[]): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.pause();
    if (!final) return;
    // Bounded: a store that is down must not hold up the shutdown for the store's deadline.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.#publish(final()), new Promise<void>((resolve) => (timer = setTimeout(resolve, FINAL_WRITE_MS)))]);
    clearTimeout(timer);
  }

  #check(): void {
    const links = this.#o.links();
    const signature = reportSignature(links);
    if (signature === this.#lastSignature && Date.now() - this.#lastWriteMs < this.#o.intervalMs) return;
    this.#lastSignature = signature;
    this.#lastWriteMs = Date.now();
    this.#writing = this.#writing.then(() => this.#publish(this.#o.links())); // the ages as of the write
  }

  async #publish(links: PeerLinkStatus[]): Promise<void> {
    try {
      await this.#o.store.commit([{ put: EtcdKeys.reportedLinks, value: reportedLinksValue(this.#o.cluster, links) }]);
      this.#o.metrics.reportsPublished.inc({ result: 'ok' });
      if (this.#failing) this.#o.log.info({ key: EtcdKeys.reportedLinks }, 'links report published again');
      this.#failing = false;
    } catch (error) {
      this.#o.metrics.reportsPublished.inc({ result: 'error' });
      // One warning per outage: peers see the report age meanwhile.
      if (!this.#failing) this.#o.log.warn({ err: error, key: EtcdKeys.reportedLinks }, "cannot publish this cluster's links report; peers will see it grow old");
      this.#failing = true;
    }
  }
}
