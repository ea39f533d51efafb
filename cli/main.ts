import type { Command } from 'commander';
import { commandGroupsFor } from './commands/index.js';
import { quietUnactionableWarnings } from './process-warnings.js';
import { createProgram, runProgram } from './program.js';

export { ExitCodes, exitCodeFor, oneLine } from './program.js';
export { quietUnactionableWarnings };

/**
 * Builds the `causeway` command tree for `argv`; every part registers its group in
 * commands/index.ts, and only the group `argv` names is loaded (all of them for help).
 */
export async function buildProgram(argv: readonly string[] = []): Promise<Command> {
  return createProgram(await commandGroupsFor(argv));
}

export async function run(argv: string[]): Promise<number> {
  return runProgram(() => buildProgram(argv), argv);
}

const isMain = process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  quietUnactionableWarnings();
  const code = await run(process.argv.slice(2));
  // Long-running commands (controller, gateway…) keep the loop alive and exit on their own.
  process.exitCode = code;
  if (code !== 0) process.exit(code);
}
