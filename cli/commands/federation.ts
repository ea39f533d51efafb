import type { Command } from 'commander';
import {
  EtcdKeys,
  Gateway,
  createMetricsRegistry,
  decodeCatalogValue,
  loadConfigFile,
  logger,
  startObservabilityServer,
  type ClusterConfig,
} from '../../mesh/index.js';
import {
  Etcd3CatalogStore,
  Federation,
  HeartbeatPublisher,
  grantPeerAccess,
  peerRoleName,
  peerUserName,
  publishExportedCluster,
  readClusterStatus,
  renderClusterStatus,
  revokePeerAccess,
  type CatalogStore,
} from '../../federation/index.js';

const CONFIG_HELP = 'cluster config (YAML)';

async function withLocalStore<T>(config: ClusterConfig, fn: (store: CatalogStore) => Promise<T>): Promise<T> {
  const store = Etcd3CatalogStore.connect(config.etcd);
  try {
    return await fn(store);
  } finally {
    store.close();
  }
}

/** Resolves on the first SIGINT or SIGTERM. */
function untilSignalled(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals) => {
      process.off('SIGINT', on).off('SIGTERM', on);
      resolve(signal);
    };
    process.on('SIGINT', on).on('SIGTERM', on);
  });
}

async function publishClusterRecord(config: ClusterConfig, store: CatalogStore): Promise<void> {
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

async function runFederation(options: { config: string; heartbeat?: boolean }): Promise<void> {
  const config = loadConfigFile('cluster', options.config);
  const log = logger('federation', { cluster: config.cluster.name });
  const registry = createMetricsRegistry('federation');
  const local = Etcd3CatalogStore.connect(config.etcd);
  const federation = new Federation(Federation.optionsFrom(config, { registry, local, logger: log }));
  let heartbeat: HeartbeatPublisher | undefined;
  try {
    await federation.start();
    if (options.heartbeat) {
      await publishClusterRecord(config, local);
      heartbeat = new HeartbeatPublisher({ cluster: config.cluster.name, store: local, intervalMs: config.federation.heartbeatIntervalMs, logger: log });
      await heartbeat.start();
    }
    const server = await startObservabilityServer({
      host: config.observability.host,
      readyPort: config.observability.readyPort,
      metricsPort: config.observability.metricsPort,
      registry,
      readiness: () => federation.readiness(),
    });
    log.info({ readyPort: server.readyPort, metricsPort: server.metricsPort, links: config.links.map((l) => l.peer) }, 'federation running');
    void federation.whenReady().then((r) => log.info({ details: r.details }, 'federation ready'));
    const signal = await untilSignalled();
    log.info({ signal }, 'stopping');
    await server.close();
  } finally {
    await heartbeat?.stop();
    await federation.stop();
    local.close();
  }
}

export function registerFederationCommands(program: Command): void {
  const federation = program
    .command('federation')
    .description("mirror linked peers' exported services into this cluster's etcd (runs until SIGINT/SIGTERM); serves /healthz/ready and /metrics")
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .option('--heartbeat', "also publish this cluster's exports/_cluster and heartbeat (when no controller runs here)")
    .enablePositionalOptions()
    .action((options: { config: string; heartbeat?: boolean }) => runFederation(options));

  federation
    .command('grant')
    .description(`let a peer read this cluster's ${EtcdKeys.exportsPrefix} and nothing else: creates an etcd role and a password-less user (the CN of the client certificate you issue to the peer)`)
    .requiredOption('--peer <name>', 'the peer cluster')
    .option('--user <cn>', 'etcd user = CN of the peer client certificate (default causeway-peer-<peer>)')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .option('--json', 'print the grant as JSON')
    .action(async (options: { peer: string; user?: string; config: string; json?: boolean }) => {
      const config = loadConfigFile('cluster', options.config);
      const access = await withLocalStore(config, (store) => grantPeerAccess(store, { peer: options.peer, ...(options.user ? { user: options.user } : {}) }));
      if (options.json) {
        process.stdout.write(`${JSON.stringify(access, null, 2)}\n`);
        return;
      }
      process.stdout.write(
        [
          `granted: etcd user "${access.user}" (role "${access.role}") may read ${access.prefix} and nothing else`,
          `next: issue peer ${access.peer} a client certificate with CN=${access.user} from the CA in etcd's --trusted-ca-file,`,
          `      and put it in the links[] entry for ${config.cluster.name} of ${access.peer}'s cluster config`,
          ...(access.authEnabled ? [] : ['warning: etcd auth is NOT enabled here, so nothing enforces this yet; see federation/README.md (etcdctl auth enable)']),
          '',
        ].join('\n'),
      );
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
