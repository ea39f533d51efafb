/**
 * The sidecar process's own entry point. `causeway sidecar …` runs this module, bundled
 * into one minified file (dist/sidecar.mjs, built by scripts/sidecar-bundle.mjs), so that a
 * sidecar process loads the sidecar's code and nothing else — no tsx, no other command
 * group, no module graph to resolve. The command is the same: cli/commands/sidecar.ts.
 *
 *   node dist/sidecar.mjs sidecar --config workload.yaml     (in SIDECAR_ENV; dist/sidecar.sh)
 *
 * It also re-exports proxy/index.ts, so that a harness (bench/mesh-sidecar.mjs) can run
 * the very same bundle with a static snapshot source.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { registerSidecarCommands } from './commands/sidecar.js';
import { createProgram, runProgram } from './program.js';

export * from '../proxy/index.js';

/** `causeway <argv>` with only the sidecar command group; returns the exit code. */
export function main(argv: string[]): Promise<number> {
  return runProgram(() => createProgram([registerSidecarCommands]), argv);
}

function isMainModule(): boolean {
  if (process.argv[1] === undefined) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
}

if (isMainModule()) {
  const code = await main(process.argv.slice(2));
  // The sidecar command keeps the loop alive until SIGTERM/SIGINT and returns 0 then.
  process.exitCode = code;
  if (code !== 0) process.exit(code);
}
