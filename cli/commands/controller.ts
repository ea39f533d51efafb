import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { TlsIdentity } from '../../api-client/index.js';
import { CatalogAdmin, Controller, connectControllerStore, parseManifest, parseServiceRef } from '../../controller/index.js';
import { CausewayError, ErrorCodes, UsageError, loadConfigFile, type ClusterConfig } from '../../mesh/index.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, drainTimeoutFlag, runUntilStopped } from '../lifecycle.js';
import { namingConfigFile, observabilityPortOptions, withObservabilityFlags, type ObservabilityPortFlags } from '../port-flags.js';

interface ConfigFlag {
  config?: string;
}

function clusterConfig(flags: ConfigFlag): ClusterConfig {
  if (!flags.config) throw new UsageError('--config <cluster.yaml> is required (its etcd section says where the catalog lives)');
  return loadConfigFile('cluster', flags.config);
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new CausewayError(ErrorCodes.configUnreadable, `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; check the path`, { cause: error });
  }
}

/** Runs `work` with a catalog admin on the config's etcd, closing the connection after. */
async function withAdmin<T>(flags: ConfigFlag, work: (admin: CatalogAdmin) => Promise<T>): Promise<T> {
  const store = connectControllerStore(clusterConfig(flags).etcd);
  try {
    return await work(new CatalogAdmin(store));
  } finally {
    await store.close();
  }
}

function tlsFromDir(dir: string): TlsIdentity {
  return { key: readText(join(dir, 'key.pem')), certChain: readText(join(dir, 'cert-chain.pem')), trustBundle: readText(join(dir, 'trust-bundle.pem')) };
}

const configOption = (cmd: Command) => cmd.option('-c, --config <file>', 'cluster config (YAML); its etcd section is used');

export function registerControllerCommands(program: Command): void {
  observabilityPortOptions(
    program
      .command('controller')
      .description('run the cluster controller: registry on etcd, discovery stream and CA on :15012 (mTLS), exports, health checks, DNS; runs until SIGINT/SIGTERM')
      .option('-c, --config <file>', 'cluster config (YAML)'),
  )
    .option('--advertise-address <host>', 'address written to /causeway/v1/cluster for this controller (default: controller.host, or the host name)')
    .option('--tls-dir <dir>', 'serve with key.pem, cert-chain.pem, trust-bundle.pem from this directory instead of issuing from controller.caDir')
    .option('--active-health-checks', 'probe endpoints of workload groups that declare a probe from the controller (only when the controller can reach them)')
    .option('--no-federation', 'do not run the config\'s federation links in this process (when `causeway federation` runs them)')
    .option('--drain-timeout <ms>', 'longest a stop (SIGTERM, SIGINT, SIGHUP) may take before the process exits anyway, with code 1 and a log line naming what did not close', String(DEFAULT_DRAIN_TIMEOUT_MS))
    .action(async (flags: ConfigFlag & ObservabilityPortFlags & { advertiseAddress?: string; tlsDir?: string; federation: boolean; activeHealthChecks?: boolean; drainTimeout: string }) => {
      const config = withObservabilityFlags(clusterConfig(flags), flags);
      const drainTimeoutMs = drainTimeoutFlag(flags.drainTimeout);
      if (!flags.tlsDir && !config.controller.caDir) throw new UsageError('set controller.caDir in the cluster config (the intermediate from `causeway ca intermediate`), or pass --tls-dir');
      const controller = new Controller({
        config,
        federation: flags.federation,
        healthChecks: { enabled: flags.activeHealthChecks ?? false },
        ...(flags.tlsDir ? { tls: tlsFromDir(flags.tlsDir) } : {}),
        ...(flags.advertiseAddress ? { advertiseAddress: flags.advertiseAddress } : {}),
      });
      await runUntilStopped({
        component: 'controller',
        drainTimeoutMs,
        start: () => namingConfigFile(flags.config, () => controller.start()),
        // Also while start() runs: the controller closes what it had opened.
        async stop(_started, steps) {
          await controller.stop(steps);
          process.stdout.write('controller stopped\n');
        },
        announce: () =>
          process.stdout.write(`controller for cluster ${config.cluster.name} serving gRPC on port ${controller.grpcPort} (ready :${controller.readyPort ?? '-'}, metrics :${controller.metricsPort ?? '-'}${controller.dnsPort ? `, dns :${controller.dnsPort}` : ''})\n`),
      });
    });

  const service = program.command('service').description('services in the cluster catalog');
  configOption(
    service
      .command('apply')
      .description('create or replace services from a YAML file (one or more documents: name, namespace, ports, serviceAccounts, exported?, subsets?)')
      .requiredOption('-f, --file <file>', 'service manifest (YAML)'),
  ).action(async (flags: ConfigFlag & { file: string }) => {
    const docs = parseManifest(readText(flags.file), flags.file, 'service');
    await withAdmin(flags, async (admin) => {
      for (const doc of docs) {
        const spec = await admin.applyService(doc.body, doc.source);
        process.stdout.write(`service ${spec.name}.${spec.namespace} applied${spec.exported ? ' (exported)' : ''}\n`);
      }
    });
  });
  configOption(service.command('list').description('list services as JSON')).action(async (flags: ConfigFlag) => {
    const specs = await withAdmin(flags, (admin) => admin.listServices());
    process.stdout.write(`${JSON.stringify(specs, null, 2)}\n`);
  });
  configOption(service.command('delete').description('remove a service from the catalog').argument('<service.namespace>')).action(async (ref: string, flags: ConfigFlag) => {
    const { name, namespace } = parseServiceRef(ref);
    const deleted = await withAdmin(flags, (admin) => admin.deleteService(name, namespace));
    process.stdout.write(deleted ? `service ${ref} deleted\n` : `service ${ref} was not in the catalog\n`);
  });

  for (const [verb, exported] of [['export', true], ['unexport', false]] as const) {
    configOption(
      program
        .command(verb)
        .description(exported ? 'offer a service to linked peers (the controller publishes it under /causeway/v1/exports/)' : 'stop offering a service to peers')
        .argument('<service.namespace>'),
    ).action(async (ref: string, flags: ConfigFlag) => {
      const { name, namespace } = parseServiceRef(ref);
      await withAdmin(flags, (admin) => admin.setExported(name, namespace, exported));
      process.stdout.write(`service ${ref} ${exported ? 'exported' : 'unexported'}\n`);
    });
  }

  const policy = program.command('policy').description('authorization and traffic policies');
  configOption(
    policy
      .command('apply')
      .description('validate and store policies from a YAML file; each document has kind: AuthorizationPolicy or TrafficPolicy')
      .requiredOption('-f, --file <file>', 'policy manifest (YAML)'),
  ).action(async (flags: ConfigFlag & { file: string }) => {
    const docs = parseManifest(readText(flags.file), flags.file, 'policy');
    await withAdmin(flags, async (admin) => {
      for (const doc of docs) {
        if (doc.kind === 'service') continue;
        const stored = await admin.applyPolicy(doc.kind, doc.body, doc.source);
        process.stdout.write(`${doc.kind} policy ${stored.name}.${stored.namespace} applied\n`);
      }
    });
  });
  configOption(
    policy
      .command('delete')
      .description('remove a policy')
      .argument('<kind>', 'authorization | traffic')
      .argument('<name.namespace>'),
  ).action(async (kind: string, ref: string, flags: ConfigFlag) => {
    if (kind !== 'authorization' && kind !== 'traffic') throw new UsageError(`kind must be authorization or traffic (got "${kind}")`);
    const { name, namespace } = parseServiceRef(ref);
    const deleted = await withAdmin(flags, (admin) => admin.deletePolicy(kind, name, namespace));
    process.stdout.write(deleted ? `${kind} policy ${ref} deleted\n` : `${kind} policy ${ref} did not exist\n`);
  });
}
