import { connect } from 'node:net';
import type { Gateway, GatewayAddress } from '../mesh/index.js';
import type { Versioned } from './catalog-cache.js';

export interface GatewayProbeOptions {
  /** How long one connect may take; a probe that times out lists the gateway. */
  readonly timeoutMs?: number;
  /** How soon a registration nothing answered for is probed again. */
  readonly retryMs?: number;
  /** Called when a registration nothing answered for starts answering. */
  readonly onAnswered: () => void;
}

type Verdict = 'serving' | 'silent' | 'pending';

/**
 * Decides which registered gateways `/exports/_cluster` may list (controller/README.md
 * "Gateways peers see"): a registration is left out while a TCP connect to its address is
 * refused, and listed otherwise (a connect that times out or finds no route says nothing
 * about a gateway this controller cannot reach but its peers can). That keeps a
 * registration that outlived its process (etcd restores a lease after a restart with a
 * fresh TTL, and the key stays for one TTL with nobody behind it) from attracting peers'
 * traffic before the gateway's next process listens. A registration is judged once
 * per written value (its modRevision): a gateway that answered stays listed until its
 * lease ends, and one that did not is probed again every `retryMs`.
 */
export class GatewayProbe {
  readonly #timeoutMs: number;
  readonly #retryMs: number;
  readonly #onAnswered: () => void;
  /** `<id>@<modRevision>` → verdict; registrations gone from the catalog are forgotten. */
  readonly #verdicts = new Map<string, Verdict>();
  readonly #retries = new Map<string, NodeJS.Timeout>();
  #closed = false;

  constructor(options: GatewayProbeOptions) {
    this.#timeoutMs = options.timeoutMs ?? 1000;
    this.#retryMs = options.retryMs ?? 500;
    this.#onAnswered = options.onAnswered;
  }

  /** The addresses of the registrations that may be listed, sorted; probes the ones not judged yet. */
  async serving(gateways: ReadonlyMap<string, Versioned<Gateway>>): Promise<GatewayAddress[]> {
    const current = new Set<string>();
    const unjudged: [string, Gateway][] = [];
    for (const [id, { value, modRevision }] of gateways) {
      const key = `${id}@${modRevision}`;
      current.add(key);
      if (!this.#verdicts.has(key)) unjudged.push([key, value]);
    }
    this.#forgetAllBut(current);
    await Promise.all(unjudged.map(([key, gateway]) => this.#judge(key, gateway)));
    const addresses: GatewayAddress[] = [];
    for (const [id, { value, modRevision }] of gateways) {
      if (this.#verdicts.get(`${id}@${modRevision}`) === 'serving') addresses.push({ address: value.address, port: value.port });
    }
    return addresses.sort((a, b) => a.address.localeCompare(b.address) || a.port - b.port);
  }

  close(): void {
    this.#closed = true;
    for (const timer of this.#retries.values()) clearTimeout(timer);
    this.#retries.clear();
  }

  async #judge(key: string, gateway: Gateway): Promise<void> {
    this.#verdicts.set(key, 'pending');
    const verdict = await answers(gateway, this.#timeoutMs);
    if (this.#closed || !this.#verdicts.has(key)) return;
    this.#verdicts.set(key, verdict);
    if (verdict === 'silent') this.#retry(key, gateway);
  }

  #retry(key: string, gateway: Gateway): void {
    const timer = setTimeout(() => {
      this.#retries.delete(key);
      void answers(gateway, this.#timeoutMs).then((verdict) => {
        if (this.#closed || !this.#verdicts.has(key)) return;
        if (verdict === 'silent') return this.#retry(key, gateway);
        this.#verdicts.set(key, verdict);
        this.#onAnswered();
      });
    }, this.#retryMs);
    timer.unref();
    this.#retries.set(key, timer);
  }

  #forgetAllBut(current: ReadonlySet<string>): void {
    for (const key of this.#verdicts.keys()) {
      if (current.has(key)) continue;
      this.#verdicts.delete(key);
      clearTimeout(this.#retries.get(key));
      this.#retries.delete(key);
    }
  }
}

/**
 * One TCP connect: refused → 'silent' (the host is up, nothing listens on the port: a
 * gateway process that is gone or not yet bound). Anything else → 'serving': accepted, or
 * a timeout, no route, a name that does not resolve — which say where this controller
 * stands rather than whether the gateway serves its peers.
 */
function answers(gateway: Pick<Gateway, 'address' | 'port'>, timeoutMs: number): Promise<Verdict> {
  return new Promise((resolve) => {
    const socket = connect({ host: gateway.address, port: gateway.port });
    const done = (verdict: Verdict) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(verdict);
    };
    const timer = setTimeout(() => done('serving'), timeoutMs);
    socket.once('connect', () => done('serving'));
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code === 'ECONNREFUSED' ? 'silent' : 'serving'));
  });
}
