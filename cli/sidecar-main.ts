/**
 * The sidecar process's own entry point. `causeway sidecar …` runs this module, bundled
 * into one minified file (dist/sidecar.mjs, built by scripts/bundles.mjs), so that a
 * sidecar process loads the sidecar's code and nothing else — no tsx, no other command
 * group, no module graph to resolve. The command is the same: cli/commands/sidecar.ts.
 *
 *   node dist/sidecar.mjs sidecar --config workload.yaml     (in SIDECAR_ENV; dist/sidecar.sh)
 *
 * It also re-exports proxy/index.ts, so that a harness (bench/mesh-sidecar.mjs) can run
 * the very same bundle with a static snapshot source.
 */
import { registerSidecarCommands } from './commands/sidecar.js';
import { commandMain, runIfMainModule } from './program.js';

export * from '../proxy/index.js';

/** `causeway <argv>` with only the sidecar command group; returns the exit code. */
export const main = commandMain([registerSidecarCommands]);

await runIfMainModule(import.meta.url, main);
