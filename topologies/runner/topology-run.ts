import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { logger } from '../../mesh/index.js';
import { planAddresses, type AddressPlan } from './address-plan.js';
import type { ComposeProject, ServiceSpec } from './compose-file.js';
import { TopologyErrorCodes, TopologyFileError, TopologyNeedsRootError, TopologyRuntimeError } from './errors.js';
import { CHECKOUT_ROOT, argvFor, checkImages, imageMappingFor, writeProgramScripts } from './image-map.js';
import type { RunningTopology } from './running-topology.js';
import { PlannedNamespaces } from './fault-namespaces.js';
import { NamespaceFaults, type FaultHeal, type NetworkFault } from './network-faults.js';
import { createNetworks, destroyNamespaces, isAlive } from './network-namespaces.js';
import { readRunState, removeRunState, writeRunState, type RunState } from './run-state.js';
import { execIn, hostHas, isDirectory, killGroup, launchService, type ExecResult, type LaunchMount } from './service-process.js';

const log = logger('topology-runner');

export type ServiceStatus = 'created' | 'running' | 'exited' | 'stopped' | 'failed';
export type HealthStatus = 'none' | 'starting' | 'healthy' | 'unhealthy';

export interface ServiceView {
  readonly name: string;
  readonly status: ServiceStatus;
  readonly health: HealthStatus;
  readonly pid?: number;
  readonly exitCode?: number | null;
  readonly namespace: string;
  readonly addresses: Readonly<Record<string, string>>;
}

export interface UpOptions {
  /** Unique per run; names every namespace `cw-<runId>…`. Default: 6 random hex digits. */
  runId?: string;
  /** Give up bringing the topology up after this long (default 120 s). */
  timeoutMs?: number;
  /** Wait for every healthcheck to pass before `up` resolves (default true). */
  waitHealthy?: boolean;
  /** Called as soon as the run exists (before anything is created), so a signal handler can tear it down mid-way. */
  onCreated?: (run: TopologyRun) => void;
}

interface ServiceRuntime {
  readonly spec: ServiceSpec;
  status: ServiceStatus;
  health: HealthStatus;
  child?: ChildProcess | undefined;
  pid?: number | undefined;
  exitCode?: number | null;
  consecutiveFailures: number;
  /** What the last failed healthcheck said, for error messages. */
  lastProbeFailure?: string | undefined;
  healthTimer?: NodeJS.Timeout | undefined;
  /** Bumped on every start so a stale health loop or exit handler of an earlier start is ignored. */
  generation: number;
}

export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new TopologyNeedsRootError(what);
}

/**
 * One running compose project: its namespaces, bridges and processes. Create it with
 * {@link TopologyRun.up}; {@link TopologyRun.down} removes everything it made.
 */
export class TopologyRun implements RunningTopology {
  readonly engine = 'netns' as const;
  /** This checkout's CLI under this Node: the service's file system is the host's. */
  readonly cliArgv: readonly string[] = [process.execPath, join(CHECKOUT_ROOT, 'bin', 'causeway.js')];
  readonly project: ComposeProject;
  readonly plan: AddressPlan;
  readonly runDir: string;
  private readonly services = new Map<string, ServiceRuntime>();
  private readonly changes = new EventEmitter();
  readonly #faults: NamespaceFaults;
  private state: RunState;
  private downing: Promise<string[]> | undefined;

  private constructor(project: ComposeProject, plan: AddressPlan, runDir: string) {
    this.project = project;
    this.plan = plan;
    this.runDir = runDir;
    this.#faults = new NamespaceFaults(project, new PlannedNamespaces(plan), join(runDir, 'faults'));
    this.changes.setMaxListeners(0);
    for (const spec of project.services.values()) {
      this.services.set(spec.name, { spec, status: 'created', health: spec.healthcheck ? 'starting' : 'none', consecutiveFailures: 0, generation: 0 });
    }
    this.state = {
      schema: 1,
      project: project.name,
      file: project.file,
      runId: plan.runId,
      runDir,
      routerNamespace: plan.routerNamespace,
      namespaces: [...plan.namespaces.map((n) => n.name), plan.routerNamespace],
      ownerPid: process.pid,
      services: Object.fromEntries([...project.services.keys()].map((name) => [name, { namespace: plan.namespaceOf.get(name)!.name, env: {} }])),
      startedAt: new Date().toISOString(),
    };
  }

  /**
   * Builds the networks and starts every service in dependency order, honouring
   * `depends_on` conditions and healthchecks. On any failure everything made so far is
   * removed before the error is thrown.
   */
  static async up(project: ComposeProject, options: UpOptions = {}): Promise<TopologyRun> {
    requireRoot('up');
    checkImages(project.file, project.services.values());
    const existing = readRunState(project.name);
    if (existing) {
      // A run whose owner died (SIGKILL, crash) is cleaned up here; a live owner's run, or a
      // detached run with live services, is someone's topology and is left alone.
      const ownerAlive = existing.ownerPid !== undefined && existing.ownerPid !== process.pid && isAlive(existing.ownerPid);
      const detachedAndRunning = existing.ownerPid === undefined && Object.values(existing.services).some((s) => s.pid !== undefined && isAlive(s.pid));
      if (ownerAlive || detachedAndRunning) {
        throw new TopologyRuntimeError(
          TopologyErrorCodes.alreadyUp,
          `topology "${project.name}" is already up (run ${existing.runId}); run \`causeway topology down ${project.name}\` first, or pick another project name with -p`,
        );
      }
      await cleanUpRunState(existing);
    }
    const runId = options.runId ?? randomBytes(3).toString('hex');
    if (!/^[a-z0-9]{1,12}$/.test(runId)) throw new TopologyRuntimeError(TopologyErrorCodes.network, `run id "${runId}" must be 1-12 lower-case letters or digits`);
    const plan = planAddresses(project, runId);
    const runDir = join(tmpdir(), `causeway-topology-${project.name}-${runId}`);
    const run = new TopologyRun(project, plan, runDir);
    run.checkMountTargets();
    options.onCreated?.(run);
    writeRunState(run.state);
    try {
      mkdirSync(join(runDir, 'logs'), { recursive: true });
      for (const volume of project.volumes) mkdirSync(join(runDir, 'volumes', volume), { recursive: true });
      await createNetworks(plan);
      await run.startAll(options.timeoutMs ?? 120_000, options.waitHealthy ?? true);
      return run;
    } catch (error) {
      const tails = run.failedServiceLogs();
      await run.down();
      if (tails && error instanceof Error) error.message += `\n${tails}`;
      throw error;
    }
  }

  /** The run's state on disk (for `down`, `logs` and `exec` from another process). */
  get runState(): RunState {
    return this.state;
  }

  view(): ServiceView[] {
    return [...this.services.values()].map((s) => {
      const ns = this.plan.namespaceOf.get(s.spec.name)!;
      return {
        name: s.spec.name,
        status: s.status,
        health: s.health,
        ...(s.pid === undefined ? {} : { pid: s.pid }),
        ...(s.exitCode === undefined ? {} : { exitCode: s.exitCode }),
        namespace: ns.name,
        addresses: Object.fromEntries(ns.interfaces.map((i) => [i.network, i.address])),
      };
    });
  }

  logFileOf(service: string): string {
    return join(this.runDir, 'logs', `${service}.log`);
  }

  logsOf(service: string): string {
    const file = this.logFileOf(service);
    return existsSync(file) ? readFileSync(file, 'utf8') : '';
  }

  private runtime(name: string): ServiceRuntime {
    const s = this.services.get(name);
    if (!s) throw new TopologyRuntimeError(TopologyErrorCodes.notFound, `no service named "${name}" in topology "${this.project.name}"`);
    return s;
  }

  private changed(): void {
    this.changes.emit('change');
  }

  /** Resolves when `check` returns true, rejects when it throws or after `timeoutMs`. */
  waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const test = () => {
        try {
          if (check()) {
            done();
            resolve();
          }
        } catch (error) {
          done();
          reject(error);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.changes.off('change', test);
      };
      this.changes.on('change', test);
      test();
    });
  }

  private dependencyMet(name: string, dep: string, condition: string): boolean {
    const d = this.runtime(dep);
    const fail = (why: string): never => {
      throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `service "${name}" cannot start: dependency "${dep}" ${why}`);
    };
    switch (condition) {
      case 'service_started':
        return d.status !== 'created';
      case 'service_healthy':
        if (d.health === 'healthy') return true;
        if (d.health === 'unhealthy') fail('is unhealthy');
        if (d.status === 'exited' || d.status === 'failed') fail(`exited (code ${d.exitCode}) before it was healthy`);
        return false;
      default:
        if (d.status === 'exited') return d.exitCode === 0 ? true : fail(`exited with code ${d.exitCode}`);
        if (d.status === 'failed') fail('failed to start');
        return false;
    }
  }

  private async startAll(timeoutMs: number, waitHealthy: boolean): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    const starts = [...this.services.values()].map(async (s) => {
      for (const [dep, condition] of s.spec.dependsOn) {
        await this.waitFor(() => this.dependencyMet(s.spec.name, dep, condition), left(), `"${s.spec.name}"'s dependency "${dep}" (${condition})`);
      }
      this.startService(s.spec.name);
    });
    await Promise.all(starts);
    const unhealthyOrFailed = () => {
      for (const s of this.services.values()) {
        if (s.status === 'failed') throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `service "${s.spec.name}" failed to start`);
        if (s.status === 'exited' && s.exitCode !== 0) throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `service "${s.spec.name}" exited with code ${s.exitCode}`);
        if (s.health === 'unhealthy') throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `service "${s.spec.name}" is unhealthy`);
      }
    };
    if (waitHealthy) {
      await this.waitFor(
        () => {
          unhealthyOrFailed();
          return [...this.services.values()].every((s) => s.health !== 'starting' || s.status === 'exited');
        },
        left(),
        'every healthcheck to pass',
      ).catch((error: unknown) => {
        const pending = [...this.services.values()].filter((s) => s.health === 'starting' && s.status !== 'exited');
        if (error instanceof TopologyRuntimeError && pending.length > 0) {
          error.message += `; still starting: ${pending.map((s) => `${s.spec.name} (${s.lastProbeFailure ?? 'no probe finished yet'})`).join(', ')}`;
        }
        throw error;
      });
    } else unhealthyOrFailed();
    log.debug({ project: this.project.name, runId: this.plan.runId }, 'topology up');
  }

  /** Starts (or restarts) one service's process. */
  startService(name: string): void {
    const s = this.runtime(name);
    if (s.status === 'running') return;
    if (this.downing) throw new TopologyRuntimeError(TopologyErrorCodes.notUp, `topology "${this.project.name}" is being torn down; not starting "${name}"`);
    const spec = s.spec;
    const mapping = imageMappingFor(spec.image)!;
    const ns = this.plan.namespaceOf.get(name)!;
    const serviceDir = join(this.runDir, 'services', name);
    const binDir = join(serviceDir, 'bin');
    writeProgramScripts(binDir, mapping);
    const env: Record<string, string> = {
      PATH: `${binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
      HOME: serviceDir,
      HOSTNAME: spec.hostname,
      ...spec.environment,
    };
    const argv = argvFor(spec, mapping);
    if (argv.length === 0) throw new TopologyFileError(TopologyErrorCodes.fileInvalid, this.project.file, `services.${name}`, 'no command to run (set command or entrypoint)');
    const needsRoot = spec.volumes.length > 0 || (spec.workingDir !== undefined && !hostHas(spec.workingDir));
    const mounts: LaunchMount[] = [...spec.volumes]
      .sort((a, b) => a.target.length - b.target.length)
      .map((v) => ({ source: v.kind === 'bind' ? v.source : join(this.runDir, 'volumes', v.source), target: v.target, readOnly: v.readOnly }));
    const rootDir = needsRoot ? join(serviceDir, 'root') : undefined;
    if (rootDir) mkdirSync(rootDir, { recursive: true });
    s.generation++;
    const generation = s.generation;
    s.consecutiveFailures = 0;
    s.exitCode = undefined;
    s.health = spec.healthcheck ? 'starting' : 'none';
    writeFileSync(this.logFileOf(name), `--- ${new Date().toISOString()} start: ${argv.join(' ')}\n`, { flag: 'a' });
    const child = launchService({ namespace: ns.name, argv, env, workDir: spec.workingDir ?? serviceDir, ...(rootDir ? { rootDir } : {}), mounts, logFile: this.logFileOf(name) });
    s.child = child;
    s.pid = child.pid;
    s.status = child.pid === undefined ? 'failed' : 'running';
    child.once('error', (error) => {
      if (s.generation !== generation) return;
      writeFileSync(this.logFileOf(name), `[runner] could not start: ${error.message}\n`, { flag: 'a' });
      s.status = 'failed';
      this.changed();
    });
    child.once('exit', (code, signal) => {
      if (s.generation !== generation) return;
      s.exitCode = code ?? (signal ? 128 + signalNumber(signal) : null);
      if (s.status === 'running') s.status = 'exited';
      s.pid = undefined;
      s.child = undefined;
      this.stopHealthLoop(s);
      writeFileSync(this.logFileOf(name), `--- ${new Date().toISOString()} exited: ${code ?? signal}\n`, { flag: 'a' });
      log.debug({ service: name, code, signal }, 'service exited');
      this.saveState();
      this.changed();
    });
    this.state.services[name] = { ...(child.pid === undefined ? {} : { pid: child.pid }), namespace: ns.name, env };
    this.saveState();
    if (spec.healthcheck && s.status === 'running') this.startHealthLoop(s, generation);
    this.changed();
  }

  /** Stops one service (its stop signal, then SIGKILL after its grace period); its namespace stays. */
  async stopService(name: string): Promise<void> {
    const s = this.runtime(name);
    const child = s.child;
    if (!child || s.status !== 'running') return;
    s.status = 'stopped';
    this.stopHealthLoop(s);
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    killGroup(child.pid, s.spec.stopSignal);
    const timer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), s.spec.stopGraceMs);
    await exited;
    clearTimeout(timer);
    this.changed();
  }

  private startHealthLoop(s: ServiceRuntime, generation: number): void {
    const hc = s.spec.healthcheck!;
    const startedAt = Date.now();
    const probe = async () => {
      if (s.generation !== generation || s.status !== 'running') return;
      const result = await this.exec(s.spec.name, hc.argv, { timeoutMs: hc.timeoutMs });
      if (s.generation !== generation || s.status !== 'running') return;
      const ok = result.exitCode === 0;
      s.lastProbeFailure = ok ? undefined : `${result.timedOut ? `timed out after ${hc.timeoutMs} ms` : `exit ${result.exitCode}`}: ${`${result.stderr}${result.stdout}`.trim().slice(-200)}`;
      if (ok) {
        s.consecutiveFailures = 0;
        if (s.health !== 'healthy') log.debug({ service: s.spec.name }, 'healthy');
        s.health = 'healthy';
      } else if (Date.now() - startedAt >= hc.startPeriodMs) {
        s.consecutiveFailures++;
        if (s.consecutiveFailures >= hc.retries) s.health = 'unhealthy';
      }
      this.changed();
      // The first probes come quickly (at most 1 s apart) until the first success, so a
      // topology with `interval: 30s` is not held up by it.
      const delay = s.health === 'healthy' ? hc.intervalMs : Math.min(hc.intervalMs, 1000);
      s.healthTimer = setTimeout(() => void probe(), delay);
      s.healthTimer.unref();
    };
    s.healthTimer = setTimeout(() => void probe(), Math.min(hc.intervalMs, 250));
    s.healthTimer.unref();
  }

  private stopHealthLoop(s: ServiceRuntime): void {
    if (s.healthTimer) clearTimeout(s.healthTimer);
    s.healthTimer = undefined;
  }

  /** Runs a command inside a service, as `docker exec` does. */
  exec(service: string, argv: readonly string[], options: { timeoutMs?: number; onOutput?: (chunk: string) => void } = {}): Promise<ExecResult> {
    const s = this.runtime(service);
    const ns = this.plan.namespaceOf.get(service)!;
    const env = this.state.services[service]?.env ?? {};
    const mapping = imageMappingFor(s.spec.image)!;
    const binDir = join(this.runDir, 'services', service, 'bin');
    if (!existsSync(binDir)) writeProgramScripts(binDir, mapping);
    const fullEnv = Object.keys(env).length > 0 ? env : { PATH: `${binDir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, ...s.spec.environment };
    const args = [...argv];
    if (args.length > 0 && mapping.paths[args[0]!] !== undefined) args[0] = mapping.paths[args[0]!]!;
    return execIn({ pid: s.status === 'running' ? s.pid : undefined, namespace: ns.name }, args, {
      env: fullEnv,
      timeoutMs: options.timeoutMs ?? 60_000,
      ...(options.onOutput ? { onOutput: options.onOutput } : {}),
    });
  }

  /** nftables and tc inside the services' namespaces; they go with the namespaces at `down`. */
  injectFault(fault: NetworkFault): Promise<string> {
    if (this.downing) throw new TopologyRuntimeError(TopologyErrorCodes.notUp, `topology "${this.project.name}" is being torn down`);
    return this.#faults.inject(fault);
  }

  healFaults(what: FaultHeal): Promise<string> {
    return this.#faults.heal(what);
  }

  /** Waits until a service's healthcheck passes. */
  waitHealthy(service: string, timeoutMs: number): Promise<void> {
    const s = this.runtime(service);
    if (!s.spec.healthcheck) throw new TopologyRuntimeError(TopologyErrorCodes.serviceFailed, `service "${service}" has no healthcheck`);
    return this.waitFor(() => s.health === 'healthy', timeoutMs, `"${service}" to be healthy`);
  }

  /**
   * Stops every process and removes every namespace, bridge, veth and file of the run.
   * Idempotent; returns what could not be removed (empty when all is clean).
   */
  down(): Promise<string[]> {
    this.downing ??= (async () => {
      for (const s of this.services.values()) {
        this.stopHealthLoop(s);
        if (s.status === 'running') s.status = 'stopped';
      }
      const graceMs = Math.min(10_000, Math.max(1000, ...[...this.services.values()].map((s) => s.spec.stopGraceMs)));
      const extraPids = [...this.services.values()].map((s) => s.pid).filter((p): p is number => p !== undefined);
      for (const pid of extraPids) killGroup(pid, 'SIGTERM');
      const problems = await destroyNamespaces(this.state.namespaces, { graceMs, extraPids });
      for (const pid of extraPids) killGroup(pid, 'SIGKILL');
      // CAUSEWAY_TOPOLOGY_KEEP_LOGS=1 keeps the run folder (logs, volumes) for a post-mortem.
      if (process.env.CAUSEWAY_TOPOLOGY_KEEP_LOGS !== '1') rmSync(this.runDir, { recursive: true, force: true });
      removeRunState(this.project.name, this.plan.runId);
      this.changed();
      if (problems.length > 0) log.warn({ problems }, 'teardown left something behind');
      return problems;
    })();
    return this.downing;
  }

  /** Marks the run as no longer owned by this process (`up --detach`). */
  detach(): void {
    for (const s of this.services.values()) {
      this.stopHealthLoop(s);
      s.child?.unref();
    }
    delete this.state.ownerPid;
    this.saveState();
  }

  private saveState(): void {
    if (this.downing) return;
    writeRunState(this.state);
  }

  private checkMountTargets(): void {
    for (const spec of this.project.services.values()) {
      const targets = spec.volumes.map((v) => v.target);
      const creatable = (path: string, what: string) => {
        if (hostHas(path)) return;
        if (targets.some((t) => t !== path && path.startsWith(`${t}/`))) return;
        const top = `/${path.split('/')[1]}`;
        if (hostHas(top)) {
          throw new TopologyFileError(
            TopologyErrorCodes.unsupported,
            this.project.file,
            `services.${spec.name}.${what}`,
            `${path} does not exist on this host but ${top} does; the runner makes mount points only under new top-level folders (e.g. /certs, /config, /data) or at existing paths, so the host is never changed`,
          );
        }
      };
      spec.volumes.forEach((v, i) => {
        creatable(v.target, `volumes[${i}]`);
        const source = v.kind === 'bind' ? v.source : undefined;
        if (source !== undefined && hostHas(v.target) && isDirectory(source) !== isDirectory(v.target)) {
          throw new TopologyFileError(TopologyErrorCodes.fileInvalid, this.project.file, `services.${spec.name}.volumes[${i}]`, `cannot mount ${isDirectory(source) ? 'a folder' : 'a file'} over ${v.target}`);
        }
      });
      if (spec.workingDir !== undefined) creatable(spec.workingDir, 'working_dir');
    }
  }

  private failedServiceLogs(): string {
    const lines: string[] = [];
    for (const s of this.services.values()) {
      if (s.status === 'failed' || s.status === 'exited' || s.health === 'unhealthy') {
        const tail = this.logsOf(s.spec.name).trimEnd().split('\n').slice(-15).join('\n');
        lines.push(`--- last lines of ${s.spec.name}'s log:\n${tail}`);
      }
    }
    return lines.join('\n');
  }
}

/** Removes what a run recorded in its state file (after its owner died, or from `down` in another process). */
export async function cleanUpRunState(state: RunState): Promise<string[]> {
  const pids = Object.values(state.services).map((s) => s.pid).filter((p): p is number => p !== undefined);
  for (const pid of pids) killGroup(pid, 'SIGTERM');
  const problems = await destroyNamespaces(state.namespaces, { extraPids: pids, graceMs: 5000 });
  for (const pid of pids) killGroup(pid, 'SIGKILL');
  rmSync(state.runDir, { recursive: true, force: true });
  removeRunState(state.project, state.runId);
  return problems;
}

function signalNumber(signal: NodeJS.Signals): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGTERM: 15 };
  return numbers[signal] ?? 0;
}
