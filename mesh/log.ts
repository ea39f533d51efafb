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
