/** The shared model of Causeway: names, catalog types, etcd keys, config, logging, metrics, the guarded DNS transport. */
export * from './errors.js';
export * from './labels.js';
export * from './sni.js';
export * from './spiffe-id.js';
export * from './dns-name.js';
export * from './dns-transport.js';
export * from './etcd-keys.js';
export * from './catalog.js';
export * from './snapshot.js';
export * from './identities.js';
export * from './validation.js';
export * from './config/schemas.js';
export * from './config/load.js';
export * from './config-origin.js';
export * from './grpc-failure.js';
export * from './config/file-kinds.js';
export * from './log.js';
export * from './listen.js';
export * from './observability.js';
export * from './node-internals.js';
export * from './lifecycle.js';
// etcd3 is heavy (~35 MB resident): only store/ (store/README.md) imports it, and only processes that talk to etcd import store/.
export * from './ipv4.js';
export * from './backoff.js';
export * from './typed-emitter.js';
export * from './bounded-regex.js';
