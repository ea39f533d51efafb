import type { ExecutionContext } from 'ava';
import { startExportStoreServer, type ExportStoreServer } from '../../testkit/export-store.js';

/** A cluster's export store as `causeway federation init` sets it up (testkit/export-store.ts). */
export type TestExportStore = ExportStoreServer;

export async function startExportStore(t: ExecutionContext, cluster: string, options: { auth?: boolean } = {}): Promise<TestExportStore> {
  // Torn down even when it comes up after the test ended (a sibling of Promise.all failed).
  const starting = startExportStoreServer(cluster, options);
  t.teardown(async () => (await starting.catch(() => undefined))?.destroy());
  return starting;
}
