import type { Command } from 'commander';
import { loadSidecarConfig, runSidecar } from '../../proxy/index.js';
import { DEFAULT_DRAIN_TIMEOUT_MS, drainTimeoutFlag, runUntilStopped } from '../lifecycle.js';
import { namingConfigFile, observabilityPortOptions, withObservabilityFlags, type ObservabilityPortFlags } from '../port-flags.js';

export function registerSidecarCommands(program: Command): void {
  observabilityPortOptions(
    program
      .command('sidecar')
      .description('run a workload sidecar: loopback listeners + DNS for the app, mTLS inbound on 15006, certificates and discovery from the controller')
      .requiredOption('-c, --config <file>', 'workload YAML (causeway config schema --kind workload; optional `sidecar:` tuning, see proxy/README.md)'),
  )
    .option('--endpoint-id <id>', 'stable id of this workload instance (default <service>-<advertiseAddress>-<inboundPort>)')
    .option('--drain-timeout <ms>', 'longest a stop (SIGTERM, SIGINT, SIGHUP) may take before the process exits anyway, with code 1 and a log line naming what did not close', String(DEFAULT_DRAIN_TIMEOUT_MS))
    .action(async (options: ObservabilityPortFlags & { config: string; endpointId?: string; drainTimeout: string }) => {
      const config = withObservabilityFlags(loadSidecarConfig(options.config), options);
      const drainTimeoutMs = drainTimeoutFlag(options.drainTimeout);
      await runUntilStopped({
        component: 'sidecar',
        drainTimeoutMs,
        start: () => namingConfigFile(options.config, () => runSidecar(config, options.endpointId ? { endpointId: options.endpointId } : {})),
        // A stop while the controller is not reachable yet exits at once; what had started is left to its leases.
        stop: (sidecar, steps) => steps.run('sidecar', async () => sidecar?.close()),
        announce(sidecar) {
          const observability = sidecar.observability ? ` ready :${sidecar.observability.readyPort} metrics :${sidecar.observability.metricsPort}` : '';
          process.stdout.write(`sidecar ${config.service}.${config.namespace} (${sidecar.identity.spiffeId}) inbound :${sidecar.inboundPort} dns :${sidecar.dnsPort} outbound range ${sidecar.outboundRange}${observability}\n`);
        },
      });
    });
}
