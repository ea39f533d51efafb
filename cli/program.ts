import { readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command, CommanderError } from 'commander';
import { quietUnactionableWarnings } from './process-warnings.js';
import { CausewayError, ErrorCodes, UsageError, ValidationError } from '../mesh/index.js';

/**
 * The `causeway` program's shape, error handling and exit codes, apart from which
 * command groups it has: cli/main.ts builds it with the groups argv names, the sidecar's
 * own entry point (cli/sidecar-main.ts) with the sidecar group alone.
 */

export const ExitCodes = { ok: 0, failure: 1, usage: 2 } as const;

export type Register = (program: Command) => void;

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

/** The `causeway` command tree with the given command groups registered. */
export function createProgram(registers: readonly Register[]): Command {
  const program = new Command('causeway')
    .description('Causeway connects service-mesh clusters: SNI-passthrough gateways, etcd federation, a shared-root SPIFFE CA and sidecars.')
    .version(packageVersion(), '-V, --version', 'print the version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    // Options belong to the command they follow (`causeway app echo --version v2`, `federation
    // grant --config …`), whichever groups are loaded; so `causeway --version` goes first.
    .enablePositionalOptions()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const register of registers) register(program);
  // Every subcommand inherits the error handling, so usage errors exit 2 at any level.
  const inherit = (cmd: Command) => {
    for (const sub of cmd.commands) {
      sub.exitOverride().showHelpAfterError('(run with --help for usage)');
      inherit(sub);
    }
  };
  inherit(program);
  return program;
}

/** Exit code for an error: 2 for bad usage or bad input files, 1 for failures. */
export function exitCodeFor(error: unknown): number {
  if (error instanceof CommanderError) return error.exitCode === 0 ? ExitCodes.ok : ExitCodes.usage;
  if (error instanceof UsageError) return ExitCodes.usage;
  if (error instanceof ValidationError && error.code === ErrorCodes.configInvalid) return ExitCodes.usage;
  if (error instanceof CausewayError && error.code === ErrorCodes.configUnreadable) return ExitCodes.usage;
  return ExitCodes.failure;
}

export function oneLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const code = error instanceof CausewayError ? ` [${error.code}]` : '';
  return `${message.replace(/\s*\n\s*/g, ' ')}${code}`;
}

/** Builds the program (`build` may fail: exit 1), runs `argv` on it and returns the exit code. */
export async function runProgram(build: () => Command | Promise<Command>, argv: string[]): Promise<number> {
  let program: Command;
  try {
    program = await build();
  } catch (error) {
    process.stderr.write(`causeway: error: ${oneLine(error)}\n`);
    return ExitCodes.failure;
  }
  try {
    await program.parseAsync(argv, { from: 'user' });
    return ExitCodes.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander already printed the message (or help/version output).
      return exitCodeFor(error);
    }
    process.stderr.write(`causeway: error: ${oneLine(error)}\n`);
    if (process.env.CAUSEWAY_DEBUG) process.stderr.write(`${(error as Error).stack ?? ''}\n`);
    return exitCodeFor(error);
  }
}

/** `main(argv)` of a program with just these command groups (a command's own entry point). */
export function commandMain(registers: readonly Register[]): (argv: string[]) => Promise<number> {
  return (argv) => runProgram(() => createProgram(registers), argv);
}

/**
 * For a command's own entry point (cli/<command>-main.ts, the modules scripts/bundles.mjs
 * bundles): when the module at `moduleUrl` is the script node was started with, runs
 * `main(argv)` and sets the exit code. Long-running commands keep the loop alive until
 * SIGTERM/SIGINT and return 0 then.
 */
export async function runIfMainModule(moduleUrl: string, main: (argv: string[]) => Promise<number>): Promise<void> {
  if (process.argv[1] === undefined) return;
  try {
    if (moduleUrl !== pathToFileURL(realpathSync(process.argv[1])).href) return;
  } catch {
    return; // argv[1] is not a file (node -e, a REPL): not this module
  }
  quietUnactionableWarnings();
  const code = await main(process.argv.slice(2));
  process.exitCode = code;
  if (code !== 0) process.exit(code);
}
