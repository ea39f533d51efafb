import { ProxyError, ProxyErrorCodes } from './errors.js';
import { parseLoopbackRange } from './outbound-range.js';

/**
 * Hands out one loopback address per key (`<ns>/<svc>` or `<ns>/<svc>@<cluster>`) from a
 * CIDR inside 127/8. An address, once given, stays with its key for the life of the
 * process, so DNS answers an app cached keep working across snapshots.
 */
export class LoopbackAddressAllocator {
  readonly #base: number;
  readonly #size: number;
  #next = 1;
  readonly #byKey = new Map<string, string>();

  constructor(cidr: string) {
    const range = parseLoopbackRange(cidr);
    this.#base = range.base;
    this.#size = 2 ** (32 - range.prefixBits);
  }

  /** The address for `key`, allocating one the first time. */
  addressFor(key: string): string {
    let address = this.#byKey.get(key);
    if (address) return address;
    // Skip the network address and anything ending in .0 or .255, which some resolvers dislike.
    for (;;) {
      if (this.#next >= this.#size - 1) {
        throw new ProxyError(ProxyErrorCodes.addressExhausted, `no free address left in the outbound range (${this.#byKey.size} in use); widen sidecar.outboundRange`);
      }
      const candidate = (this.#base + this.#next++) >>> 0;
      const last = candidate & 0xff;
      if (last === 0 || last === 255) continue;
      address = [candidate >>> 24, (candidate >>> 16) & 0xff, (candidate >>> 8) & 0xff, last].join('.');
      break;
    }
    this.#byKey.set(key, address);
    return address;
  }

  lookup(key: string): string | undefined {
    return this.#byKey.get(key);
  }
}
