/**
 * The controller process's own entry point, bundled into dist/controller.mjs by
 * scripts/bundles.mjs: `causeway controller …` runs it (the command group also holds
 * `service`, `policy` and `export`, which run from the sources). The command is the
 * same: cli/commands/controller.ts.
 */
import { registerControllerCommands } from './commands/controller.js';
import { commandMain, runIfMainModule } from './program.js';

/** `causeway <argv>` with only the controller command group; returns the exit code. */
export const main = commandMain([registerControllerCommands]);

await runIfMainModule(import.meta.url, main);
