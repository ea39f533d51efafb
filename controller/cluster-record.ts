import { isDeepStrictEqual } from 'node:util';
import { CATALOG_SCHEMA_VERSION, ClusterInfo, EtcdKeys, decodeCatalogValue, encodeCatalogValue, logger, type GatewayAddress, type Locality } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';

export interface ClusterRecordOptions {
  readonly name: string;
  readonly locality: Locality;
  readonly network: string;
  readonly trustDomain: string;
}

const sameAddress = (a: GatewayAddress, b: GatewayAddress) => a.address === b.address && a.port === b.port;

/**
 * Keeps `/causeway/v1/cluster` current: the cluster's identity, its gateways and the
 * gRPC addresses of its controllers. Every controller adds itself on start and removes
 * itself on stop with compare-and-swap writes, so concurrent controllers never drop
 * each other's entries; and every live controller rewrites `controllers` from the
 * lease-bound registrations (`/causeway/v1/controllers/<id>`), so one that died without
 * stopping leaves the list within one lease TTL — as long as some controller is alive
 * to rewrite it (with none, readers go by the registrations themselves).
 */
export class ClusterRecord {
  readonly #log = logger('controller-cluster');
  readonly #store: EtcdStore;
  readonly #options: ClusterRecordOptions;

  constructor(
    store: EtcdStore,
    options: ClusterRecordOptions,
  ) {
    this.#store = store;
    this.#options = options;
  }

  /** Applies `change` to the stored record (or a fresh one) until the CAS write wins. */
  async update(change: (info: ClusterInfo) => ClusterInfo): Promise<ClusterInfo> {
    for (let attempt = 0; ; attempt++) {
      const kv = await this.#store.get(EtcdKeys.cluster);
      const decoded = kv ? decodeCatalogValue(ClusterInfo, EtcdKeys.cluster, kv.value) : undefined;
      if (decoded && !decoded.ok) this.#log.warn({ key: EtcdKeys.cluster, err: decoded.error.message }, 'replacing an invalid cluster record');
      const base: ClusterInfo = decoded?.ok
        ? decoded.value
        : { schema: CATALOG_SCHEMA_VERSION, name: this.#options.name, locality: this.#options.locality, network: this.#options.network, trustDomain: this.#options.trustDomain, gateways: [], controllers: [] };
      const next = change({ ...base, name: this.#options.name, locality: this.#options.locality, network: this.#options.network, trustDomain: this.#options.trustDomain });
      if (decoded?.ok && isDeepStrictEqual(decoded.value, next)) return next;
      if (await this.#store.putIfUnchanged(EtcdKeys.cluster, encodeCatalogValue(ClusterInfo, EtcdKeys.cluster, next), kv?.modRevision ?? '0')) return next;
      if (attempt > 20) throw new Error('the cluster record keeps changing; giving up this update');
    }
  }

  addController(address: GatewayAddress): Promise<ClusterInfo> {
    return this.update((info) => ({ ...info, controllers: [...info.controllers.filter((c) => !sameAddress(c, address)), address] }));
  }

  removeController(address: GatewayAddress): Promise<ClusterInfo> {
    return this.update((info) => ({ ...info, controllers: info.controllers.filter((c) => !sameAddress(c, address)) }));
  }

  /** Replaces the list with the live controllers (sorted, so every controller writes the same list). */
  setControllers(live: readonly GatewayAddress[]): Promise<ClusterInfo> {
    const controllers = sortedAddresses(live);
    return this.update((info) => ({ ...info, controllers }));
  }

  setGateways(gateways: GatewayAddress[]): Promise<ClusterInfo> {
    return this.update((info) => ({ ...info, gateways }));
  }
}

/** Addresses in one order (address, then port), without duplicates. */
export function sortedAddresses(list: readonly GatewayAddress[]): GatewayAddress[] {
  const out: GatewayAddress[] = [];
  for (const a of [...list].sort((x, y) => (x.address === y.address ? x.port - y.port : x.address < y.address ? -1 : 1))) {
    if (!out.some((b) => sameAddress(a, b))) out.push({ address: a.address, port: a.port });
  }
  return out;
}
