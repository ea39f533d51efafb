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
  return pino(
    { level: options.level ?? defaultLevel(), base: { name: options.name ?? 'causeway', pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime },
    options.destination ?? pino.destination({ fd: 2, sync: false }),
  );
}

/** Replaces the process's root logger (e.g. a component naming itself, or a test capturing lines). */
export function setRootLogger(logger: Logger): void {
  root = logger;
}

export function rootLogger(): Logger {
  root ??= createRootLogger();
  return root;
}

/** A child logger for one module. */
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
