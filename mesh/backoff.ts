/**
 * The one retry delay used by every long-running part (controller client, certificate
 * renewal, catalog mirror, peer links, gateway): exponential with "full jitter" (a random
 * delay up to the current ceiling, never under half the initial delay), so that many
 * clients that lost the same server do not come back in step.
 */
export interface BackoffOptions {
  /** First ceiling, and twice the shortest delay. */
  readonly initialMs: number;
  /** Largest ceiling. */
  readonly maxMs: number;
  /** `false` gives the ceiling itself (tests and fixed schedules); default `true`. */
  readonly jitter?: boolean;
}

export class Backoff {
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #jitter: boolean;
  #attempt = 0;

  constructor(options: BackoffOptions) {
    if (!(options.initialMs > 0) || !(options.maxMs >= options.initialMs)) {
      throw new RangeError(`backoff needs 0 < initialMs <= maxMs (got ${options.initialMs}, ${options.maxMs})`);
    }
    this.#initialMs = options.initialMs;
    this.#maxMs = options.maxMs;
    this.#jitter = options.jitter ?? true;
  }

  /** The delay before the next attempt; each call raises the ceiling until `maxMs`. */
  next(): number {
    const ceiling = Math.min(this.#maxMs, this.#initialMs * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    return this.#jitter ? Math.max(this.#initialMs / 2, Math.random() * ceiling) : ceiling;
  }

  /** After a success: the next failure starts again at `initialMs`. */
  reset(): void {
    this.#attempt = 0;
  }

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.#attempt;
  }
}
