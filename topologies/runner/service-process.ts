import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, statSync } from 'node:fs';

/** One bind mount as the launcher makes it inside the service's own mount namespace. */
export interface LaunchMount {
  readonly source: string;
  readonly target: string;
  readonly readOnly: boolean;
}

export interface LaunchSpec {
  readonly namespace: string;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  /** Working directory as the service sees it. */
  readonly workDir: string;
  /**
   * When set, the service runs chrooted into a fresh tmpfs at this host folder that
   * shows the host's top-level folders (recursive binds) plus the volumes at their
   * targets — so `/certs` exists for the service without being created on the host.
   */
  readonly rootDir?: string;
  readonly mounts: readonly LaunchMount[];
  readonly logFile: string;
}

/**
 * The launcher: runs inside `ip netns exec` (which already gave it a private, slave mount
 * namespace and the namespace's /etc/hosts), builds the service's root and execs the
 * service, so the service's pid is the child's pid.
 */
let launcher: string | undefined;
const launcherScript = () => (launcher ??= readFileSync(new URL('./launch-service.sh', import.meta.url), 'utf8'));

export function launchService(spec: LaunchSpec): ChildProcess {
  const log = openSync(spec.logFile, 'a');
  try {
    const args = ['netns', 'exec', spec.namespace];
    if (spec.rootDir !== undefined) {
      args.push('sh', '-c', launcherScript(), 'cw-launch', spec.rootDir, spec.workDir, String(spec.mounts.length));
      for (const m of spec.mounts) args.push(m.source, m.target, m.readOnly ? 'ro' : 'rw');
      args.push(...spec.argv);
    } else {
      args.push(...spec.argv);
    }
    // Own process group: a Ctrl-C at the terminal reaches the runner, which stops services in order.
    return spawn('ip', args, {
      cwd: spec.rootDir === undefined ? spec.workDir : '/',
      env: { ...spec.env },
      stdio: ['ignore', log, log],
      detached: true,
    });
  } finally {
    closeSync(log);
  }
}

export interface ExecResult {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

export interface ExecOptions {
  readonly env: Readonly<Record<string, string>>;
  readonly timeoutMs: number;
  /** Called with each chunk of output, for live views. */
  readonly onOutput?: (chunk: string) => void;
}

/**
 * Runs `argv` as `docker exec` would: inside the mount, network, root and working
 * directory of the service's running process (`nsenter`), or — when the service is not
 * running — in its network namespace with the host's file system.
 */
export function execIn(target: { pid?: number | undefined; namespace: string }, argv: readonly string[], options: ExecOptions): Promise<ExecResult> {
  const command = target.pid !== undefined ? 'nsenter' : 'ip';
  const args = target.pid !== undefined ? ['-t', String(target.pid), '-m', '-n', '-r', '-w', '--', ...argv] : ['netns', 'exec', target.namespace, ...argv];
  return runCaptured(command, args, { env: { ...options.env }, detached: true, timeoutMs: options.timeoutMs, onOutput: options.onOutput });
}

/**
 * Runs a program to its end, collecting its output; after `timeoutMs` it is killed with
 * SIGKILL (its whole process group when `detached`, as nsenter's children must go too).
 */
export function runCaptured(
  command: string,
  args: readonly string[],
  options: { env: NodeJS.ProcessEnv; detached: boolean; timeoutMs: number; onOutput?: ((chunk: string) => void) | undefined },
): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { env: options.env, stdio: ['ignore', 'pipe', 'pipe'], detached: options.detached });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout!.on('data', (c: Buffer) => {
      stdout += c.toString('utf8');
      options.onOutput?.(c.toString('utf8'));
    });
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString('utf8');
      options.onOutput?.(c.toString('utf8'));
    });
    const timer = setTimeout(() => {
      timedOut = true;
      if (options.detached) killGroup(child.pid, 'SIGKILL');
      else child.kill('SIGKILL');
    }, options.timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ exitCode: null, signal: null, stdout, stderr: `${stderr}${error.message}`, timedOut });
    });
    child.once('close', (exitCode, signal) => {
      clearTimeout(timer);
      resolve({ exitCode, signal, stdout, stderr, timedOut });
    });
  });
}

export function killGroup(pid: number | undefined, signal: NodeJS.Signals): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // gone
    }
  }
}

/** True when the path exists on the host (following symlinks). */
export function hostHas(path: string): boolean {
  return existsSync(path);
}

export function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}
