import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { issueClientCertificate } from '../ca/index.js';
import { federationIdentity, type EtcdConnection, type ExportStoreConfig, type LinkConfig } from '../mesh/index.js';
import { connectFederationStore, createExportStorePki, grantPeerAccess, type ExportStorePki } from '../federation/index.js';
import type { EtcdStore } from '../store/index.js';
import { startEtcd, type EtcdServer } from './etcd.js';

const TRUST_DOMAIN = 'causeway.internal';

/** A cluster's export store as `causeway federation init` sets it up: its own PKI, a real etcd with the printed TLS flags. */
export interface ExportStoreServer {
  readonly cluster: string;
  readonly pki: ExportStorePki;
  readonly etcd: EtcdServer;
  /** The controller's `exportStore:` config section. */
  readonly config: ExportStoreConfig;
  /** A root login (CN=root): what the controller holds. */
  readonly root: EtcdStore;
  readonly rootConnection: EtcdConnection;
  /** Closes the root client, stops the etcd and removes its PKI and data. Safe to call twice. */
  destroy(): Promise<void>;
}

export async function startExportStoreServer(cluster: string, options: { auth?: boolean } = {}): Promise<ExportStoreServer> {
  const dir = mkdtempSync(join(tmpdir(), `cw-exports-${cluster}-`));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  let pki: ExportStorePki;
  let etcd: EtcdServer;
  try {
    pki = await createExportStorePki({ cluster, trustDomain: TRUST_DOMAIN, dir, days: 2 });
    etcd = await startEtcd({
      name: `exports-${cluster}`,
      tlsFiles: {
        trustedCaFile: pki.caCertFile,
        certFile: pki.serverCertFile,
        keyFile: pki.serverKeyFile,
        rootClient: { caFile: pki.caCertFile, certFile: pki.controllerCertFile, keyFile: pki.controllerKeyFile },
      },
    });
  } catch (error) {
    removeDir();
    throw error;
  }
  if (options.auth) etcd.enableAuth();
  const tls = { ca: pki.caCertFile, cert: pki.controllerCertFile, key: pki.controllerKeyFile };
  const config: ExportStoreConfig = { endpoints: etcd.endpoints, tls, dialTimeoutMs: 2000 };
  const rootConnection: EtcdConnection = { endpoints: etcd.endpoints, tls, dialTimeoutMs: 2000 };
  const root = connectFederationStore(rootConnection);
  return {
    cluster,
    pki,
    etcd,
    config,
    root,
    rootConnection,
    async destroy() {
      root.close();
      await etcd.destroy();
      removeDir();
    },
  };
}

/**
 * What `causeway federation grant --peer <peer> --gateway …` hands the peer, without its
 * self-check and files: the export-store user and role (`grantPeerAccess`), a client
 * certificate for that user from the export-store CA, and the peer's `links[]` entry
 * through `gateways`. The key and certificate are written into the store's PKI folder.
 */
export async function grantPeerLink(store: ExportStoreServer, options: { peer: string; gateways: readonly string[] }): Promise<LinkConfig> {
  const access = await grantPeerAccess(store.root, { peer: options.peer });
  const issued = await issueClientCertificate({
    caCertificatePem: readFileSync(store.pki.caCertFile, 'utf8'),
    caPrivateKeyPem: readFileSync(store.pki.caKeyFile, 'utf8'),
    commonName: access.user,
    spiffeId: federationIdentity(TRUST_DOMAIN),
    days: 1,
  });
  const dir = join(store.pki.dir, `${options.peer}-at-${store.cluster}`);
  mkdirSync(dir, { mode: 0o700 });
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  writeFileSync(key, issued.privateKeyPem, { mode: 0o600, flag: 'wx' });
  writeFileSync(cert, issued.certificatePem, { flag: 'wx' });
  return { peer: store.cluster, gateways: [...options.gateways], tls: { ca: store.pki.caCertFile, cert, key } };
}
