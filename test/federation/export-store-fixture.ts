import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import type { EtcdConnection, ExportStoreConfig } from '../../mesh/index.js';
import { connectFederationStore, createExportStorePki, type ExportStorePki } from '../../federation/index.js';
import type { EtcdStore } from '../../store/index.js';
import { startEtcd, type EtcdServer } from '../../testkit/index.js';

/** A cluster's export store as `causeway federation init` sets it up: its own PKI, a real etcd with the printed TLS flags. */
export interface TestExportStore {
  readonly pki: ExportStorePki;
  readonly etcd: EtcdServer;
  /** The controller's `exportStore:` config section. */
  readonly config: ExportStoreConfig;
  /** A root login (CN=root), for the test's own reads and plants. */
  readonly root: EtcdStore;
  readonly rootConnection: EtcdConnection;
}

export async function startExportStore(t: ExecutionContext, cluster: string, options: { auth?: boolean } = {}): Promise<TestExportStore> {
  const dir = mkdtempSync(join(tmpdir(), `cw-exports-${cluster}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pki = await createExportStorePki({ cluster, trustDomain: 'causeway.internal', dir, days: 2 });
  const starting = startEtcd({
    name: `exports-${cluster}`,
    tlsFiles: {
      trustedCaFile: pki.caCertFile,
      certFile: pki.serverCertFile,
      keyFile: pki.serverKeyFile,
      rootClient: { caFile: pki.caCertFile, certFile: pki.controllerCertFile, keyFile: pki.controllerKeyFile },
    },
  });
  t.teardown(async () => (await starting.catch(() => undefined))?.destroy());
  const etcd = await starting;
  if (options.auth) etcd.enableAuth();
  const tls = { ca: pki.caCertFile, cert: pki.controllerCertFile, key: pki.controllerKeyFile };
  const config: ExportStoreConfig = { endpoints: etcd.endpoints, tls, dialTimeoutMs: 2000 };
  const rootConnection: EtcdConnection = { endpoints: etcd.endpoints, tls, dialTimeoutMs: 2000 };
  const root = connectFederationStore(rootConnection);
  t.teardown(() => root.close());
  return { pki, etcd, config, root, rootConnection };
}
