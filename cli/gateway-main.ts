/**
 * The gateway process's own entry point. `causeway gateway …` runs this module, bundled
 * into one minified file (dist/gateway.mjs, built by scripts/bundles.mjs), so that a
 * gateway and its listener workers (node:cluster forks run the same file) load the
 * gateway's code and nothing else — no tsx, no other command group. The command is the
 * same: cli/commands/gateway.ts.
 *
 *   node dist/gateway.mjs gateway --config cluster.yaml      (dist/gateway.sh)
 */
import { registerGatewayCommands } from './commands/gateway.js';
import { commandMain, runIfMainModule } from './program.js';

/** `causeway <argv>` with only the gateway command group; returns the exit code. */
export const main = commandMain([registerGatewayCommands]);

await runIfMainModule(import.meta.url, main);
