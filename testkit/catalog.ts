import { CATALOG_SCHEMA_VERSION, type ExportedService, type ServicePort } from '../mesh/index.js';

/** An exported service value as a controller writes it: one http port, two healthy endpoints in r1/z1. */
export function exportedService(ns: string, name: string, options: { ports?: ServicePort[]; healthy?: number; exportedAt?: string } = {}): ExportedService {
  return {
    schema: CATALOG_SCHEMA_VERSION,
    service: {
      schema: CATALOG_SCHEMA_VERSION,
      name,
      namespace: ns,
      ports: options.ports ?? [{ name: 'http', port: 9080, protocol: 'http' }],
      serviceAccounts: [`spiffe://causeway.internal/ns/${ns}/sa/${name}`],
      exported: true,
      subsets: {},
    },
    healthy: [{ locality: { region: 'r1', zone: 'z1' }, healthy: options.healthy ?? 2, total: 2 }],
    exportedAt: options.exportedAt ?? new Date().toISOString(),
  };
}
