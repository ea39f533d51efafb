import { pino, type Logger, type DestinationStream } from 'pino';

/**
 * One root logger per process; each module takes a child: `logger('sni-router')`.
 * Level from CAUSEWAY_LOG_LEVEL (default `info`; tests default to `warn`). Logs go to
 * stderr so that command output on stdout stays machine-readable.
 */
let root: Logger | undefined;

function defaultLevel(): string {
  return process.env.CAUSEWAY_LOG_LEVEL ?? (process.env.AVA_WORKER_ID !== undefined || process.env.NODE_ENV === 'test' ? 'warn' : 'info');
}

export function createRootLogger(options: { level?: string; destination?: DestinationStream; name?: string } = {}): Logger {
  return nestModules(
    pino(
      { level: options.level ?? defaultLevel(), base: { name: options.name ?? 'causeway', pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
      options.destination ?? pino.destination({ fd: 2, sync: false }),
    ),
  );
}

const kModule = Symbol('causeway.log.module');
type ModuleLogger = Logger & { [kModule]?: string };

/**
 * Makes a child's `module` nest under its parent's (`sidecar/outbound`) instead of adding
 * a second `"module"` key to every line: pino appends child bindings to the parent's
 * without looking at their keys, and a JSON reader keeps only one of two equal keys.
 * Installed on the root; every descendant inherits it (pino children are prototype copies).
 */
function nestModules(root: Logger): Logger {
  const pinoChild = root.child as unknown as (this: Logger, bindings: Record<string, unknown>, options?: object) => Logger;
  const { chindingsSym } = pino.symbols;
  const child = function (this: ModuleLogger, bindings: Record<string, unknown>, options?: object): Logger {
    const parentModule = this[kModule];
    if (typeof bindings.module !== 'string') return pinoChild.call(this, bindings, options);
    const module = parentModule === undefined ? bindings.module : `${parentModule}/${bindings.module}`;
    const created = pinoChild.call(this, { ...bindings, module }, options) as unknown as ModuleLogger & Record<symbol, string>;
    created[kModule] = module;
    // The inherited bindings still hold the parent's module: drop it (its exact rendering, so nothing else matches).
    if (parentModule !== undefined) created[chindingsSym] = created[chindingsSym]!.replace(`,"module":${JSON.stringify(parentModule)}`, '');
    return created;
  };
  (root as { child: unknown }).child = child;
  return root;
}

/** Replaces the process's root logger (e.g. a component naming itself, or a test capturing lines). */
export function setRootLogger(logger: Logger): void {
  root = logger;
}

export function rootLogger(): Logger {
  root ??= createRootLogger();
  return root;
}

/** A child logger for one module (a `module` given to a child of it nests: `parent/child`). */
export function logger(module: string, bindings: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ module, ...bindings });
}

export type { Logger };

/**
 * Resolves once the root logger has no write under way (at most `timeoutMs`), for a process
 * about to call process.exit(): the destination writes asynchronously, and at exit pino
 * writes synchronously only what is still buffered — a line whose asynchronous write had
 * started is lost if the write had not happened yet. pino's `flush()` does not wait for it
 * (a no-op for a destination without `minLength`), so this looks at the destination's
 * own flag.
 */
export async function logsWritten(timeoutMs = 500): Promise<void> {
  const destination = (rootLogger() as unknown as Record<symbol, { _writing?: boolean } | undefined>)[pino.symbols.streamSym];
  const until = Date.now() + timeoutMs;
  while (destination?._writing === true && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 5));
}
