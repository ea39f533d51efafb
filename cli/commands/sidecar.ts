import type { Command } from 'commander';
import { loadSidecarConfig, runSidecar } from '../../proxy/index.js';
import { namingConfigFile, observabilityPortOptions, withObservabilityFlags, type ObservabilityPortFlags } from '../port-flags.js';

export function registerSidecarCommands(program: Command): void {
  observabilityPortOptions(
    program
      .command('sidecar')
      .description('run a workload sidecar: loopback listeners + DNS for the app, mTLS inbound on 15006, certificates and discovery from the controller')
      .requiredOption('-c, --config <file>', 'workload YAML (causeway config schema --kind workload; optional `sidecar:` tuning, see proxy/README.md)')
      .option('--endpoint-id <id>', 'stable id of this workload instance (default <service>-<advertiseAddress>-<inboundPort>)'),
  ).action(async (options: ObservabilityPortFlags & { config: string; endpointId?: string }) => {
    const config = withObservabilityFlags(loadSidecarConfig(options.config), options);
    const sidecar = await namingConfigFile(options.config, () => runSidecar(config, options.endpointId ? { endpointId: options.endpointId } : {}));
    const observability = sidecar.observability ? ` ready :${sidecar.observability.readyPort} metrics :${sidecar.observability.metricsPort}` : '';
    process.stdout.write(`sidecar ${config.service}.${config.namespace} (${sidecar.identity.spiffeId}) inbound :${sidecar.inboundPort} dns :${sidecar.dnsPort}${observability}\n`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    await sidecar.close();
  });
}
