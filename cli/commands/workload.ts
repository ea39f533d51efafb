import type { Command } from 'commander';
import { loadIntermediateCa, MAX_JOIN_TOKEN_TTL_SECONDS } from '../../ca/index.js';
import { WorkloadGroups, connectControllerStore, parseWorkloadGroupFile, writeWorkloadBundle } from '../../controller/index.js';
import type { EtcdStore } from '../../store/index.js';
import { UsageError, dnsLabelProblem, loadConfigFile, parseDurationMs, readConfigText, type ClusterConfig, type Locality } from '../../mesh/index.js';

const CONFIG_HELP = 'cluster config (YAML)';

async function withGroups<T>(config: ClusterConfig, fn: (groups: WorkloadGroups, store: EtcdStore) => Promise<T>): Promise<T> {
  const store = connectControllerStore(config.etcd);
  try {
    return await fn(new WorkloadGroups(store, config.trustDomain), store);
  } finally {
    await store.close();
  }
}

function label(flag: string, value: string): string {
  const problem = dnsLabelProblem(value);
  if (problem) throw new UsageError(`${flag}: ${problem}`);
  return value;
}

/** `--ttl 1h` → whole seconds, 1 s … 7 days. */
export function parseTokenTtl(text: string): number {
  let ms: number;
  try {
    ms = parseDurationMs(text);
  } catch (error) {
    throw new UsageError(`--ttl: ${(error as Error).message}`);
  }
  const seconds = Math.floor(ms / 1000);
  if (seconds < 1 || seconds > MAX_JOIN_TOKEN_TTL_SECONDS) throw new UsageError(`--ttl must be 1s to 7d (got ${text}); keep it short: the token only has to last until the host's first certificate`);
  return seconds;
}

function parsePort(flag: string, text: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port < 1 || port > 65535) throw new UsageError(`${flag} must be a port 1-65535 (got "${text}")`);
  return port;
}

function parseLocality(text: string): Locality {
  const [region = '', zone = '', ...rest] = text.split('/');
  if (rest.length > 0 || !region || !zone) throw new UsageError(`--locality must be <region>/<zone> (got "${text}")`);
  return { region: label('--locality region', region), zone: label('--locality zone', zone) };
}

interface BundleCliOptions {
  group: string;
  namespace: string;
  config: string;
  ca: string;
  controller?: string;
  viaGateway?: boolean;
  address: string;
  out: string;
  ttl: string;
  installDir?: string;
  stateDir?: string;
  causewayBin?: string;
  user?: string;
  locality?: string;
  network?: string;
  dnsPort?: string;
  format: string;
  json?: boolean;
}

async function bundle(options: BundleCliOptions): Promise<void> {
  const ttlSeconds = parseTokenTtl(options.ttl);
  if (options.format !== 'pem' && options.format !== 'pkcs12') throw new UsageError(`--format must be pem or pkcs12 (got "${options.format}")`);
  const locality = options.locality ? parseLocality(options.locality) : undefined;
  const config = loadConfigFile('cluster', options.config);
  const { group, controllerAddress } = await withGroups(config, async (groups) => ({
    group: await groups.get(label('--namespace', options.namespace), label('--group', options.group)),
    controllerAddress: options.controller ?? (await groups.controllerAddress(options.viaGateway ?? false)),
  }));
  const ca = await loadIntermediateCa(options.ca);
  const written = await writeWorkloadBundle({
    cluster: config,
    group,
    ca,
    controllerAddress,
    viaGateway: options.viaGateway ?? false,
    address: options.address,
    outDir: options.out,
    ttlSeconds,
    ...(options.installDir ? { installDir: options.installDir } : {}),
    ...(options.stateDir ? { stateDir: options.stateDir } : {}),
    ...(options.causewayBin ? { causewayBin: options.causewayBin } : {}),
    ...(options.user ? { user: options.user } : {}),
    ...(locality ? { locality } : {}),
    ...(options.network ? { network: label('--network', options.network) } : {}),
    ...(options.dnsPort !== undefined ? { dnsPort: parsePort('--dns-port', options.dnsPort) } : {}),
    pkcs12: options.format === 'pkcs12',
  });
  if (options.json) {
    process.stdout.write(`${JSON.stringify({ dir: written.dir, files: written.files, identity: written.identity, endpointId: written.endpointId, tokenExpiresAt: written.tokenExpiresAt.toISOString(), ...(written.pkcs12File ? { pkcs12File: written.pkcs12File } : {}) }, null, 2)}\n`);
    return;
  }
  process.stdout.write(
    [
      `bundle for workload group ${group.name} (${group.service}.${group.namespace}) written to ${written.dir}:`,
      `  ${written.files.config}        sidecar config (cluster ${config.cluster.name}, controller ${controllerAddress}${options.viaGateway ? ' through the gateway' : ''})`,
      `  ${written.files.trustBundle}   mesh trust bundle`,
      `  ${written.files.joinToken}          join token for ${written.identity} only, 0600, expires ${written.tokenExpiresAt.toISOString()}`,
      `  ${written.files.unit}  systemd unit`,
      ...(written.files.pkcs12Password ? [`  ${written.files.pkcs12Password}  password (0600) of ${written.pkcs12File}, the PKCS#12 keystore the sidecar keeps fresh for a JVM or .NET app`] : []),
      `  ${written.files.install}          installs the above on the host (run as root)`,
      `the host will register as endpoint ${written.endpointId}; copy the directory to it and run install.sh before the token expires`,
      '',
    ].join('\n'),
  );
}

export function registerWorkloadCommands(program: Command): void {
  const workload = program.command('workload').description('VM and bare-metal hosts: workload groups and onboarding bundles');
  const group = workload.command('group').description('workload groups: the template hosts are onboarded from (/causeway/v1/workloads/<ns>/<name>)');

  group
    .command('apply')
    .description("create or replace a workload group; a service it names that does not exist yet is created from the group's ports and identity")
    .requiredOption('-f, --file <file>', 'workload group YAML (name, namespace, service, serviceAccount, labels, ports, probe)')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .option('--export', 'when the service is created here, export it to peer clusters')
    .action(async (options: { file: string; config: string; export?: boolean }) => {
      const input = parseWorkloadGroupFile(readConfigText(options.file), options.file);
      const config = loadConfigFile('cluster', options.config);
      const applied = await withGroups(config, (groups) => groups.apply(input, { exportService: options.export ?? false, source: options.file }));
      const g = applied.group;
      process.stdout.write(
        `workload group ${g.name} in namespace ${g.namespace} ${applied.created ? 'created' : 'updated'}: hosts serve ${g.service}.${g.namespace} as ${applied.identity}` +
          (applied.service === 'created' ? ` (service ${g.service}.${g.namespace} created${options.export ? ', exported' : ''})` : '') +
          '\n',
      );
    });

  group
    .command('list')
    .description('workload groups and the hosts registered from each')
    .option('-n, --namespace <ns>', 'only this namespace')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .option('--json', 'print JSON for machines')
    .action(async (options: { namespace?: string; config: string; json?: boolean }) => {
      const config = loadConfigFile('cluster', options.config);
      const rows = await withGroups(config, async (groups) => {
        const list = await groups.list(options.namespace === undefined ? undefined : label('--namespace', options.namespace));
        return Promise.all(list.map(async (g) => ({ group: g, hosts: await groups.hosts(g) })));
      });
      if (options.json) {
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      if (rows.length === 0) {
        process.stdout.write('no workload groups\n');
        return;
      }
      const table = [['NAMESPACE', 'NAME', 'SERVICE', 'SERVICE ACCOUNT', 'PORTS', 'HOSTS'], ...rows.map(({ group: g, hosts }) => [g.namespace, g.name, g.service, g.serviceAccount, g.ports.map((p) => `${p.name}/${p.port}`).join(','), hosts.length === 0 ? '-' : hosts.map((h) => `${h.address}(${h.health})`).join(',')])];
      const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
      process.stdout.write(table.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
    });

  group
    .command('delete')
    .description('delete a workload group (hosts already onboarded keep running until they stop; no new bundle can be made)')
    .argument('<name>', 'workload group name')
    .option('-n, --namespace <ns>', 'namespace', 'default')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .action(async (name: string, options: { namespace: string; config: string }) => {
      const config = loadConfigFile('cluster', options.config);
      const deleted = await withGroups(config, (groups) => groups.delete(label('--namespace', options.namespace), label('<name>', name)));
      if (!deleted) throw new UsageError(`workload group ${name} in namespace ${options.namespace} does not exist`);
      process.stdout.write(`workload group ${name} in namespace ${options.namespace} deleted\n`);
    });

  workload
    .command('bundle')
    .description("write what a VM or bare-metal host needs to join the mesh as a host of a workload group: sidecar config, trust bundle, join token (0600), systemd unit, install script")
    .requiredOption('-g, --group <name>', 'workload group')
    .option('-n, --namespace <ns>', "the group's namespace", 'default')
    .option('-c, --config <file>', CONFIG_HELP, 'cluster.yaml')
    .requiredOption('--ca <dir>', "the cluster's intermediate CA directory (signs the join token)")
    .option('--controller <host:port>', "the controller's gRPC address, or the east-west gateway's with --via-gateway (default: the first one the cluster record lists)")
    .option('--via-gateway', 'the host is in another network: reach the controller through the gateway by its SNI')
    .requiredOption('--address <host>', "the host's address, where peers reach its sidecar")
    .requiredOption('-o, --out <dir>', 'directory to write the bundle to')
    .option('--ttl <duration>', 'join token lifetime (1s … 7d)', '1h')
    .option('--install-dir <dir>', 'where the files go on the host', '/etc/causeway')
    .option('--state-dir <dir>', "the sidecar's state directory on the host (certificates)", '/var/lib/causeway')
    .option('--causeway-bin <path>', 'the causeway CLI on the host', '/usr/local/bin/causeway')
    .option('--user <name>', 'system user the sidecar runs as', 'causeway')
    .option('--locality <region/zone>', "the host's locality (default: the cluster's)")
    .option('--network <name>', "the host's network, labelled on its endpoint (default with --via-gateway: the group's name); endpoints in other networks are reached through the gateway")
    .option('--dns-port <port>', "the sidecar's DNS port on the host (default 15053; 53 lets the host's resolver use it directly)")
    .option('--format <format>', "pem, or pkcs12: the sidecar also keeps <state-dir>/workload.p12 (key, chain, trust bundle) fresh for a JVM or .NET app; the bundle carries its password (0600)", 'pem')
    .option('--json', 'print the result as JSON')
    .action((options: BundleCliOptions) => bundle(options));
}
