import type { ComposeProject } from './compose-file.js';
import type { FaultHeal, NetworkFault } from './network-faults.js';
import type { ExecResult } from './service-process.js';

/** How a topology is run: `netns` (network namespaces and local processes, needs root) or `docker` (docker-compose against a Docker engine). */
export type TopologyEngineName = 'netns' | 'docker';

/**
 * A topology brought up by one of the engines: what a scenario drives. The netns runner
 * ({@link TopologyRun}) and docker-compose ({@link DockerComposeRun}) both implement it,
 * so one scenario file runs the same steps on either.
 */
export interface RunningTopology {
  readonly engine: TopologyEngineName;
  readonly project: ComposeProject;
  /**
   * The argv prefix that runs the Causeway CLI inside a service (the load client, probes):
   * this checkout's CLI under the runner's Node for netns, the image's `causeway` for Docker.
   */
  readonly cliArgv: readonly string[];
  /** Runs a command inside a service, as `docker exec` does. */
  exec(service: string, argv: readonly string[], options?: { timeoutMs?: number; onOutput?: (chunk: string) => void }): Promise<ExecResult>;
  /** Stops a service (its stop signal, then SIGKILL after its grace period); its network stays. */
  stopService(name: string): Promise<void>;
  /** Starts a stopped service again. */
  startService(name: string): void | Promise<void>;
  /** Waits until a service's healthcheck passes. */
  waitHealthy(service: string, timeoutMs: number): Promise<void>;
  /**
   * Injects a network fault — a partition, delay or loss that drops or holds packets
   * silently (topologies/README.md "Network faults"); returns a line for the report.
   */
  injectFault(fault: NetworkFault): Promise<string>;
  /** Removes exactly what earlier faults added (one partition, one service's delay and loss, or all). */
  healFaults(what: FaultHeal): Promise<string>;
  /** The service's output so far. */
  logsOf(service: string): string | Promise<string>;
  /** Removes everything the run made; returns what could not be removed (empty when all is clean). */
  down(): Promise<string[]>;
}
