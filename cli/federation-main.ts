/**
 * The federation process's own entry point, bundled into dist/federation.mjs by
 * scripts/bundles.mjs: `causeway federation …` (the long-running link service and its
 * grant, revoke and status subcommands) runs it. The command is the same:
 * cli/commands/federation.ts.
 */
import { registerFederationCommands } from './commands/federation.js';
import { commandMain, runIfMainModule } from './program.js';

/** `causeway <argv>` with only the federation command group; returns the exit code. */
export const main = commandMain([registerFederationCommands]);

await runIfMainModule(import.meta.url, main);
