import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { logger } from '../../mesh/index.js';
import type { ComposeProject } from './compose-file.js';
import { ContainerNamespaces } from './container-namespaces.js';
import { TopologyErrorCodes, TopologyRuntimeError } from './errors.js';
import { NamespaceFaults, type FaultHeal, type NetworkFault } from './network-faults.js';
import type { RunningTopology } from './running-topology.js';
import { runCaptured, type ExecResult } from './service-process.js';

const log = logger('topology-docker');

/** One container's state as `docker inspect` reports it. */
interface ContainerState {
  readonly service: string;
  readonly status: string;
  readonly exitCode: number;
  /** `starting`, `healthy`, `unhealthy`, or '' without a healthcheck. */
  readonly health: string;
  /** Its main process on the engine's host while it runs, else 0. */
  readonly pid: number;
}

/** Runs a program to its end (or until `timeoutMs`, then SIGKILL), collecting its output. */
function runProgram(argv: readonly string[], options: { timeoutMs: number; onOutput?: ((chunk: string) => void) | undefined }): Promise<ExecResult> {
  return runCaptured(argv[0]!, argv.slice(1), { env: process.env, detached: false, timeoutMs: options.timeoutMs, onOutput: options.onOutput });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A topology run by docker-compose against a Docker engine (`DOCKER_HOST` is honoured,
 * as docker-compose and docker honour it): `up -d`, then waiting for every healthcheck
 * and one-shot; scenario steps through `docker-compose exec -T`, `stop` and `start`;
 * `down -v` removes containers, networks and volumes. The images (causeway:dev, etcd) must
 * exist on the engine: `docker build -t causeway:dev .`, and scripts/offline-base-images.sh
 * where no registry answers.
 */
export class DockerComposeRun implements RunningTopology {
  readonly engine = 'docker' as const;
  readonly project: ComposeProject;
  /** The image's own CLI (its ENTRYPOINT), on the PATH of every causeway service. */
  readonly cliArgv: readonly string[] = ['causeway'];
  #downing: Promise<string[]> | undefined;
  readonly #faults: NamespaceFaults;
  /** Where the fault steps' rule sets are written before they are loaded; removed at `down`. */
  readonly #faultDir: string;

  private constructor(project: ComposeProject) {
    this.project = project;
    this.#faultDir = join(tmpdir(), `causeway-faults-${project.name}-${randomBytes(3).toString('hex')}`);
    this.#faults = new NamespaceFaults(project, new ContainerNamespaces(project, this), this.#faultDir);
  }

  /**
   * Brings the project up and resolves once every service has started, every healthcheck
   * passed and every one-shot finished with 0 (like `docker-compose up --wait`). On any
   * failure everything is removed (`down -v`) before the error, with the failing
   * services' last log lines, is thrown.
   */
  static async up(project: ComposeProject, options: { timeoutMs?: number; onCreated?: (run: DockerComposeRun) => void } = {}): Promise<DockerComposeRun> {
    const run = new DockerComposeRun(project);
    options.onCreated?.(run);
    const deadline = Date.now() + (options.timeoutMs ?? 120_000);
    try {
      const up = await run.compose(['up', '-d', '--no-color', '--remove-orphans'], { timeoutMs: Math.max(1000, deadline - Date.now()) });
      if (up.exitCode !== 0) {
        throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `docker-compose up ${up.timedOut ? 'timed out' : `failed (exit ${up.exitCode})`}: ${(up.stderr || up.stdout).trim().split('\n').slice(-10).join('\n')}`);
      }
      let pending: string[] = [];
      for (;;) {
        const states = await run.states();
        const broken = states.filter((s) => s.health === 'unhealthy' || (s.status === 'exited' && s.exitCode !== 0) || s.status === 'dead');
        if (broken.length > 0) {
          throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, broken.map((s) => (s.health === 'unhealthy' ? `service "${s.service}" is unhealthy` : `service "${s.service}" exited with code ${s.exitCode}`)).join('; '));
        }
        pending = states.filter((s) => s.health === 'starting' || s.status === 'created' || s.status === 'restarting').map((s) => s.service);
        const missing = [...project.services.keys()].filter((name) => !states.some((s) => s.service === name));
        if (pending.length === 0 && missing.length === 0) break;
        if (Date.now() > deadline) throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `timed out waiting for every healthcheck to pass; still starting: ${[...pending, ...missing].join(', ')}`);
        await sleep(500);
      }
      log.debug({ project: project.name }, 'topology up (docker)');
      return run;
    } catch (error) {
      const tails = await run.#failedServiceLogs().catch(() => '');
      await run.down();
      if (tails && error instanceof Error) error.message += `\n${tails}`;
      throw error;
    }
  }

  /** Runs `docker-compose -p <project> -f <file> …`. */
  compose(args: readonly string[], options: { timeoutMs?: number; onOutput?: (chunk: string) => void } = {}): Promise<ExecResult> {
    return runProgram(['docker-compose', '-p', this.project.name, '-f', this.project.file, ...args], { timeoutMs: options.timeoutMs ?? 120_000, onOutput: options.onOutput });
  }

  /** Every container of the project, with its service, status, exit code and health. */
  async states(): Promise<ContainerState[]> {
    const ids = await runProgram(['docker', 'ps', '-aq', '--filter', `label=com.docker.compose.project=${this.project.name}`], { timeoutMs: 30_000 });
    const list = ids.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    if (list.length === 0) return [];
    const format = '{{index .Config.Labels "com.docker.compose.service"}}|{{.State.Status}}|{{.State.ExitCode}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{.State.Pid}}';
    const inspect = await runProgram(['docker', 'inspect', '--format', format, ...list], { timeoutMs: 30_000 });
    return inspect.stdout
      .split('\n')
      .filter((l) => l.includes('|'))
      .map((line) => {
        const [service = '', status = '', exitCode = '0', health = '', pid = '0'] = line.split('|');
        return { service, status, exitCode: Number(exitCode), health, pid: Number(pid) || 0 };
      });
  }

  exec(service: string, argv: readonly string[], options: { timeoutMs?: number; onOutput?: (chunk: string) => void } = {}): Promise<ExecResult> {
    this.#known(service);
    return this.compose(['exec', '-T', service, ...argv], { timeoutMs: options.timeoutMs ?? 60_000, ...(options.onOutput ? { onOutput: options.onOutput } : {}) });
  }

  async stopService(name: string): Promise<void> {
    this.#known(name);
    const result = await this.compose(['stop', name], { timeoutMs: this.project.services.get(name)!.stopGraceMs + 60_000 });
    if (result.exitCode !== 0) throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `docker-compose stop ${name} failed: ${result.stderr.trim().slice(-300)}`);
  }

  async startService(name: string): Promise<void> {
    this.#known(name);
    const result = await this.compose(['start', name], { timeoutMs: 60_000 });
    if (result.exitCode !== 0) throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `docker-compose start ${name} failed: ${result.stderr.trim().slice(-300)}`);
  }

  async waitHealthy(service: string, timeoutMs: number): Promise<void> {
    this.#known(service);
    if (!this.project.services.get(service)!.healthcheck) throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `service "${service}" has no healthcheck`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const state = (await this.states()).find((s) => s.service === service);
      if (state?.health === 'healthy') return;
      if (Date.now() > deadline) throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `timed out after ${timeoutMs} ms waiting for "${service}" to be healthy (${state ? `${state.status}, ${state.health}` : 'no container'})`);
      await sleep(250);
    }
  }

  /** The project's networks by compose name, with the IPv4 subnet the engine gave each (from its IPAM configuration). */
  async networkSubnets(): Promise<{ name: string; subnet: string }[]> {
    const ids = await runProgram(['docker', 'network', 'ls', '-q', '--filter', `label=com.docker.compose.project=${this.project.name}`], { timeoutMs: 30_000 });
    const list = ids.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    if (list.length === 0) return [];
    const format = '{{index .Labels "com.docker.compose.network"}}|{{range .IPAM.Config}}{{.Subnet}} {{end}}';
    const inspect = await runProgram(['docker', 'network', 'inspect', '--format', format, ...list], { timeoutMs: 30_000 });
    if (inspect.exitCode !== 0) throw new TopologyRuntimeError(TopologyErrorCodes.network, `docker network inspect failed: ${inspect.stderr.trim().slice(-300)}`);
    return inspect.stdout
      .split('\n')
      .filter((l) => l.includes('|'))
      .flatMap((line) => {
        const [name = '', subnets = ''] = line.split('|');
        const subnet = subnets.split(' ').find((s) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(s));
        return name && subnet ? [{ name, subnet }] : [];
      });
  }

  /**
   * nftables and tc inside the containers' network namespaces, entered from the host
   * (topologies/README.md "Network faults"): needs root and the engine on this host.
   */
  injectFault(fault: NetworkFault): Promise<string> {
    if (this.#downing) return Promise.reject(new TopologyRuntimeError(TopologyErrorCodes.notUp, `topology "${this.project.name}" is being torn down`));
    return this.#faults.inject(fault);
  }

  healFaults(what: FaultHeal): Promise<string> {
    return this.#faults.heal(what);
  }

  async logsOf(service: string): Promise<string> {
    const result = await this.compose(['logs', '--no-color', '--tail=200', service], { timeoutMs: 30_000 });
    // docker-compose prefixes each line with "<container> | "; the netns runner's logs have no prefix.
    return result.stdout.replace(/^[^|\n]*\| ?/gm, '');
  }

  /** `down -v --remove-orphans`; then reports any container, network or volume of the project that remains. */
  down(): Promise<string[]> {
    this.#downing ??= (async () => {
      const problems: string[] = [];
      rmSync(this.#faultDir, { recursive: true, force: true });
      const result = await this.compose(['down', '-v', '--remove-orphans', '--timeout', '10'], { timeoutMs: 180_000 });
      if (result.exitCode !== 0) problems.push(`docker-compose down exited ${result.exitCode}: ${result.stderr.trim().slice(-300)}`);
      const label = `label=com.docker.compose.project=${this.project.name}`;
      for (const [what, argv] of [
        ['containers', ['docker', 'ps', '-aq', '--filter', label]],
        ['networks', ['docker', 'network', 'ls', '-q', '--filter', label]],
        ['volumes', ['docker', 'volume', 'ls', '-q', '--filter', label]],
      ] as const) {
        const left = await runProgram(argv, { timeoutMs: 30_000 });
        const ids = left.stdout.split('\n').filter(Boolean);
        if (left.exitCode !== 0) problems.push(`cannot list ${what}: ${left.stderr.trim()}`);
        else if (ids.length > 0) problems.push(`${what}: ${ids.join(', ')}`);
      }
      if (problems.length > 0) log.warn({ problems }, 'teardown left something behind');
      return problems;
    })();
    return this.#downing;
  }

  #known(service: string): void {
    if (!this.project.services.has(service)) throw new TopologyRuntimeError(TopologyErrorCodes.notFound, `no service named "${service}" in topology "${this.project.name}"`);
  }

  async #failedServiceLogs(): Promise<string> {
    const states = await this.states();
    const failed = states.filter((s) => s.health === 'unhealthy' || s.health === 'starting' || (s.status === 'exited' && s.exitCode !== 0));
    const lines: string[] = [];
    for (const s of failed) {
      const tail = (await this.logsOf(s.service)).trimEnd().split('\n').slice(-15).join('\n');
      lines.push(`--- last lines of ${s.service}'s log:\n${tail}`);
    }
    return lines.join('\n');
  }
}

/** True when `docker info` answers (at $DOCKER_HOST) and docker-compose is installed: what `--engine auto` picks Docker on. */
export async function dockerEngineAvailable(): Promise<boolean> {
  const [info, compose] = await Promise.all([
    runProgram(['docker', 'info', '--format', '{{.ServerVersion}}'], { timeoutMs: 10_000 }),
    runProgram(['docker-compose', 'version', '--short'], { timeoutMs: 10_000 }),
  ]);
  return info.exitCode === 0 && info.stdout.trim() !== '' && compose.exitCode === 0;
}
