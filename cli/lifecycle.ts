import { readFileSync } from 'node:fs';
import { ShutdownSteps, UsageError, logger, logsWritten, type Logger } from '../mesh/index.js';

/**
 * One lifecycle for every long-running command (controller, gateway, federation, sidecar):
 * how a stop is asked for, and a hard deadline on how long it may take.
 *
 * A stop is asked by SIGTERM, SIGINT or SIGHUP — to this process, whatever started it
 * (`npx causeway …`, `node_modules/.bin/causeway …`, a supervisor, PID 1 in a container,
 * where a signal without a handler is ignored) — or by the loss of a process that started
 * it (see {@link watchedAncestors}). A repeated signal is the same request: Ctrl-C in a
 * terminal reaches every process of the foreground group (npm, its `sh -c`, the launcher
 * under an old Node, the command), and each hop forwards it too.
 *
 * From the first request on, a timer of `drainTimeoutMs` runs; when it fires, the process
 * exits with code 1 and a log line naming the closing steps that had not finished (an
 * etcd that is gone, a peer that never answers). When the stop finishes in time, the
 * process exits 0 — explicitly, so that a client library's reconnect timer or socket
 * cannot keep it alive after its component has stopped.
 */

export const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const satisfies readonly NodeJS.Signals[];

/** Exit code of a command forced out at its drain deadline (README "exit codes"). */
export const DRAIN_TIMEOUT_EXIT_CODE = 1;

/** Environment variable bin/causeway.js sets for the command it runs as a child: its own pid. */
export const LAUNCHER_PID_ENV = 'CAUSEWAY_LAUNCHER_PID';

const ANCESTOR_POLL_MS = 1000;

export type StopReason = { readonly signal: NodeJS.Signals } | { readonly ancestorGone: number; readonly chain: readonly number[] };

export interface CommandLifecycleOptions {
  /** Names the component in log lines (`controller`, `gateway`…). */
  readonly component: string;
  /** The longest a stop may take before the process is forced out. */
  readonly drainTimeoutMs: number;
  readonly logger?: Logger;
}

/**
 * Create it before the component starts, so that a signal during start-up (an etcd that is
 * not up yet) stops the command too; then {@link onStop} with what stops the component.
 */
export class CommandLifecycle {
  readonly steps = new ShutdownSteps();
  readonly #options: CommandLifecycleOptions;
  readonly #log: Logger;
  readonly #onSignal = (signal: NodeJS.Signals) => this.requestStop({ signal });
  #stop: ((steps: ShutdownSteps) => Promise<void>) | undefined;
  #reason: StopReason | undefined;
  #ancestorTimer: NodeJS.Timeout | undefined;

  constructor(options: CommandLifecycleOptions) {
    this.#options = options;
    this.#log = options.logger ?? logger('lifecycle', { component: options.component });
    for (const signal of STOP_SIGNALS) process.on(signal, this.#onSignal);
    const chain = watchedAncestors();
    if (chain.length > 0) {
      this.#ancestorTimer = setInterval(() => {
        const gone = brokenLink(chain);
        if (gone !== undefined) this.requestStop({ ancestorGone: gone, chain });
      }, ANCESTOR_POLL_MS);
      this.#ancestorTimer.unref();
    }
  }

  /** What stops the component; it runs once, on the first stop request. */
  onStop(stop: (steps: ShutdownSteps) => Promise<void>): void {
    this.#stop = stop;
  }

  /** Whether a stop was asked (a start-up that fails meanwhile is not an error then). */
  get stopping(): boolean {
    return this.#reason !== undefined;
  }

  requestStop(reason: StopReason): void {
    if (this.#reason !== undefined) {
      this.#log.debug({ ...reason }, 'stop already under way');
      return;
    }
    this.#reason = reason;
    clearInterval(this.#ancestorTimer);
    const { drainTimeoutMs, component } = this.#options;
    this.#log.info({ ...reason, drainTimeoutMs }, `stopping ${component}`);
    const deadline = setTimeout(() => {
      this.#log.error({ drainTimeoutMs, notClosed: this.steps.pending() }, `${component} did not stop within ${drainTimeoutMs} ms; exiting with ${this.steps.pending().join(', ') || 'nothing named'} still open`);
      exitAfterLogs(DRAIN_TIMEOUT_EXIT_CODE);
    }, drainTimeoutMs);
    const stop = this.#stop ?? (async () => undefined);
    stop(this.steps).then(
      () => {
        clearTimeout(deadline);
        exitAfterLogs(0);
      },
      (error: unknown) => {
        clearTimeout(deadline);
        this.#log.error({ err: error instanceof Error ? error.message : String(error) }, `${component} stop failed`);
        exitAfterLogs(1);
      },
    );
  }

  /**
   * After a start-up that failed: runs the stop (what had started is closed), at most
   * `drainTimeoutMs`, and no longer listens for signals; the caller then reports the
   * failure (exit 1).
   */
  async closeAfterFailedStart(): Promise<void> {
    this.#detach();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.#options.drainTimeoutMs)));
    await Promise.race([(this.#stop?.(this.steps) ?? Promise.resolve()).catch(() => undefined), deadline]);
    clearTimeout(timer);
  }

  #detach(): void {
    for (const signal of STOP_SIGNALS) process.off(signal, this.#onSignal);
    clearInterval(this.#ancestorTimer);
  }

  /** Resolves never: the process exits from requestStop(). For an action that has nothing left to do. */
  untilExit(): Promise<never> {
    return new Promise<never>(() => undefined);
  }
}

/**
 * One long-running command from start to exit: what each of `controller`, `gateway`,
 * `federation`, `sidecar` and `app echo` gives {@link runUntilStopped}. The component
 * itself is started by its part's runner (`new Controller(…).start()`, `runGateway`,
 * `StandaloneFederation`, `runSidecar`, `startEchoServer`).
 */
export interface LongRunningCommand<T> extends CommandLifecycleOptions {
  /** Starts the component: every listener bound before anything is written to etcd (docs/architecture.md "Lifecycle"). */
  start(): Promise<T>;
  /** Stops it, each closing step through `steps`; `started` is undefined when the stop came while start() ran. */
  stop(started: T | undefined, steps: ShutdownSteps): Promise<void>;
  /** Once started: the line on stdout that operators and tests wait for. */
  announce?(started: T): void;
  /**
   * After start() failed (with no stop asked): run stop() within the drain deadline before
   * the failure is reported — for a start() that leaves what it opened to stop().
   */
  stopAfterFailedStart?: boolean;
}

/**
 * Runs `command` until a stop request ends the process (exit 0, or 1 past the drain
 * deadline). A start that fails rejects, and the command exits 1 reporting it — unless a
 * stop was asked meanwhile, which wins (a signal while etcd is not up yet is no error).
 */
export async function runUntilStopped<T>(command: LongRunningCommand<T>): Promise<never> {
  // Before start(): a signal while etcd, the controller or a peer is not up yet stops the command too.
  const lifecycle = new CommandLifecycle(command);
  let started: T | undefined;
  lifecycle.onStop((steps) => command.stop(started, steps));
  try {
    started = await command.start();
  } catch (error) {
    if (lifecycle.stopping) await lifecycle.untilExit();
    if (command.stopAfterFailedStart) await lifecycle.closeAfterFailedStart();
    throw error;
  }
  command.announce?.(started);
  return lifecycle.untilExit();
}

/** Exits once the log lines written so far are out (at most 500 ms later). */
function exitAfterLogs(code: number): void {
  void logsWritten(500).finally(() => process.exit(code));
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) state ppid …" — comm may hold spaces and parentheses: parse after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

function commandLine(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/**
 * The processes between this one and the process a user (or supervisor) started, when
 * that is not this one: the parent up to bin/causeway.js's launcher (`CAUSEWAY_LAUNCHER_PID`,
 * under an old system Node), or up to the nearest npm process (`npx causeway …`, `npm run …`:
 * npm marks its children with `npm_command`). Empty when this process is what was started.
 *
 * Why watch them by polling /proc rather than another way: the hop npm puts in between —
 * `sh -c causeway …` — is not ours and forwards nothing (dash dies of the SIGTERM npm
 * forwards to it, and npm does not forward SIGHUP at all), so no handler in any hop we own
 * could reach us from there; and a SIGKILLed launcher runs no code at all. Linux's
 * PR_SET_PDEATHSIG needs a native addon; an IPC channel or stdin pipe from the launcher
 * would not survive bin/causeway.js's execve into the bundle unchanged (and stdin is the
 * user's, /dev/null under a supervisor); a process-group kill needs the parent alive to send
 * it. Reading the parent links once a second needs nothing from any other process and sees
 * any hop of the chain die, however it died. Linux only (elsewhere: empty, no watch).
 */
export function watchedAncestors(env: NodeJS.ProcessEnv = process.env): number[] {
  const launcher = Number(env[LAUNCHER_PID_ENV]);
  const underNpm = env.npm_command !== undefined;
  const npmPath = env.npm_execpath;
  const chain: number[] = [];
  let farthest = -1;
  for (let pid: number | undefined = process.ppid; pid !== undefined && pid > 1 && chain.length < 32; pid = parentOf(pid)) {
    chain.push(pid);
    if (pid === launcher) farthest = chain.length - 1;
    if (underNpm) {
      const cmd = commandLine(pid);
      if (/^np[mx]( |$)/.test(cmd) || (npmPath !== undefined && npmPath !== '' && cmd.includes(npmPath))) {
        farthest = chain.length - 1;
        break;
      }
    }
  }
  return chain.slice(0, farthest + 1);
}

/** The first process of `chain` that is no longer where it was (it died: its child was re-parented), if any. */
function brokenLink(chain: readonly number[]): number | undefined {
  let child = process.pid;
  for (const pid of chain) {
    const parent = child === process.pid ? process.ppid : parentOf(child);
    if (parent !== pid) return pid;
    child = pid;
  }
  return undefined;
}

/** The drain deadline of the controller, federation, sidecar and app commands unless `--drain-timeout` says otherwise. */
export const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;

/** Parses a `--drain-timeout <ms>` flag. */
export function drainTimeoutFlag(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < 100 || value > 3_600_000) throw new UsageError(`--drain-timeout must be a whole number of milliseconds from 100 to 3600000 (got "${text}")`);
  return value;
}
