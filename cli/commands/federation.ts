import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { issueClientCertificate, MAX_CLIENT_CERTIFICATE_DAYS, MAX_INFRASTRUCTURE_CA_DAYS, type ClientCertificate } from '../../ca/index.js';
import { CausewayError, EtcdKeys, UsageError, exportStoreSni, federationIdentity, loadConfigFile, logger, type ClusterConfig, type EtcdConnection, type ExportStoreConfig } from '../../mesh/index.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, drainTimeoutFlag, runUntilStopped } from '../lifecycle.js';
import {
  connectFederationStore,
  FederationError,
  FederationErrorCodes,
  StandaloneFederation,
  grantPeerAccess,
  peerRoleName,
  peerUserName,
  readClusterStatus,
  renderClusterStatus,
  revokePeerAccess,
  checkPeerUser,
  createExportStorePki,
  exportStoreEtcdCommand,
  EXPORT_STORE_PORT,
  ExportStorePkiFiles,
  ensureExportStoreAuth,
  probeExportStore,
  type PeerAccess,
} from '../../federation/index.js';
import type { EtcdStore } from '../../store/index.js';
import { namingConfigFile, observabilityPortOptions, withObservabilityFlags, type ObservabilityPortFlags } from '../port-flags.js';

const CONFIG_HELP = 'cluster config (YAML)';

/** One etcd client for one command, closed after. */
async function withStore<T>(connection: EtcdConnection, fn: (store: EtcdStore) => Promise<T>): Promise<T> {
  const store = connectFederationStore(connection);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

interface FederationRunFlags extends ObservabilityPortFlags {
  config: string;
  heartbeat?: boolean;
  drainTimeout: string;
}

async function runFederation(options: FederationRunFlags): Promise<void> {
  const config = withObservabilityFlags(loadConfigFile('cluster', options.config), options);
  const drainTimeoutMs = drainTimeoutFlag(options.drainTimeout);
  const log = logger('federation', { cluster: config.cluster.name });
  const federation = new StandaloneFederation(config, { heartbeat: options.heartbeat ?? false, logger: log });
  await runUntilStopped({
    component: 'federation',
    drainTimeoutMs,
    logger: log,
    start: () => namingConfigFile(options.config, () => federation.start()),
    // Also while start() runs, and after it failed: closes what had been opened.
    stop: (_started, steps) => federation.stop(steps),
    stopAfterFailedStart: true,
  });
}

export function registerFederationCommands(program: Command): void {
  const federation = observabilityPortOptions(
    program
      .command('federation')
      .description("mirror linked peers' exported services into this cluster's etcd (runs until SIGINT/SIGTERM); serves /healthz/ready and /metrics")
      .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
      .option('--heartbeat', "also publish this cluster's exports/_cluster and heartbeat (when no controller runs here)"),
  )
    .option('--drain-timeout <ms>', 'longest a stop (SIGTERM, SIGINT, SIGHUP) may take before the process exits anyway, with code 1 and a log line naming what did not close', String(DEFAULT_DRAIN_TIMEOUT_MS))
    .enablePositionalOptions()
    .action((options: FederationRunFlags) => runFederation(options));

  federation
    .command('init')
    .description(`create this cluster's export-store PKI: a CA that signs export-store certificates only, the store's server certificate (SNI exports.<cluster>.cw1.<trust-domain>) and the controller's client certificate (CN=root); prints the etcd flags to run the export store with (port ${EXPORT_STORE_PORT})`)
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .requiredOption('--out <dir>', 'where the CA, certificates and keys (0600) go; existing files are never overwritten')
    .option('--days <n>', "validity of the export store's server certificate and the controller's client certificate in days", '365')
    .option('--ca-days <n>', 'validity of the export-store CA in days; it must outlive every certificate it signs, the peers\' ones from `grant` included', '3650')
    .option('--host <name>', 'another DNS name or IP address the export store answers as (repeatable)', (value: string, previous: string[]) => [...previous, value], [] as string[])
    .option('--json', 'print what was written as JSON')
    .action(async (options: InitOptions) => runExportStoreInit(options));

  federation
    .command('grant')
    .description(
      `let a peer read this cluster's export store (${EtcdKeys.exportsPrefix} and nothing else, never the main etcd): creates an etcd role and a password-less user there (the CN of the peer's client certificate); with the export-store CA (--client-ca, or export-store-ca.pem next to exportStore.tls.ca) also issues that certificate and the peer's links[] entry, which reaches the export store through this cluster's gateway(s)`,
    )
    .requiredOption('--peer <name>', 'the peer cluster')
    .option('--user <cn>', 'etcd user = CN of the peer client certificate (default causeway-peer-<peer>)')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .option('--client-ca <pem>', "the export store's CA from `causeway federation init` (default: export-store-ca.pem next to exportStore.tls.ca, when present)")
    .option('--client-ca-key <pem>', "that CA's private key (default: export-store-ca-key.pem next to it)")
    .option('--out <dir>', 'where the peer credentials go (default ./<peer>-at-<cluster>)')
    .option('--days <n>', 'validity of the peer certificate in days', '365')
    .option('--gateway <host:port>', "this cluster's gateway as the peer reaches it (repeatable: the link fails over between them; default gateway.advertiseAddress:gateway.port of the config)", (value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    .option('--json', 'print the grant as JSON')
    .action(async (options: GrantOptions) => {
      const config = loadConfigFile('cluster', options.config);
      EtcdKeys.peerImportsPrefix(options.peer); // validates the peer name before it names a folder
      const exportStore = config.exportStore;
      if (!exportStore) {
        throw new FederationError(
          FederationErrorCodes.grantRefused,
          `${options.config} has no exportStore: peers read the export store, never the main etcd; run \`causeway federation init\` and set exportStore in the config (federation/README.md "The export store"); nothing was changed`,
        );
      }
      // Every flag, file and the CA are checked and the certificate made before the grant.
      const request = peerCredentialsRequest(options, config, exportStore);
      const user = options.user ?? peerUserName(options.peer);
      // Refuses root, or a user holding more than this peer's role, before any change.
      await withStore(exportStore, (auth) => checkPeerUser(auth, { peer: options.peer, user }));
      const certificate = request ? await issuePeerCertificate(request, user, config) : undefined;
      const access = await withStore(exportStore, async (store) => {
        await ensureExportStoreAuth(store);
        return grantPeerAccess(store, { peer: options.peer, user });
      });
      const issued = request && certificate ? await writePeerCredentials(request, certificate, access, config, exportStore) : undefined;
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ ...access, ...(issued ? { credentials: issued } : {}) }, null, 2)}\n`);
        return;
      }
      const lines = [`granted: export-store user "${access.user}" (role "${access.role}") may read ${access.prefix} and nothing else`];
      if (issued) {
        lines.push(
          `issued: ${issued.certFile} (CN=${access.user}, until ${issued.notAfter}), ${issued.keyFile} (0600), ${issued.caFile}`,
          `checked with it: ${issued.check}`,
          `link: through gateway${issued.gateways.length === 1 ? '' : 's'} ${issued.gateways.join(', ')} to ${exportStoreSni(config.cluster.name, config.trustDomain)}`,
          `next: copy ${issued.dir} to ${access.peer} and add ${issued.linkFile} to the links[] of ${access.peer}'s cluster config (fix the paths if they move)`,
        );
      } else {
        lines.push(
          `next: issue peer ${access.peer} a client certificate with CN=${access.user} from the export store's CA (or rerun with --client-ca and --client-ca-key),`,
          `      and put it in the links[] entry for ${config.cluster.name} of ${access.peer}'s cluster config, with this cluster's gateways`,
        );
      }
      if (!access.authEnabled) lines.push('warning: etcd auth is NOT enabled in the export store, so nothing enforces this yet; see federation/README.md');
      process.stdout.write(`${lines.join('\n')}\n`);
    });

  federation
    .command('revoke')
    .description("remove a peer's etcd user and role from the export store (the main etcd without exportStore); its link says unauthorized from its next request")
    .requiredOption('--peer <name>', 'the peer cluster')
    .option('--user <cn>', 'etcd user (default causeway-peer-<peer>)')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .action(async (options: { peer: string; user?: string; config: string }) => {
      const config = loadConfigFile('cluster', options.config);
      await withStore(config.exportStore ?? config.etcd, (store) => revokePeerAccess(store, { peer: options.peer, ...(options.user ? { user: options.user } : {}) }));
      process.stdout.write(`revoked: etcd user "${options.user ?? peerUserName(options.peer)}" and role "${peerRoleName(options.peer)}"\n`);
    });

  federation
    .command('probe')
    .description("list a peer's exports the way a link does — through its gateway, by the export-store SNI, with these credentials — and print how many; exit 1 with the reason when the export store refuses")
    .requiredOption('--peer <name>', 'the cluster whose export store is probed (named in the SNI)')
    .requiredOption('--gateway <host:port>', "the peer's gateway (repeatable: tried in turn)", (value: string, previous: string[]) => [...previous, value], [] as string[])
    .requiredOption('--tls-ca <pem>', "the peer export store's CA (ca.pem from the peer's `federation grant`)")
    .option('--cert <pem>', 'client certificate (cert.pem from the peer\'s `federation grant`); omitted = none')
    .option('--key <pem>', 'its key')
    .option('--trust-domain <name>', 'the trust domain in the SNI', 'causeway.internal')
    .option('--json', 'print the result as JSON')
    .action(async (options: { peer: string; gateway: string[]; tlsCa: string; cert?: string; key?: string; trustDomain: string; json?: boolean }) => {
      EtcdKeys.peerImportsPrefix(options.peer); // validates the peer name before it names an SNI
      if ((options.cert === undefined) !== (options.key === undefined)) throw new UsageError('give --cert and --key together, or neither');
      const target = options.gateway.join(', ');
      const result = await probeExportStore({ peer: options.peer, gateways: options.gateway, trustDomain: options.trustDomain, ca: options.tlsCa, ...(options.cert ? { cert: options.cert, key: options.key } : {}) }).catch((error: unknown) => {
        // The refusal is the answer a probe looks for: said in one line, exit 1.
        if (!(error instanceof FederationError)) throw error;
        const what = error.code === FederationErrorCodes.etcdPermissionDenied ? 'refused' : 'not reached';
        throw new FederationError(error.code, `${options.peer}'s export store ${what} through ${target}: ${error.message.replace(/\s*\n\s*/g, ' ')}`, { cause: error });
      });
      process.stdout.write(options.json ? `${JSON.stringify(result)}\n` : `${options.peer}: ${result.exports} exports through ${target} (SNI ${result.serverName}, revision ${result.revision})${result.keys.length > 0 ? `: ${result.keys.join(', ')}` : ''}\n`);
    });

  program
    .command('status')
    .description('this cluster, its gateways and its federation links (state, heartbeat age, revision, lag, imports, conflicts) from its etcd')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .option('--json', 'print JSON for machines')
    .option('--all', 'every cluster this one can see — its own and each linked peer — with links, services and their health (the model `causeway ui` shows)')
    .option('--prometheus <url>', 'with --all: a Prometheus server scraping the sidecars, for request rate, 5xx ratio and p99 between clusters')
    .action(async (options: { config: string; json?: boolean; all?: boolean; prometheus?: string }) => {
      const config = loadConfigFile('cluster', options.config);
      if (options.prometheus !== undefined && !options.all) throw new UsageError('--prometheus goes with --all');
      if (options.all) {
        const { readMeshCatalog, renderMeshStatus, PrometheusTraffic, PrometheusCertificates, NO_TRAFFIC, NO_CERTIFICATES } = await import('../../ui/index.js');
        const prometheus = options.prometheus;
        const [catalog, traffic, certificates] = await Promise.all([
          withStore(config.etcd, (store) => readMeshCatalog(store, config)),
          prometheus === undefined ? NO_TRAFFIC : new PrometheusTraffic(prometheus).read(),
          prometheus === undefined ? NO_CERTIFICATES : new PrometheusCertificates(prometheus).read(),
        ]);
        const view = { ...catalog, traffic, certificates, events: [], error: undefined };
        process.stdout.write(options.json ? `${JSON.stringify(view, null, 2)}\n` : renderMeshStatus(view));
        return;
      }
      const status = await withStore(config.etcd, (store) => readClusterStatus(store, config));
      process.stdout.write(options.json ? `${JSON.stringify(status, null, 2)}\n` : renderClusterStatus(status));
    });
}

interface InitOptions {
  config: string;
  out: string;
  days: string;
  caDays: string;
  host: string[];
  json?: boolean;
}

async function runExportStoreInit(options: InitOptions): Promise<void> {
  const config = loadConfigFile('cluster', options.config);
  const days = Number(options.days);
  if (!Number.isInteger(days) || days < 1 || days > MAX_CLIENT_CERTIFICATE_DAYS) throw new UsageError(`--days must be a whole number from 1 to ${MAX_CLIENT_CERTIFICATE_DAYS} (got "${options.days}")`);
  const caDays = Number(options.caDays);
  if (!Number.isInteger(caDays) || caDays < days + 1 || caDays > MAX_INFRASTRUCTURE_CA_DAYS) {
    throw new UsageError(`--ca-days must be a whole number above --days (${days}) and at most ${MAX_INFRASTRUCTURE_CA_DAYS}, so the CA outlives what it signs (got "${options.caDays}")`);
  }
  const cluster = config.cluster.name;
  const pki = await createExportStorePki({ cluster, trustDomain: config.trustDomain, dir: options.out, days, caDays, hosts: options.host });
  const etcd = exportStoreEtcdCommand(pki, { cluster });
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ ...pki, etcd }, null, 2)}\n`);
    return;
  }
  const ctl = `etcdctl --endpoints https://127.0.0.1:${EXPORT_STORE_PORT} --cacert ${pki.caCertFile} --cert ${pki.controllerCertFile} --key ${pki.controllerKeyFile}`;
  process.stdout.write(
    [
      `wrote ${pki.dir}:`,
      `  ${pki.caCertFile}, ${pki.caKeyFile} (0600): the export store's CA — it signs export-store certificates only; every certificate it signs is a login there`,
      `  ${pki.serverCertFile}, ${pki.serverKeyFile} (0600): the export store's server certificate for ${pki.serverHosts.join(', ')} (until ${pki.notAfter})`,
      `  ${pki.controllerCertFile}, ${pki.controllerKeyFile} (0600): the controller's client certificate, CN=root (writes the export store)`,
      `run the export store (port ${EXPORT_STORE_PORT}):`,
      `  ${etcd.join(' ')}`,
      'then, once, enable auth as root:',
      `  ${ctl} user add root --no-password`,
      `  ${ctl} user grant-role root root`,
      `  ${ctl} auth enable`,
    ].join('\n') + '\n',
  );
}

interface GrantOptions {
  peer: string;
  user?: string;
  config: string;
  clientCa?: string;
  clientCaKey?: string;
  out?: string;
  days: string;
  gateway?: string[];
  json?: boolean;
}

interface PeerCredentialsRequest {
  readonly caCertificatePem: string;
  readonly caPrivateKeyPem: string;
  readonly serverCaFile: string;
  readonly dir: string;
  readonly days: number;
  readonly gateways: readonly string[];
}

interface IssuedPeerCredentials {
  readonly dir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  readonly linkFile: string;
  readonly gateways: readonly string[];
  readonly notAfter: string;
  readonly check: string;
}

function readFlagFile(flag: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new UsageError(`cannot read ${flag} ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
  }
}

/** Checks every flag of the credential issuing before anything is granted or written. */
function peerCredentialsRequest(options: GrantOptions, config: ClusterConfig, exportStore: ExportStoreConfig): PeerCredentialsRequest | undefined {
  let clientCa = options.clientCa;
  let clientCaKey = options.clientCaKey;
  if (!clientCa && !clientCaKey) {
    // `federation init` leaves the CA next to the CA file the controller verifies the export store with.
    const dir = dirname(exportStore.tls.ca);
    const ca = join(dir, ExportStorePkiFiles.caCert);
    const key = join(dir, ExportStorePkiFiles.caKey);
    if (existsSync(ca) && existsSync(key)) [clientCa, clientCaKey] = [ca, key];
  }
  if (!clientCa && !clientCaKey) {
    if (options.out || options.gateway) throw new UsageError('--out and --gateway are for the peer credentials: add --client-ca and --client-ca-key (the export store CA from `causeway federation init`)');
    return undefined;
  }
  if (!clientCa || !clientCaKey) throw new UsageError('--client-ca and --client-ca-key go together: the CA certificate and its key');
  const days = Number(options.days);
  if (!Number.isInteger(days) || days < 1 || days > MAX_CLIENT_CERTIFICATE_DAYS) throw new UsageError(`--days must be a whole number from 1 to ${MAX_CLIENT_CERTIFICATE_DAYS} (got "${options.days}")`);
  const advertised = config.gateway.advertiseAddress ? [`${config.gateway.advertiseAddress}:${config.gateway.port}`] : [];
  const gateways = options.gateway ?? advertised;
  if (gateways.length === 0) {
    throw new UsageError(`peers reach the export store through this cluster's gateway: give --gateway host:port (repeatable), or set gateway.advertiseAddress in ${options.config}; nothing was changed`);
  }
  for (const gateway of gateways) {
    if (!/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/.test(gateway)) throw new UsageError(`--gateway ${gateway}: expected host:port of this cluster's gateway as the peer reaches it`);
  }
  const dir = resolve(options.out ?? `${options.peer}-at-${config.cluster.name}`);
  for (const name of ['key.pem', 'cert.pem']) {
    if (existsSync(join(dir, name))) throw new UsageError(`${join(dir, name)} already exists; pick another --out or remove it (nothing was changed)`);
  }
  return { caCertificatePem: readFlagFile('--client-ca', clientCa), caPrivateKeyPem: readFlagFile('--client-ca-key', clientCaKey), serverCaFile: exportStore.tls.ca, dir, days, gateways };
}

function issuePeerCertificate(request: PeerCredentialsRequest, user: string, config: ClusterConfig): Promise<ClientCertificate> {
  return issueClientCertificate({
    caCertificatePem: request.caCertificatePem,
    caPrivateKeyPem: request.caPrivateKeyPem,
    commonName: user,
    spiffeId: federationIdentity(config.trustDomain),
    days: request.days,
  });
}

/**
 * Checks the issued certificate against this etcd — it reads the exports and, when auth is
 * on, is refused other keys and any write — then writes it with its key (0600), this etcd's
 * server CA and the peer's links[] entry. The checks run on a private staging copy, so a
 * wrong CA or an over-privileged user leaves no credential behind.
 */
async function writePeerCredentials(request: PeerCredentialsRequest, issued: ClientCertificate, access: PeerAccess, config: ClusterConfig, exportStore: ExportStoreConfig): Promise<IssuedPeerCredentials> {
  const check = await checkPeerCredential(request, issued, access, exportStore);
  const { dir } = request;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  const caFile = join(dir, 'ca.pem');
  const linkFile = join(dir, 'link.yaml');
  // A new file (wx) gets mode 0600 minus the umask: never more than 0600.
  writeFileSync(keyFile, issued.privateKeyPem, { mode: 0o600, flag: 'wx' });
  writeFileSync(certFile, issued.certificatePem, { flag: 'wx' });
  copyFileSync(request.serverCaFile, caFile);
  const link = [{ peer: config.cluster.name, gateways: [...request.gateways], tls: { ca: caFile, cert: certFile, key: keyFile } }];
  writeFileSync(
    linkFile,
    `# links[] entry for ${access.peer}'s cluster config: read ${config.cluster.name}'s export store through its gateway(s) as etcd user ${access.user}\n${stringify(link)}`,
  );
  return { dir, certFile, keyFile, caFile, linkFile, gateways: [...request.gateways], notAfter: issued.notAfter.toISOString(), check };
}

/**
 * Uses the issued certificate once, from a private staging folder that is removed after;
 * returns what it proved. It goes to the export store directly (exportStore.endpoints):
 * the gateway may not run yet, and it passes TLS through unchanged anyway.
 */
async function checkPeerCredential(request: PeerCredentialsRequest, issued: ClientCertificate, access: PeerAccess, exportStore: ExportStoreConfig): Promise<string> {
  const staging = mkdtempSync(join(tmpdir(), 'causeway-grant-'));
  const certFile = join(staging, 'cert.pem');
  const keyFile = join(staging, 'key.pem');
  writeFileSync(keyFile, issued.privateKeyPem, { mode: 0o600, flag: 'wx' });
  writeFileSync(certFile, issued.certificatePem, { flag: 'wx' });
  const asPeerConnection: EtcdConnection = { endpoints: exportStore.endpoints, dialTimeoutMs: exportStore.dialTimeoutMs, tls: { ca: request.serverCaFile, cert: certFile, key: keyFile } };
  const asPeer = connectFederationStore(asPeerConnection);
  const failed = (what: string, cause?: unknown) =>
    new CausewayError(
      (cause as CausewayError | undefined)?.code ?? FederationErrorCodes.grantCheckFailed,
      `${what}. No credential was written; the grant of etcd user ${access.user} stays (re-run grant once fixed, or \`causeway federation revoke --peer ${access.peer}\`)`,
      cause === undefined ? {} : { cause },
    );
  try {
    const listing = await asPeer.list(EtcdKeys.exportsPrefix).catch((error: unknown) => {
      throw failed(`the issued certificate cannot read ${EtcdKeys.exportsPrefix} on ${exportStore.endpoints.join(', ')}: ${(error as Error).message}. Is --client-ca the CA in etcd's --trusted-ca-file?`, error);
    });
    let check = `reads ${EtcdKeys.exportsPrefix} (${listing.entries.length} keys)`;
    if (!access.authEnabled) return `${check} (etcd auth is off: nothing else is refused yet)`;
    const refused = await asPeer.list(EtcdKeys.endpointsPrefix).then(
      () => false,
      (error: unknown) => error instanceof FederationError && error.code === FederationErrorCodes.etcdPermissionDenied,
    );
    if (!refused) throw failed(`the issued certificate can read ${EtcdKeys.endpointsPrefix} too: etcd user ${access.user} has more than this grant; check its roles (etcdctl user get ${access.user})`);
    check += `, refused ${EtcdKeys.endpointsPrefix}`;
    // The heartbeat is what a peer would most like to write: fresh-looking exports.
    if (!(await asPeer.writeRefused(EtcdKeys.heartbeat))) {
      throw failed(`the issued certificate may write ${EtcdKeys.heartbeat}: etcd user ${access.user} has more than this grant; check its roles (etcdctl user get ${access.user})`);
    }
    return `${check}, refused a write to ${EtcdKeys.exportsPrefix}`;
  } finally {
    await asPeer.close();
    rmSync(staging, { recursive: true, force: true });
  }
}
