import type { Command } from 'commander';
import { loadSidecarConfig, runSidecar } from '../../proxy/index.js';
import { CommandLifecycle, DEFAULT_DRAIN_TIMEOUT_MS, drainTimeoutFlag } from '../lifecycle.js';

export function registerSidecarCommands(program: Command): void {
  program
    .command('sidecar')
    .description('run a workload sidecar: loopback listeners + DNS for the app, mTLS inbound on 15006, certificates and discovery from the controller')
    .requiredOption('-c, --config <file>', 'workload YAML (causeway config schema --kind workload; optional `sidecar:` tuning, see proxy/README.md)')
    .option('--endpoint-id <id>', 'stable id of this workload instance (default <service>-<advertiseAddress>-<inboundPort>)')
    .option('--drain-timeout <ms>', 'longest a stop (SIGTERM, SIGINT, SIGHUP) may take before the process exits anyway, with code 1 and a log line naming what did not close', String(DEFAULT_DRAIN_TIMEOUT_MS))
    .action(async (options: { config: string; endpointId?: string; drainTimeout: string }) => {
      const config = loadSidecarConfig(options.config);
      const drainTimeoutMs = drainTimeoutFlag(options.drainTimeout);
      // Before runSidecar(): a signal while the controller is not reachable yet stops it too
      // (the process exits then; what had started is left to its leases).
      const lifecycle = new CommandLifecycle({ component: 'sidecar', drainTimeoutMs });
      let sidecar: Awaited<ReturnType<typeof runSidecar>> | undefined;
      lifecycle.onStop((steps) => steps.run('sidecar', async () => sidecar?.close()));
      try {
        sidecar = await runSidecar(config, options.endpointId ? { endpointId: options.endpointId } : {});
      } catch (error) {
        if (lifecycle.stopping) await lifecycle.untilExit();
        throw error;
      }
      process.stdout.write(`sidecar ${config.service}.${config.namespace} (${sidecar.identity.spiffeId}) inbound :${sidecar.inboundPort} dns :${sidecar.dnsPort}\n`);
      await lifecycle.untilExit();
    });
}
