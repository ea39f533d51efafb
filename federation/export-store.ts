import { logger as moduleLogger, type Logger } from '../mesh/index.js';
import type { EtcdStore } from '../store/index.js';

/**
 * Makes sure the export store enforces permissions (federation/README.md "The export
 * store"): without `auth enable` etcd checks none, and every certificate its CA signs
 * could read and write everything. Run as the controller's `CN=root` login; the
 * controller runs it at start, `federation grant` before it grants. Returns whether it
 * had to turn auth on.
 */
export async function ensureExportStoreAuth(store: EtcdStore, log: Logger = moduleLogger('export-store')): Promise<boolean> {
  if (await store.authEnabled()) return false;
  await store.enableAuth();
  log.info('export store had auth off: added user root (role root) and enabled auth');
  return true;
}
