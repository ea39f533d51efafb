import type { Heartbeat } from '../mesh/index.js';

/**
 * The heartbeat rules (docs/architecture.md "Federation rules"): freshness comes from what
 * the owner writes into `_heartbeat`, never from the key or its lease merely existing.
 *
 * - The owner writes a `sequence` that only grows ({@link nextHeartbeatSequence}).
 * - A reader calls a link fresh only while the largest sequence it has seen advanced
 *   within `staleAfter`, measured on the reader's own clock. A lease kept alive, the same
 *   value listed again after a reconnect, or an older value put back all leave the
 *   largest sequence where it was, so they make nothing fresh.
 */

/**
 * The next sequence for a heartbeat: the owner's clock in ms, but always above the last
 * one written (by this process or, read back from etcd, by another controller or an
 * earlier run), so it advances across restarts, clock steps and several writers.
 */
export function nextHeartbeatSequence(lastMs: number | undefined, nowMs: number): number {
  return lastMs === undefined || !Number.isFinite(lastMs) ? nowMs : Math.max(lastMs + 1, nowMs);
}

/**
 * The sequence a heartbeat stands for. A heartbeat from an older peer has no `sequence`:
 * its `at` (the owner's clock, in the same unit) stands in for it. Such a beat is trusted
 * exactly as far as a sequenced one is — it freshens a link only when its `at` moves past
 * every earlier beat — so replays and re-puts still prove nothing; what an older peer
 * loses is only the monotonicity (its clock stepping back looks stale until it catches
 * up). Treating it as never advancing instead would mark every not-yet-upgraded peer
 * stale, and would not make it any harder to fake freshness.
 */
export function heartbeatSequence(beat: Pick<Heartbeat, 'at' | 'sequence'>): number {
  return beat.sequence ?? Date.parse(beat.at);
}

/** What one observed heartbeat did to a link's freshness. */
export type HeartbeatObservation =
  /** The largest sequence advanced; `advancedAtMs` is when, on the local clock. */
  | { readonly advanced: true; readonly advancedAtMs: number }
  /** Not above the largest sequence seen: a re-put, a replay, or the same value listed again. */
  | { readonly advanced: false };

/** Tracks one peer's heartbeat: the largest sequence seen and when (local clock) it last grew. */
export class HeartbeatFreshness {
  #highest: number | undefined;
  #advancedAtMs: number | undefined;

  /**
   * @param advancedAtMs when the sequence last advanced, as an earlier run recorded it
   *   (a restart must not make a dead peer fresh); its sequence is not known.
   */
  constructor(advancedAtMs?: number) {
    this.#advancedAtMs = advancedAtMs;
  }

  /** Local time of the last advance; undefined while none was ever seen (nor restored). */
  get advancedAtMs(): number | undefined {
    return this.#advancedAtMs;
  }

  /** The largest sequence seen; undefined before the first heartbeat of this run. */
  get highestSequence(): number | undefined {
    return this.#highest;
  }

  /**
   * Takes one heartbeat value as read from the peer (listed or watched).
   *
   * The first one this run sees cannot be compared with anything, so it is dated by the
   * owner's own clock (`at`), never later than now: a live value put back long after it
   * was written is as old as it says, and a listed one is not fresher than its timestamp.
   * Every later one counts from now, on the local clock, if its sequence is above the
   * largest seen — and not at all otherwise.
   */
  observe(beat: Pick<Heartbeat, 'at' | 'sequence'>, nowMs: number): HeartbeatObservation {
    const sequence = heartbeatSequence(beat);
    if (!Number.isFinite(sequence)) return { advanced: false };
    if (this.#highest !== undefined && sequence <= this.#highest) return { advanced: false };
    const first = this.#highest === undefined;
    this.#highest = sequence;
    const advancedAtMs = first ? Math.min(nowMs, Date.parse(beat.at)) : nowMs;
    // A restored advance time from the previous run is kept when it is later.
    if (first && this.#advancedAtMs !== undefined && this.#advancedAtMs > advancedAtMs) return { advanced: false };
    this.#advancedAtMs = advancedAtMs;
    return { advanced: true, advancedAtMs };
  }

  /** Time since the sequence last advanced, or since `sinceMs` (the link's start) when it never did. */
  ageMs(nowMs: number, sinceMs: number): number {
    return Math.max(0, nowMs - (this.#advancedAtMs ?? sinceMs));
  }

  /** Fresh: the sequence advanced within `staleAfterMs` of `nowMs`. */
  isFresh(nowMs: number, staleAfterMs: number): boolean {
    return this.#advancedAtMs !== undefined && nowMs - this.#advancedAtMs <= staleAfterMs;
  }
}
