import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * What a run leaves on disk so that `down`, `logs` and `exec` from another process — or a
 * clean-up after the runner was killed — find every namespace and process of it. Written
 * before anything is created and rewritten as processes start.
 */
export interface RunState {
  readonly schema: 1;
  readonly project: string;
  readonly file: string;
  readonly runId: string;
  readonly runDir: string;
  readonly routerNamespace: string;
  /** Every namespace of the run, router included. */
  readonly namespaces: readonly string[];
  /** The process that owns the run (the foreground `up` or `test`); absent once detached. */
  ownerPid?: number;
  /** Service → pid, namespace, and the environment its commands get (for `exec`). */
  services: Record<string, { pid?: number; namespace: string; env: Record<string, string> }>;
  readonly startedAt: string;
}

export function stateDir(): string {
  return process.env.CAUSEWAY_TOPOLOGY_STATE_DIR ?? '/run/causeway/topologies';
}

export function stateFileOf(project: string): string {
  return join(stateDir(), `${project}.json`);
}

export function writeRunState(state: RunState): void {
  mkdirSync(stateDir(), { recursive: true });
  const file = stateFileOf(state.project);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

export function readRunState(project: string): RunState | undefined {
  const file = stateFileOf(project);
  if (!existsSync(file)) return undefined;
  try {
    const state = JSON.parse(readFileSync(file, 'utf8')) as RunState;
    return state.schema === 1 ? state : undefined;
  } catch {
    return undefined;
  }
}

export function removeRunState(project: string, runId: string): void {
  const state = readRunState(project);
  if (state === undefined || state.runId === runId) rmSync(stateFileOf(project), { force: true });
}
