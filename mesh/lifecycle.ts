/**
 * What a component's stop() is still waiting for. A long-running command gives one to its
 * component's stop(); the component runs each closing step through it, so that when the
 * command's drain deadline forces the process out, the log line names what did not close
 * (`etcd cluster record`, `grpc server`…) instead of only saying that something hung.
 */
export class ShutdownSteps {
  readonly #pending = new Map<string, number>();

  /** Runs one named closing step; it counts as pending until it settles. */
  async run<T>(name: string, work: () => Promise<T> | T): Promise<T> {
    this.#pending.set(name, (this.#pending.get(name) ?? 0) + 1);
    try {
      return await work();
    } finally {
      const left = (this.#pending.get(name) ?? 1) - 1;
      if (left > 0) this.#pending.set(name, left);
      else this.#pending.delete(name);
    }
  }

  /** The steps started and not yet settled, in the order they started. */
  pending(): string[] {
    return [...this.#pending.keys()];
  }
}
