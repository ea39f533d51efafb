import type { SnapshotService, SnapshotTarget, TrafficPolicy } from '../mesh/index.js';

/** Identity of a target for outlier bookkeeping: connect failures are a property of the address. */
export function targetKey(target: Pick<SnapshotTarget, 'address' | 'port'>): string {
  return `${target.address}:${target.port}`;
}

export interface OutlierSettings {
  consecutiveFailures: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
}

interface OutlierState {
  failures: number;
  ejections: number;
  ejectedUntil: number;
}

/**
 * Consecutive-failure outlier detection (after Envoy's): `consecutiveFailures` connect,
 * handshake or 5xx failures in a row eject a target for `baseEjectionMs × n` (capped;
 * Envoy's rule), n counting earlier ejections that a success has not yet forgiven. A connect
 * failure counts as `consecutiveFailures` at once,
 * since a refused connect says more about a target than one 503 does.
 */
export class OutlierDetector {
  readonly #states = new Map<string, OutlierState>();
  #settings: OutlierSettings;
  readonly #onEject: (key: string, reason: string, ms: number) => void;
  readonly #now: () => number;

  constructor(settings: OutlierSettings, onEject: (key: string, reason: string, ms: number) => void = () => {}, now: () => number = Date.now) {
    this.#settings = settings;
    this.#onEject = onEject;
    this.#now = now;
  }

  isEjected(key: string): boolean {
    const state = this.#states.get(key);
    return state !== undefined && state.ejectedUntil > this.#now();
  }

  success(key: string): void {
    const state = this.#states.get(key);
    if (!state) return;
    state.failures = 0;
    if (state.ejectedUntil <= this.#now()) state.ejections = Math.max(0, state.ejections - 1);
    if (state.failures === 0 && state.ejections === 0) this.#states.delete(key);
  }

  failure(key: string, reason: 'connect' | 'handshake' | 'http-5xx' | 'grpc-status', settings: Partial<OutlierSettings> = {}): void {
    const s = { ...this.#settings, ...settings };
    let state = this.#states.get(key);
    if (!state) {
      state = { failures: 0, ejections: 0, ejectedUntil: 0 };
      this.#states.set(key, state);
    }
    if (state.ejectedUntil > this.#now()) return;
    state.failures += reason === 'http-5xx' || reason === 'grpc-status' ? 1 : s.consecutiveFailures;
    if (state.failures >= s.consecutiveFailures) {
      state.failures = 0;
      state.ejections += 1;
      const ms = Math.min(s.baseEjectionMs * state.ejections, s.maxEjectionMs);
      state.ejectedUntil = this.#now() + ms;
      this.#onEject(key, reason, ms);
    }
  }

  /** Forget targets that left the snapshot. */
  retain(keys: ReadonlySet<string>): void {
    for (const key of this.#states.keys()) if (!keys.has(key)) this.#states.delete(key);
  }
}

/**
 * The subset one request or connection goes to under a traffic policy's `split`
 * (weighted random); undefined without one.
 */
export function pickSubset(split: TrafficPolicy['split'], random: () => number = Math.random): string | undefined {
  if (!split) return undefined;
  let total = 0;
  for (const s of split) total += s.weight;
  let point = random() * total;
  for (const s of split) {
    if (s.weight <= 0) continue;
    point -= s.weight;
    if (point < 0) return s.subset;
  }
  // Rounding at the top end: the last subset that has a weight.
  for (let i = split.length - 1; i >= 0; i--) if (split[i]!.weight > 0) return split[i]!.subset;
  return undefined;
}

export interface PlanOptions {
  /** Own cluster (for the failover order's default rank). */
  pinnedCluster?: string | undefined;
  subset?: string | undefined;
  policy?: TrafficPolicy | undefined;
  random?: () => number;
}

/**
 * Orders the usable targets of a service for one request or connection: the preferred
 * priority group first (locality priority from the controller, or the traffic policy's
 * failoverOrder), weighted-random inside each group by healthy count, then the next
 * groups as fall-backs for retries. Unhealthy, stale and zero-weight targets never
 * appear. Ejected targets go last (Envoy's "panic" rule: when everything is ejected,
 * trying an ejected target beats failing outright).
 */
export function planTargets(service: SnapshotService, outliers: OutlierDetector, options: PlanOptions = {}): SnapshotTarget[] {
  // Runs per request: plain loops, no closures.
  const subsetLabels = options.subset ? service.subsets[options.subset] : undefined;
  const pinned = options.pinnedCluster;
  const usable: SnapshotTarget[] = [];
  for (const t of service.targets) if (isUsable(t, pinned, subsetLabels)) usable.push(t);
  // One target (a gateway per remote cluster is common): nothing to order.
  if (usable.length < 2) return usable;
  const random = options.random ?? Math.random;
  const failoverOrder = options.policy?.failoverOrder;
  const live: SnapshotTarget[] = [];
  const ejected: SnapshotTarget[] = [];
  for (const t of usable) (outliers.isEjected(targetKey(t)) ? ejected : live).push(t);
  if (ejected.length === 0) return orderByRank(live, failoverOrder, random);
  return [...orderByRank(live, failoverOrder, random), ...orderByRank(ejected, failoverOrder, random)];
}

function isUsable(t: SnapshotTarget, pinnedCluster: string | undefined, subsetLabels: Readonly<Record<string, string>> | undefined): boolean {
  if (!t.healthy || t.stale || t.weight <= 0) return false;
  if (pinnedCluster && t.cluster !== pinnedCluster) return false;
  // A subset narrows local endpoints by label; a gateway target carries the subset in the SNI instead.
  if (subsetLabels && t.kind === 'endpoint') {
    for (const k in subsetLabels) if (t.labels[k] !== subsetLabels[k]) return false;
  }
  return true;
}

function rankOf(t: SnapshotTarget, failoverOrder: readonly string[] | undefined): number {
  if (failoverOrder && failoverOrder.length > 0) {
    const index = failoverOrder.indexOf(t.cluster);
    // Listed clusters first in the given order; the rest after them by locality priority.
    return index >= 0 ? index : failoverOrder.length + t.priority;
  }
  return t.priority;
}

function orderByRank(targets: SnapshotTarget[], failoverOrder: readonly string[] | undefined, random: () => number): SnapshotTarget[] {
  const groups = new Map<number, SnapshotTarget[]>();
  for (const t of targets) {
    const r = rankOf(t, failoverOrder);
    let group = groups.get(r);
    if (!group) groups.set(r, (group = []));
    group.push(t);
  }
  const out: SnapshotTarget[] = [];
  for (const r of [...groups.keys()].sort((a, b) => a - b)) out.push(...weightedShuffle(groups.get(r)!, random));
  return out;
}

/** Weighted random order without replacement (Efraimidis–Spirakis keys). */
function weightedShuffle(targets: SnapshotTarget[], random: () => number): SnapshotTarget[] {
  if (targets.length < 2) return targets;
  return targets
    .map((t) => ({ t, k: Math.pow(random() || Number.MIN_VALUE, 1 / t.weight) }))
    .sort((a, b) => b.k - a.k)
    .map((e) => e.t);
}
