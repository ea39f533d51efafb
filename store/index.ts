/**
 * The storage layer: the one etcd adapter, its lossless watch, leased keys and the
 * validated catalog mirror (store/README.md). What other parts may use. Only the
 * controller, gateway, federation and cli import it; it imports `mesh/` only.
 */
export {
  MAX_TXN_OPS,
  prefixEnd,
  type ChangeBatch,
  type ChangeEvent,
  type EtcdStore,
  type Listing,
  type Permission,
  type RolePermission,
  type PrefixWatch,
  type PrefixWatchHandlers,
  type PutOptions,
  type StoredValue,
  type WriteOp,
} from './etcd-store.js';
export { Etcd3Store, type Etcd3StoreOptions } from './etcd3-store.js';
export { StoreError, StoreErrorCodes } from './errors.js';
export { LeasedKey, type LeasedKeyOptions } from './leased-key.js';
export type { CatalogEntry } from './catalog-entry.js';
export { CatalogMirror, type CatalogChange, type CatalogMirrorOptions, type CatalogUpdate } from './catalog-mirror.js';
