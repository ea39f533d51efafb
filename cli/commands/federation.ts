import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { issueClientCertificate, MAX_CLIENT_CERTIFICATE_DAYS, type ClientCertificate } from '../../ca/index.js';
import {
  CausewayError,
  EtcdKeys,
  Gateway,
  UsageError,
  federationIdentity,
  createMetricsRegistry,
  decodeCatalogValue,
  loadConfigFile,
  logger,
  startObservabilityServer,
  type ClusterConfig,
  type ObservabilityServer,
} from '../../mesh/index.js';
import { CommandLifecycle, DEFAULT_DRAIN_TIMEOUT_MS, drainTimeoutFlag } from '../lifecycle.js';
import {
  connectFederationStore,
  Federation,
  FederationError,
  FederationErrorCodes,
  HeartbeatPublisher,
  grantPeerAccess,
  peerRoleName,
  peerUserName,
  publishExportedCluster,
  readClusterStatus,
  renderClusterStatus,
  revokePeerAccess,
  type PeerAccess,
} from '../../federation/index.js';
import type { EtcdStore } from '../../store/index.js';
import { namingConfigFile, observabilityPortOptions, withObservabilityFlags, type ObservabilityPortFlags } from '../port-flags.js';

const CONFIG_HELP = 'cluster config (YAML)';

async function withLocalStore<T>(config: ClusterConfig, fn: (store: EtcdStore) => Promise<T>): Promise<T> {
  const store = connectFederationStore(config.etcd);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

async function publishClusterRecord(config: ClusterConfig, store: EtcdStore): Promise<void> {
  const listed = await store.list(EtcdKeys.gatewaysPrefix);
  const gateways = listed.entries.flatMap((e) => {
    const d = decodeCatalogValue(Gateway, e.key, e.value);
    return d.ok ? [{ address: d.value.address, port: d.value.port }] : [];
  });
  if (gateways.length === 0 && config.gateway.advertiseAddress) gateways.push({ address: config.gateway.advertiseAddress, port: config.gateway.port });
  await publishExportedCluster(store, {
    name: config.cluster.name,
    locality: config.cluster.locality,
    network: config.cluster.network,
    trustDomain: config.trustDomain,
    gateways,
  });
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
  const registry = createMetricsRegistry('federation');
  // Before anything starts: a signal while etcd or a peer is not up yet stops it too.
  const lifecycle = new CommandLifecycle({ component: 'federation', drainTimeoutMs, logger: log });
  const local = connectFederationStore(config.etcd);
  const federation = new Federation(Federation.optionsFrom(config, { registry, local, logger: log }));
  let heartbeat: HeartbeatPublisher | undefined;
  let server: ObservabilityServer | undefined;
  lifecycle.onStop(async (steps) => {
    await steps.run('observability server', async () => server?.close());
    await steps.run('heartbeat', async () => heartbeat?.stop());
    await steps.run('federation links', () => federation.stop());
    await steps.run('etcd client', () => local.close());
  });
  try {
    // Bound before anything is written to etcd: a port in use fails start-up and leaves no heartbeat behind.
    server = await namingConfigFile(options.config, () =>
      startObservabilityServer({
        host: config.observability.host,
        readyPort: config.observability.readyPort,
        metricsPort: config.observability.metricsPort,
        registry,
        readiness: () => federation.readiness(),
      }),
    );
    await federation.start();
    if (options.heartbeat) {
      await publishClusterRecord(config, local);
      heartbeat = new HeartbeatPublisher({ cluster: config.cluster.name, store: local, intervalMs: config.federation.heartbeatIntervalMs, logger: log });
      await heartbeat.start();
    }
  } catch (error) {
    if (lifecycle.stopping) await lifecycle.untilExit();
    await lifecycle.closeAfterFailedStart();
    throw error;
  }
  log.info({ readyPort: server.readyPort, metricsPort: server.metricsPort, links: config.links.map((l) => l.peer) }, 'federation running');
  void federation.whenReady().then((r) => log.info({ details: r.details }, 'federation ready'));
  await lifecycle.untilExit();
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
    .command('grant')
    .description(`let a peer read this cluster's ${EtcdKeys.exportsPrefix} and nothing else: creates an etcd role and a password-less user (the CN of the client certificate you issue to the peer); with --client-ca and --client-ca-key, also issues that certificate and the peer's links[] entry`)
    .requiredOption('--peer <name>', 'the peer cluster')
    .option('--user <cn>', 'etcd user = CN of the peer client certificate (default causeway-peer-<peer>)')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .option('--client-ca <pem>', "the CA certificate in this etcd's --trusted-ca-file: issue the peer's client certificate from it")
    .option('--client-ca-key <pem>', "that CA's private key")
    .option('--out <dir>', 'where the peer credentials go (default ./<peer>-at-<cluster>)')
    .option('--days <n>', 'validity of the peer certificate in days', '365')
    .option('--endpoint <url...>', "this cluster's etcd as the peer reaches it (default: etcd.endpoints of the config)")
    .option('--json', 'print the grant as JSON')
    .action(async (options: GrantOptions) => {
      const config = loadConfigFile('cluster', options.config);
      EtcdKeys.peerImportsPrefix(options.peer); // validates the peer name before it names a folder
      // Every flag, file and the CA are checked and the certificate made before the grant.
      const request = peerCredentialsRequest(options, config);
      const user = options.user ?? peerUserName(options.peer);
      const certificate = request ? await issuePeerCertificate(request, user, config) : undefined;
      const access = await withLocalStore(config, (store) => grantPeerAccess(store, { peer: options.peer, user }));
      const issued = request && certificate ? await writePeerCredentials(request, certificate, access, config) : undefined;
      if (options.json) {
        process.stdout.write(`${JSON.stringify({ ...access, ...(issued ? { credentials: issued } : {}) }, null, 2)}\n`);
        return;
      }
      const lines = [`granted: etcd user "${access.user}" (role "${access.role}") may read ${access.prefix} and nothing else`];
      if (issued) {
        lines.push(
          `issued: ${issued.certFile} (CN=${access.user}, until ${issued.notAfter}), ${issued.keyFile} (0600), ${issued.caFile}`,
          `checked with it: ${issued.check}`,
          `next: copy ${issued.dir} to ${access.peer} and add ${issued.linkFile} to the links[] of ${access.peer}'s cluster config (fix the paths if they move)`,
        );
      } else {
        lines.push(
          `next: issue peer ${access.peer} a client certificate with CN=${access.user} from the CA in etcd's --trusted-ca-file (or rerun with --client-ca and --client-ca-key),`,
          `      and put it in the links[] entry for ${config.cluster.name} of ${access.peer}'s cluster config`,
        );
      }
      if (!access.authEnabled) lines.push('warning: etcd auth is NOT enabled here, so nothing enforces this yet; see federation/README.md (etcdctl auth enable)');
      process.stdout.write(`${lines.join('\n')}\n`);
    });

  federation
    .command('revoke')
    .description("remove a peer's etcd user and role (its link stops at the next request)")
    .requiredOption('--peer <name>', 'the peer cluster')
    .option('--user <cn>', 'etcd user (default causeway-peer-<peer>)')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .action(async (options: { peer: string; user?: string; config: string }) => {
      const config = loadConfigFile('cluster', options.config);
      await withLocalStore(config, (store) => revokePeerAccess(store, { peer: options.peer, ...(options.user ? { user: options.user } : {}) }));
      process.stdout.write(`revoked: etcd user "${options.user ?? peerUserName(options.peer)}" and role "${peerRoleName(options.peer)}"\n`);
    });

  program
    .command('status')
    .description('this cluster, its gateways and its federation links (state, heartbeat age, revision, lag, imports, conflicts) from its etcd')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .option('--json', 'print JSON for machines')
    .action(async (options: { config: string; json?: boolean }) => {
      const config = loadConfigFile('cluster', options.config);
      const status = await withLocalStore(config, (store) => readClusterStatus(store, config));
      process.stdout.write(options.json ? `${JSON.stringify(status, null, 2)}\n` : renderClusterStatus(status));
    });
}

interface GrantOptions {
  peer: string;
  user?: string;
  config: string;
  clientCa?: string;
  clientCaKey?: string;
  out?: string;
  days: string;
  endpoint?: string[];
  json?: boolean;
}

interface PeerCredentialsRequest {
  readonly caCertificatePem: string;
  readonly caPrivateKeyPem: string;
  readonly serverCaFile: string;
  readonly dir: string;
  readonly days: number;
  readonly endpoints: readonly string[];
}

interface IssuedPeerCredentials {
  readonly dir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly caFile: string;
  readonly linkFile: string;
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
function peerCredentialsRequest(options: GrantOptions, config: ClusterConfig): PeerCredentialsRequest | undefined {
  if (!options.clientCa && !options.clientCaKey) {
    if (options.out || options.endpoint) throw new UsageError('--out and --endpoint are for the peer credentials: add --client-ca and --client-ca-key');
    return undefined;
  }
  if (!options.clientCa || !options.clientCaKey) throw new UsageError('--client-ca and --client-ca-key go together: the CA certificate and its key');
  const days = Number(options.days);
  if (!Number.isInteger(days) || days < 1 || days > MAX_CLIENT_CERTIFICATE_DAYS) throw new UsageError(`--days must be a whole number from 1 to ${MAX_CLIENT_CERTIFICATE_DAYS} (got "${options.days}")`);
  const serverCaFile = config.etcd.tls?.ca;
  if (!serverCaFile) {
    throw new UsageError(`${options.config} reaches etcd without TLS (no etcd.tls): a peer client certificate means nothing to an etcd without --client-cert-auth; see federation/README.md`);
  }
  const endpoints = options.endpoint ?? config.etcd.endpoints;
  for (const url of endpoints) {
    if (!/^https:\/\/[^\s/]+$/.test(url)) throw new UsageError(`--endpoint ${url}: expected https://host:port (the peer connects with TLS)`);
  }
  const dir = resolve(options.out ?? `${options.peer}-at-${config.cluster.name}`);
  for (const name of ['key.pem', 'cert.pem']) {
    if (existsSync(join(dir, name))) throw new UsageError(`${join(dir, name)} already exists; pick another --out or remove it (nothing was changed)`);
  }
  return { caCertificatePem: readFlagFile('--client-ca', options.clientCa), caPrivateKeyPem: readFlagFile('--client-ca-key', options.clientCaKey), serverCaFile, dir, days, endpoints };
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
 * Writes the peer's certificate with its key (0600), this etcd's server CA and the peer's
 * links[] entry, then reads the exports with it — and, when auth is on, checks it is refused
 * elsewhere — so a wrong CA shows here, not at the peer.
 */
async function writePeerCredentials(request: PeerCredentialsRequest, issued: ClientCertificate, access: PeerAccess, config: ClusterConfig): Promise<IssuedPeerCredentials> {
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
  const link = [{ peer: config.cluster.name, etcd: { endpoints: [...request.endpoints], tls: { ca: caFile, cert: certFile, key: keyFile } } }];
  writeFileSync(linkFile, `# links[] entry for ${access.peer}'s cluster config: read ${config.cluster.name}'s exports as etcd user ${access.user}\n${stringify(link)}`);

  const asPeer = connectFederationStore({ ...config.etcd, username: undefined, password: undefined, tls: { ca: request.serverCaFile, cert: certFile, key: keyFile } });
  let check: string;
  try {
    const listing = await asPeer.list(EtcdKeys.exportsPrefix).catch((error: unknown) => {
      throw new CausewayError(
        (error as CausewayError).code ?? 'CW_FEDERATION_INTERNAL',
        `the issued certificate cannot read ${EtcdKeys.exportsPrefix} on ${config.etcd.endpoints.join(', ')}: ${(error as Error).message}. Is --client-ca the CA in etcd's --trusted-ca-file? The files in ${dir} are kept; remove them before retrying`,
        { cause: error },
      );
    });
    check = `reads ${EtcdKeys.exportsPrefix} (${listing.entries.length} keys)`;
    if (access.authEnabled) {
      const refused = await asPeer.list(EtcdKeys.endpointsPrefix).then(
        () => false,
        (error: unknown) => error instanceof FederationError && error.code === FederationErrorCodes.etcdPermissionDenied,
      );
      if (!refused) throw new CausewayError(FederationErrorCodes.internal, `the issued certificate can read ${EtcdKeys.endpointsPrefix} too: etcd user ${access.user} has more than this grant; check its roles (etcdctl user get ${access.user})`);
      check += `, refused ${EtcdKeys.endpointsPrefix}`;
    } else {
      check += ' (etcd auth is off: nothing else is refused yet)';
    }
  } finally {
    await asPeer.close();
  }
  return { dir, certFile, keyFile, caFile, linkFile, notAfter: issued.notAfter.toISOString(), check };
}
