import { EventEmitter } from 'node:events';
import { Snapshot, formatPath } from '../mesh/index.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';

export interface SnapshotSourceEvents {
  snapshot: [Snapshot];
}

/**
 * Where the sidecar's configuration comes from: the controller's discovery stream in
 * production, a fixed snapshot in tests and demos. `current` is the last good snapshot,
 * which the sidecar keeps serving while the source is disconnected.
 */
export interface SnapshotSource {
  readonly current: Snapshot | undefined;
  on(event: 'snapshot', listener: (snapshot: Snapshot) => void): this;
  off(event: 'snapshot', listener: (snapshot: Snapshot) => void): this;
  start?(): Promise<void> | void;
  close?(): Promise<void> | void;
}

/** A source fed by hand: `push()` validates and publishes a snapshot. */
export class StaticSnapshotSource extends EventEmitter<SnapshotSourceEvents> implements SnapshotSource {
  #current: Snapshot | undefined;

  constructor(initial?: unknown) {
    super();
    if (initial !== undefined) this.#current = parseSnapshot(initial);
  }

  get current(): Snapshot | undefined {
    return this.#current;
  }

  push(snapshot: unknown): Snapshot {
    const parsed = parseSnapshot(snapshot);
    this.#current = parsed;
    this.emit('snapshot', parsed);
    return parsed;
  }
}

/** Validates a snapshot with the shared schema; the error names every bad path. */
export function parseSnapshot(value: unknown): Snapshot {
  const result = Snapshot.safeParse(value);
  if (!result.success) {
    const issues = result.error.issues.slice(0, 5).map((i) => `${formatPath(i.path) || '(root)'}: ${i.message}`);
    throw new ProxyError(ProxyErrorCodes.snapshotRejected, `snapshot rejected: ${issues.join('; ')}`);
  }
  return result.data;
}
