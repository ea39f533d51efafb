import { mkdir, open } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import { CaFiles, generatePkcs12Password, mintJoinToken, type IntermediateCa } from '../ca/index.js';
import {
  NETWORK_LABEL,
  WorkloadConfig,
  controllerSni,
  dnsLabelProblem,
  host as hostSchema,
  parseWithSchema,
  workloadGroupEndpointId,
  type ClusterConfig,
  type Locality,
  type WorkloadGroup,
} from '../mesh/index.js';
import { ControllerErrorCodes } from './errors.js';
import { WorkloadError, workloadGroupIdentity } from './workload-groups.js';

/** File names inside a bundle directory (and inside `installDir` on the host). */
export const BundleFiles = {
  config: 'sidecar.yaml',
  trustBundle: 'trust-bundle.pem',
  joinToken: 'join-token',
  unit: 'causeway-sidecar.service',
  install: 'install.sh',
  /** With `pkcs12`: the password of `<stateDir>/workload.p12`, which the sidecar keeps fresh. */
  pkcs12Password: 'workload.p12.password',
} as const;

export const BundleDefaults = {
  installDir: '/etc/causeway',
  stateDir: '/var/lib/causeway',
  causewayBin: '/usr/local/bin/causeway',
  user: 'causeway',
  ttlSeconds: 3600,
} as const;

export interface WorkloadBundleOptions {
  /** The cluster the host joins (name, locality, trust and mesh domains). */
  readonly cluster: ClusterConfig;
  readonly group: WorkloadGroup;
  /** The cluster's intermediate CA (`--ca DIR`): it signs the join token and gives the trust bundle. */
  readonly ca: IntermediateCa;
  /** `host:port` of the controller's gRPC port, or of the east-west gateway when `viaGateway`. */
  readonly controllerAddress: string;
  /** The host sits in another network: reach the controller through the gateway by its SNI. */
  readonly viaGateway: boolean;
  /** The address peers reach the host's sidecar at (its endpoint's address). */
  readonly address: string;
  readonly outDir: string;
  /** Join token lifetime; default 1 h. It only has to last until the host's first certificate. */
  readonly ttlSeconds?: number;
  /** Where the files live on the host (paths inside sidecar.yaml and the unit). */
  readonly installDir?: string;
  /** The sidecar's state directory on the host (certificates, last snapshot). */
  readonly stateDir?: string;
  /** The causeway CLI on the host, for `ExecStart=`. */
  readonly causewayBin?: string;
  /** The user the sidecar runs as. */
  readonly user?: string;
  /** Default: the cluster's locality. */
  readonly locality?: Locality;
  readonly inboundPort?: number;
  /** The sidecar's DNS port (default 15053); below 1024 the unit grants CAP_NET_BIND_SERVICE. */
  readonly dnsPort?: number;
  /**
   * The host's network (label `causeway.io/network` on its endpoint), when it is not the
   * cluster's: default, with `viaGateway`, the group's name. Cluster workloads with a
   * `networkGateway` reach such hosts through the gateway, and the host reaches them so.
   */
  readonly network?: string;
  /**
   * Also have the sidecar keep `<stateDir>/workload.p12` (key, chain, trust bundle) for a
   * JVM or .NET app on the host: the bundle carries a generated password (0600) and the
   * sidecar config's `sidecar.pkcs12`.
   */
  readonly pkcs12?: boolean;
  readonly now?: Date;
}

export interface WorkloadBundle {
  readonly dir: string;
  readonly files: { readonly config: string; readonly trustBundle: string; readonly joinToken: string; readonly unit: string; readonly install: string; readonly pkcs12Password?: string };
  /** With `pkcs12`: where the keystore appears on the host once the sidecar has its certificate. */
  readonly pkcs12File?: string;
  /** The one SPIFFE ID the token lets the host obtain. */
  readonly identity: string;
  /** The endpoint the host registers: `<group>-<address>`. */
  readonly endpointId: string;
  readonly tokenExpiresAt: Date;
  /** The sidecar config as written (validated with the shared WorkloadConfig schema). */
  readonly sidecarConfig: WorkloadConfig;
}

const invalid = (message: string) => new WorkloadError(ControllerErrorCodes.workloadBundleInvalid, message);

/**
 * Writes everything a VM or bare-metal host needs to join the mesh as a host of `group`:
 * the sidecar config, the trust bundle, a join token for the group's identity only, a
 * systemd unit and an install script. The token (the only secret) is written 0600;
 * certificates are made on the host, in the state directory, and never leave it.
 */
export async function writeWorkloadBundle(options: WorkloadBundleOptions): Promise<WorkloadBundle> {
  const { cluster: clusterConfig, group, ca } = options;
  const cluster = clusterConfig.cluster.name;
  const trustDomain = clusterConfig.trustDomain;
  if (ca.cluster !== cluster) throw invalid(`--ca holds the intermediate of cluster ${ca.cluster}, but the config is cluster ${cluster}; use that cluster's CA directory, or its tokens will be refused`);
  if (ca.trustDomain !== trustDomain) throw invalid(`--ca is for trust domain ${ca.trustDomain}, the cluster config says ${trustDomain}`);
  if (!/^[^\s:]+:\d{1,5}$/.test(options.controllerAddress)) throw invalid(`--controller must be host:port (got "${options.controllerAddress}")`);
  if (!hostSchema.safeParse(options.address).success) throw invalid(`--address must be a host name or IP address (got "${options.address}")`);
  const installDir = options.installDir ?? BundleDefaults.installDir;
  const stateDir = options.stateDir ?? BundleDefaults.stateDir;
  const causewayBin = options.causewayBin ?? BundleDefaults.causewayBin;
  const user = options.user ?? BundleDefaults.user;
  for (const [flag, path] of [['--install-dir', installDir], ['--state-dir', stateDir], ['--causeway-bin', causewayBin]] as const) {
    if (!isAbsolute(path)) throw invalid(`${flag} must be an absolute path on the host (got "${path}")`);
    if (/\s/.test(path)) throw invalid(`${flag} must not contain white space (got "${path}")`);
  }
  if (!/^[a-z_][a-z0-9_-]{0,31}$/.test(user)) throw invalid(`--user must be a system user name (got "${user}")`);

  const network = options.network ?? (options.viaGateway ? group.name : undefined);
  if (network !== undefined && dnsLabelProblem(network)) throw invalid(`--network: ${dnsLabelProblem(network)}`);
  const identity = workloadGroupIdentity(group, trustDomain);
  const ttlSeconds = options.ttlSeconds ?? BundleDefaults.ttlSeconds;
  const now = options.now ?? new Date();
  // mintJoinToken bounds the lifetime (1 s … 7 days) and names only `identity`.
  const token = mintJoinToken(ca, { spiffeId: identity, ttlSeconds, now });
  const tokenExpiresAt = new Date(Math.floor(now.getTime() / 1000) * 1000 + ttlSeconds * 1000);

  const draft = {
    cluster,
    locality: options.locality ?? clusterConfig.cluster.locality,
    trustDomain,
    meshDomain: clusterConfig.meshDomain,
    namespace: group.namespace,
    service: group.service,
    serviceAccount: group.serviceAccount,
    workloadGroup: group.name,
    labels: network ? { ...group.labels, [NETWORK_LABEL]: network } : { ...group.labels },
    ports: group.ports,
    controller: { address: options.controllerAddress, viaGateway: options.viaGateway },
    // Outside the cluster networks, the gateway is the way to the cluster's endpoints too.
    ...(options.viaGateway ? { networkGateway: options.controllerAddress } : {}),
    advertiseAddress: options.address,
    ...(options.inboundPort !== undefined ? { inboundPort: options.inboundPort } : {}),
    ...(options.dnsPort !== undefined ? { dnsPort: options.dnsPort } : {}),
    stateDir,
    joinTokenFile: posix.join(installDir, BundleFiles.joinToken),
    trustBundleFile: posix.join(installDir, BundleFiles.trustBundle),
    ...(group.probe ? { probe: group.probe } : {}),
  };
  const sidecarConfig = parseWithSchema(WorkloadConfig, draft, 'generated sidecar config');
  const endpointId = workloadGroupEndpointId(group.name, options.address);

  const dir = options.outDir;
  const files = {
    config: join(dir, BundleFiles.config),
    trustBundle: join(dir, BundleFiles.trustBundle),
    joinToken: join(dir, BundleFiles.joinToken),
    unit: join(dir, BundleFiles.unit),
    install: join(dir, BundleFiles.install),
    ...(options.pkcs12 ? { pkcs12Password: join(dir, BundleFiles.pkcs12Password) } : {}),
  };
  const header = [
    `# Causeway sidecar for ${group.service}.${group.namespace}, workload group ${group.name}, cluster ${cluster}.`,
    `# Written by \`causeway workload bundle\` on ${now.toISOString()}; install it as ${posix.join(installDir, BundleFiles.config)}.`,
    `# The host registers as endpoint ${endpointId} with identity ${identity}.`,
    options.viaGateway ? `# The controller is reached through the east-west gateway ${options.controllerAddress} by SNI ${controllerSni(cluster, trustDomain)}.` : `# The controller is reached directly at ${options.controllerAddress}.`,
    '',
  ].join('\n');
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // On port 53 the sidecar is the host's resolver: forwarding other names to "the host's resolver" would loop.
    const dns53 = sidecarConfig.dnsPort === 53;
    const tuningNotes = [
      ...(dns53 ? ['# The host resolves through this sidecar (DNS on 53): names outside the mesh are refused, not forwarded to itself.'] : []),
      ...(options.pkcs12 ? [`# The sidecar keeps ${posix.join(stateDir, CaFiles.workloadPkcs12)} (0600, its user's) fresh for a JVM or .NET app; password in ${posix.join(installDir, BundleFiles.pkcs12Password)}.`] : []),
    ];
    const tuningValues = {
      ...(dns53 ? { dns: { outside: 'refuse' } } : {}),
      ...(options.pkcs12 ? { pkcs12: { passwordFile: posix.join(installDir, BundleFiles.pkcs12Password) } } : {}),
    };
    const tuning = tuningNotes.length > 0 ? `${tuningNotes.join('\n')}\n${stringifyYaml({ sidecar: tuningValues })}` : '';
    await put(files.config, header + stringifyYaml(draft) + tuning, 0o644);
    await put(files.trustBundle, ca.trustBundlePem.endsWith('\n') ? ca.trustBundlePem : `${ca.trustBundlePem}\n`, 0o644);
    await put(files.joinToken, `${token}\n`, 0o600);
    const lowPort = [sidecarConfig.dnsPort, sidecarConfig.inboundPort].some((p) => p > 0 && p < 1024);
    await put(files.unit, systemdUnit({ group, cluster, installDir, stateDir, causewayBin, user, bindsLowPorts: lowPort }), 0o644);
    if (files.pkcs12Password) await put(files.pkcs12Password, `${generatePkcs12Password()}\n`, 0o600);
    await put(files.install, installScript({ installDir, stateDir, user, pkcs12: options.pkcs12 ?? false }), 0o755);
  } catch (error) {
    throw new WorkloadError(ControllerErrorCodes.workloadBundleWriteFailed, `cannot write the bundle to ${dir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, { cause: error });
  }
  return { dir, files, identity, endpointId, tokenExpiresAt, sidecarConfig, ...(options.pkcs12 ? { pkcs12File: posix.join(stateDir, CaFiles.workloadPkcs12) } : {}) };
}

async function put(file: string, text: string, mode: number): Promise<void> {
  const handle = await open(file, 'w', mode);
  try {
    // The open mode applies only to a new file and passes through the umask: set it exactly,
    // before the content, so a token never sits in a file others may read.
    await handle.chmod(mode);
    await handle.writeFile(text);
  } finally {
    await handle.close();
  }
}

/**
 * The systemd unit: the sidecar as its own user, restarted on failure, with a private
 * state directory (0700) and a umask that makes every key and certificate it writes 0600.
 */
export function systemdUnit(o: { group: WorkloadGroup; cluster: string; installDir: string; stateDir: string; causewayBin: string; user: string; bindsLowPorts?: boolean }): string {
  const stateUnderVarLib = o.stateDir.startsWith('/var/lib/') && o.stateDir.length > '/var/lib/'.length;
  const state = stateUnderVarLib
    ? [`StateDirectory=${o.stateDir.slice('/var/lib/'.length)}`, 'StateDirectoryMode=0700']
    : [`# stateDir ${o.stateDir} is outside /var/lib: systemd cannot manage it as StateDirectory=.`, `ReadWritePaths=${o.stateDir}`];
  return [
    '[Unit]',
    `Description=Causeway sidecar of ${o.group.service}.${o.group.namespace} (workload group ${o.group.name}, cluster ${o.cluster})`,
    'Documentation=https://github.com/causeway-mesh/causeway/blob/main/docs/vm-onboarding.md',
    'Wants=network-online.target',
    'After=network-online.target',
    '',
    '[Service]',
    'Type=simple',
    `User=${o.user}`,
    `Group=${o.user}`,
    `ExecStart=${o.causewayBin} sidecar --config ${posix.join(o.installDir, BundleFiles.config)}`,
    'Restart=on-failure',
    'RestartSec=2s',
    // SIGTERM deregisters the endpoint at once; a crash leaves it to the lease.
    'KillSignal=SIGTERM',
    'TimeoutStopSec=15s',
    ...state,
    'UMask=0077',
    // Only when the config asks for a port below 1024 (e.g. DNS on 53 for the host's resolver).
    ...(o.bindsLowPorts ? ['AmbientCapabilities=CAP_NET_BIND_SERVICE', 'CapabilityBoundingSet=CAP_NET_BIND_SERVICE'] : ['CapabilityBoundingSet=']),
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'PrivateTmp=yes',
    'PrivateDevices=yes',
    'ProtectKernelTunables=yes',
    'ProtectKernelModules=yes',
    'ProtectControlGroups=yes',
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK',
    'LimitNOFILE=65536',
    '',
    '[Install]',
    'WantedBy=multi-user.target',
    '',
  ].join('\n');
}

/** Installs the bundle on a systemd host (run as root from the bundle directory). */
export function installScript(o: { installDir: string; stateDir: string; user: string; pkcs12?: boolean }): string {
  return [
    '#!/bin/sh',
    '# Installs this Causeway bundle on a systemd host. Run as root from the bundle directory.',
    'set -eu',
    'cd "$(dirname "$0")"',
    `id -u ${o.user} >/dev/null 2>&1 || useradd --system --no-create-home --home-dir ${o.stateDir} --shell /usr/sbin/nologin ${o.user}`,
    `install -d -m 0755 ${o.installDir}`,
    `install -m 0644 ${BundleFiles.config} ${BundleFiles.trustBundle} ${o.installDir}/`,
    `install -m 0600 -o ${o.user} -g ${o.user} ${BundleFiles.joinToken} ${o.installDir}/${BundleFiles.joinToken}`,
    ...(o.pkcs12 ? [`install -m 0600 -o ${o.user} -g ${o.user} ${BundleFiles.pkcs12Password} ${o.installDir}/${BundleFiles.pkcs12Password}`] : []),
    `install -m 0644 ${BundleFiles.unit} /etc/systemd/system/${BundleFiles.unit}`,
    'systemctl daemon-reload',
    `systemctl enable --now ${BundleFiles.unit}`,
    `echo "causeway-sidecar started; follow it with: journalctl -u ${BundleFiles.unit} -f"`,
    '',
  ].join('\n');
}
