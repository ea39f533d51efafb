import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInfrastructureCa, issueInfrastructureCertificate } from '../ca/index.js';
import { exportStoreSni } from '../mesh/index.js';
import { FederationError, FederationErrorCodes } from './errors.js';

/** The export store's client port (docs/architecture.md "Ports"); its peer port sits next to it. */
export const EXPORT_STORE_PORT = 2479;
export const EXPORT_STORE_PEER_PORT = 2480;

/** The etcd user the controller writes the export store as: etcd's superuser, whose role may do everything there. */
export const EXPORT_STORE_WRITER = 'root';

/** File names `causeway federation init` writes into its `--out` folder. */
export const ExportStorePkiFiles = {
  caCert: 'export-store-ca.pem',
  caKey: 'export-store-ca-key.pem',
  serverCert: 'export-store.pem',
  serverKey: 'export-store-key.pem',
  controllerCert: 'controller-at-export-store.pem',
  controllerKey: 'controller-at-export-store-key.pem',
} as const;

export interface ExportStorePkiOptions {
  readonly cluster: string;
  readonly trustDomain: string;
  readonly dir: string;
  /** Validity of the server and controller certificates. */
  readonly days: number;
  /** Validity of the CA (default 10 years): longer than `days`, so that `grant` can still issue year-long peer certificates from it. */
  readonly caDays?: number;
  /** Further names or addresses the export store answers as (besides its SNI name, localhost and 127.0.0.1). */
  readonly hosts?: readonly string[];
  readonly now?: Date;
}

export interface ExportStorePki {
  readonly dir: string;
  /** `exports.<cluster>.cw1.<trust-domain>`: what peers send through the gateway, and the server certificate's name. */
  readonly serverName: string;
  /** Every SAN of the server certificate. */
  readonly serverHosts: readonly string[];
  readonly caCertFile: string;
  readonly caKeyFile: string;
  readonly serverCertFile: string;
  readonly serverKeyFile: string;
  readonly controllerCertFile: string;
  readonly controllerKeyFile: string;
  readonly notAfter: string;
}

/**
 * Creates the PKI of a cluster's export store (federation/README.md "The export store"):
 * its own CA, which signs export-store certificates only — with `--client-cert-auth`
 * every certificate it signs is an etcd login, so it must never be the mesh CA — the
 * store's server certificate (the export-store SNI name, localhost, 127.0.0.1 and
 * `hosts`; serverAuth) and the controller's client certificate (CN=root; clientAuth).
 * Refuses to start when any of its files exists: a key is never overwritten.
 */
export async function createExportStorePki(options: ExportStorePkiOptions): Promise<ExportStorePki> {
  const dir = resolve(options.dir);
  const serverName = exportStoreSni(options.cluster, options.trustDomain);
  const files = Object.fromEntries(Object.entries(ExportStorePkiFiles).map(([k, name]) => [k, join(dir, name)])) as Record<keyof typeof ExportStorePkiFiles, string>;
  const existing = Object.values(files).filter((file) => existsSync(file));
  if (existing.length > 0) {
    throw new FederationError(FederationErrorCodes.filesExist, `${existing.join(', ')} already exist${existing.length === 1 ? 's' : ''}; pick another --out or move them away (nothing was written)`);
  }
  const serverHosts = [...new Set([serverName, 'localhost', '127.0.0.1', ...(options.hosts ?? [])])];
  // Whole seconds, as X.509 times are: the certificates may then end exactly with their CA.
  const now = new Date(Math.floor((options.now ?? new Date()).getTime() / 1000) * 1000);
  // Everything is made in memory (and so checked) before the first file is written.
  const ca = await createInfrastructureCa({ commonName: `Causeway export store CA ${options.cluster}`, days: Math.max(options.caDays ?? 3650, options.days + 1), now });
  const issuer = { caCertificatePem: ca.certificatePem, caPrivateKeyPem: ca.privateKeyPem, days: options.days, now };
  const server = await issueInfrastructureCertificate({ ...issuer, commonName: serverName, usage: 'server', hosts: serverHosts });
  const controller = await issueInfrastructureCertificate({ ...issuer, commonName: EXPORT_STORE_WRITER, usage: 'client' });
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // wx: never over an existing file (one made since the check above); keys 0600 minus the umask.
  const secret = (file: string, pem: string) => writeFileSync(file, pem, { mode: 0o600, flag: 'wx' });
  const open = (file: string, pem: string) => writeFileSync(file, pem, { flag: 'wx' });
  secret(files.caKey, ca.privateKeyPem);
  open(files.caCert, ca.certificatePem);
  secret(files.serverKey, server.privateKeyPem);
  open(files.serverCert, server.certificatePem);
  secret(files.controllerKey, controller.privateKeyPem);
  open(files.controllerCert, controller.certificatePem);
  return {
    dir,
    serverName,
    serverHosts,
    caCertFile: files.caCert,
    caKeyFile: files.caKey,
    serverCertFile: files.serverCert,
    serverKeyFile: files.serverKey,
    controllerCertFile: files.controllerCert,
    controllerKeyFile: files.controllerKey,
    notAfter: server.notAfter.toISOString(),
  };
}

/** The TLS flags of the export store's etcd: client certificates required, from this CA only. */
export function exportStoreTlsFlags(pki: Pick<ExportStorePki, 'caCertFile' | 'serverCertFile' | 'serverKeyFile'>): string[] {
  return ['--client-cert-auth', '--trusted-ca-file', pki.caCertFile, '--cert-file', pki.serverCertFile, '--key-file', pki.serverKeyFile];
}

/** A whole etcd command line for the export store on this host (its peer port beside the main etcd's). */
export function exportStoreEtcdCommand(pki: ExportStorePki, options: { cluster: string; dataDir?: string; listenHost?: string }): string[] {
  const client = `https://${options.listenHost ?? '0.0.0.0'}:${EXPORT_STORE_PORT}`;
  const peer = `http://127.0.0.1:${EXPORT_STORE_PEER_PORT}`;
  const name = `exports-${options.cluster}`;
  return [
    'etcd',
    '--name', name,
    '--data-dir', options.dataDir ?? join(pki.dir, 'data'),
    '--listen-client-urls', client,
    '--advertise-client-urls', `https://${pki.serverName}:${EXPORT_STORE_PORT}`,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `${name}=${peer}`,
    ...exportStoreTlsFlags(pki),
  ];
}
