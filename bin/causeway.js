#!/usr/bin/env node
// Entry point of the `causeway` command. Causeway needs Node >= 22.12; when started by an
// older system Node, re-run under the Node 24 that `npm ci` installed into node_modules.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { COMMAND_BUNDLES, ensureCommandBundleInChild, sidecarEnv } from '../scripts/bundles.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  const local = join(root, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(local)) {
    process.stderr.write(`causeway: error: Node ${process.versions.node} is too old (need >= 22.12); run npm ci in ${root} or install Node 24\n`);
    process.exit(1);
  }
  // A child, not spawnSync: a supervisor's SIGTERM to this process must reach the command
  // (a blocked spawnSync would die and leave it running), and its exit status comes back.
  // CAUSEWAY_LAUNCHER_PID: a long-running command watches this process and stops when it is
  // gone — a SIGKILLed launcher forwards nothing (cli/lifecycle.ts, watchedAncestors).
  const child = spawn(local, process.argv.slice(1), { stdio: 'inherit', env: { ...process.env, CAUSEWAY_LAUNCHER_PID: String(process.pid) } });
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('error', (error) => {
    process.stderr.write(`causeway: error: cannot start ${local}: ${error.message}\n`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    }
    process.exit(code ?? 1);
  });
} else {
  await runCommand(process.argv[2]);
}

async function runCommand(command) {
  if (!Object.hasOwn(COMMAND_BUNDLES, command ?? '') || runsFromSource(command) || !(await runCommandBundle(command))) {
    const { register } = await import('tsx/esm/api');
    register();
    const { run, quietUnactionableWarnings } = await import('../cli/main.ts');
    quietUnactionableWarnings();
    const code = await run(process.argv.slice(2));
    if (code !== 0) process.exit(code);
  }
}

/**
 * The long-running commands — `causeway sidecar`, `gateway`, `controller`, `federation` —
 * run their single-file bundle (dist/<command>.mjs; scripts/bundles.mjs builds it here on
 * first use and whenever a source it was built from changed) instead of the TypeScript
 * through tsx: the process then holds only its own code (~20–30 MB less RSS). The
 * process replaces itself (process.execve, same pid) with `node dist/<command>.mjs …`, the
 * sidecar in its environment (SIDECAR_ENV: V8 heap flag in NODE_OPTIONS, MALLOC_ARENA_MAX),
 * since both only apply at start-up. CAUSEWAY_FROM_SOURCE=1 runs the sources through tsx
 * as before (CAUSEWAY_SIDECAR_FROM_SOURCE=1: the sidecar only).
 */
async function runCommandBundle(name) {
  // Returns false when the bundle cannot be built: the caller runs the sources instead.
  let bundle;
  try {
    bundle = ensureCommandBundleInChild(name);
  } catch (error) {
    process.stderr.write(`causeway: warning: cannot build the ${name} bundle (${error instanceof Error ? error.message.split('\n')[0] : String(error)}); running the sources through tsx\n`);
    return false;
  }
  const env = COMMAND_BUNDLES[name].sidecarEnv ? sidecarEnv(process.env) : process.env;
  if (typeof process.execve === 'function') {
    process.execve(process.execPath, [process.execPath, ...process.execArgv, bundle, ...process.argv.slice(2)], env);
  }
  // Node < 22.15 has no execve: run the bundle in this process, without SIDECAR_ENV.
  const { main } = await import(pathToFileURL(bundle).href);
  const code = await main(process.argv.slice(2));
  if (code !== 0) process.exit(code);
  return true;
}

function runsFromSource(name) {
  return process.env.CAUSEWAY_FROM_SOURCE !== undefined || (name === 'sidecar' && process.env.CAUSEWAY_SIDECAR_FROM_SOURCE !== undefined);
}
