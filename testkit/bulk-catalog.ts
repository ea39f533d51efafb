/**
 * The catalog `bench:scale` (and the export tests) give each cluster, written straight into the cluster's etcd in
 * the registry's format — service specs as `causeway service apply` stores them, endpoints
 * on a lease as `Register` stores them — so the controller picks them up by watch exactly
 * as it does the real registry's writes.
 */
import { CATALOG_SCHEMA_VERSION, Endpoint, EtcdKeys, ServiceSpec, encodeCatalogValue, type HealthState } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';

export const NAMESPACE = 'bench';

export const serviceName = (index: number) => `svc-${index}`;

export interface CatalogShape {
  readonly cluster: string;
  readonly region: string;
  readonly trustDomain: string;
  readonly services: number;
  readonly endpointsPerService: number;
}

function serviceSpec(shape: CatalogShape, s: number): string {
  const key = EtcdKeys.service(NAMESPACE, serviceName(s));
  return encodeCatalogValue(ServiceSpec, key, {
    schema: CATALOG_SCHEMA_VERSION,
    name: serviceName(s),
    namespace: NAMESPACE,
    ports: [{ name: 'http', port: 8080, protocol: 'http' }],
    serviceAccounts: [`spiffe://${shape.trustDomain}/ns/${NAMESPACE}/sa/${serviceName(s)}`],
    exported: true,
    subsets: {},
    createdAt: '2026-01-01T00:00:00.000Z',
  });
}

export function endpointEntry(shape: CatalogShape, s: number, e: number, health: HealthState): { key: string; value: string } {
  const id = `ep-${e}`;
  const key = EtcdKeys.endpoint(NAMESPACE, serviceName(s), id);
  const value = encodeCatalogValue(Endpoint, key, {
    schema: CATALOG_SCHEMA_VERSION,
    id,
    service: serviceName(s),
    namespace: NAMESPACE,
    cluster: shape.cluster,
    address: `10.${Math.floor(s / 250)}.${s % 250}.${e + 1}`,
    inboundPort: 15006,
    labels: { version: e % 2 ? 'v1' : 'v2' },
    locality: { region: shape.region, zone: `${shape.region}-${e % 3}` },
    identity: `spiffe://${shape.trustDomain}/ns/${NAMESPACE}/sa/${serviceName(s)}`,
    health,
  });
  return { key, value };
}

const WRITE_BATCH = 500;
const WRITE_ATTEMPTS = 10;

/**
 * `putMany` in batches, each retried: with 20 etcds fsyncing on one shared disk, a batch
 * can miss the store's 10 s call deadline. Puts are idempotent, so a retry is safe.
 */
async function putInBatches(store: EtcdStore, entries: ReadonlyArray<{ key: string; value: string }>, options: { lease?: string } = {}): Promise<void> {
  for (let i = 0; i < entries.length; i += WRITE_BATCH) {
    const batch = entries.slice(i, i + WRITE_BATCH);
    for (let attempt = 1; ; attempt++) {
      try {
        await store.putMany(batch, options);
        break;
      } catch (error) {
        if (attempt >= WRITE_ATTEMPTS) throw error;
        process.stderr.write(`  catalog write of ${batch.length} keys failed (${(error as Error).message.split(';')[0]}); retrying\n`);
        await new Promise((r) => setTimeout(r, 2000));
      }
    }
  }
}

/** Writes every service (exported) and its endpoints (healthy, on `lease`). */
export async function writeCatalog(store: EtcdStore, shape: CatalogShape, lease: string): Promise<void> {
  const services = Array.from({ length: shape.services }, (_, s) => ({ key: EtcdKeys.service(NAMESPACE, serviceName(s)), value: serviceSpec(shape, s) }));
  await putInBatches(store, services);
  const endpoints = [];
  for (let s = 0; s < shape.services; s++) for (let e = 0; e < shape.endpointsPerService; e++) endpoints.push(endpointEntry(shape, s, e, 'healthy'));
  await putInBatches(store, endpoints, { lease });
}
