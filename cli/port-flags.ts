import type { Command } from 'commander';
import { ListenError, ObservabilityPorts, UsageError, type ObservabilityConfig } from '../mesh/index.js';

/**
 * The port flags every long-running command shares (`causeway controller`, `gateway`,
 * `federation`, `sidecar`): one parser, one help text. Flags override the config file at
 * the command level; the config schema itself does not know them.
 */

/** Parses a port flag's value; 0 lets the system pick a free port. */
export function parsePortFlag(flag: string): (text: string) => number {
  return (text) => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || value > 65535) throw new UsageError(`${flag} must be a port number 0-65535 (got "${text}")`);
    return value;
  };
}

export interface ObservabilityPortFlags {
  readonly readyPort?: number;
  readonly metricsPort?: number;
}

/** Adds `--ready-port` and `--metrics-port` (several components on one host need different ones). */
export function observabilityPortOptions(command: Command): Command {
  return command
    .option(`${ObservabilityPorts.ready.flag} <port>`, `/healthz/ready port, 0 picks one (default: ${ObservabilityPorts.ready.setting}, 15021)`, parsePortFlag(ObservabilityPorts.ready.flag))
    .option(
      `${ObservabilityPorts.metrics.flag} <port>`,
      `/metrics port, 0 picks one; may equal the ready port (default: ${ObservabilityPorts.metrics.setting}, 15090)`,
      parsePortFlag(ObservabilityPorts.metrics.flag),
    );
}

/** The ports the flags set, as an override of the config's observability section. */
export function observabilityOverrides(flags: ObservabilityPortFlags): Partial<Pick<ObservabilityConfig, 'readyPort' | 'metricsPort'>> {
  return {
    ...(flags.readyPort !== undefined ? { readyPort: flags.readyPort } : {}),
    ...(flags.metricsPort !== undefined ? { metricsPort: flags.metricsPort } : {}),
  };
}

/** `config` with its observability ports overridden by the flags (a new object; the loaded config stays frozen). */
export function withObservabilityFlags<C extends { readonly observability: ObservabilityConfig }>(config: C, flags: ObservabilityPortFlags): C {
  const overrides = observabilityOverrides(flags);
  if (Object.keys(overrides).length === 0) return config;
  return { ...config, observability: Object.freeze({ ...config.observability, ...overrides }) };
}

/** Runs a command's start-up; a listener that cannot bind is reported naming the config file its port comes from. */
export async function namingConfigFile<T>(file: string | undefined, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (error) {
    throw error instanceof ListenError && file !== undefined ? error.inConfigFile(file) : error;
  }
}
