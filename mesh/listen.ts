import type { AddressInfo, ListenOptions, Server } from 'node:net';
import { ListenError, type PortSetting } from './errors.js';

/**
 * Every long-running command binds its listeners through here, so that a port another
 * component on the host already holds fails start-up with the setting and flag that
 * choose it (docs/architecture.md "Ports"), never with Node's bare `listen EADDRINUSE`.
 */

/** The errno of a failed bind: Node's `code`, or the one a library (gRPC) put in its message. */
function errnoOf(error: unknown): string {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
  const inMessage = /\b(EADDRINUSE|EACCES|EADDRNOTAVAIL|EPERM|EINVAL)\b/.exec(error instanceof Error ? error.message : String(error));
  return inMessage?.[1] ?? 'unknown error';
}

/** A failed bind of `host:port`, as a {@link ListenError} naming `port`'s setting (for binds that do not go through {@link listenOn}: UDP, gRPC). */
export function listenError(error: unknown, address: { readonly host: string; readonly port: number }, port: PortSetting): ListenError {
  if (error instanceof ListenError) return error;
  return new ListenError({ ...port, host: address.host, port: address.port, errno: errnoOf(error) }, { cause: error });
}

/**
 * `server.listen(options)` (TCP, TLS or HTTP), resolved with the bound address. A bind
 * that fails rejects with a {@link ListenError} naming `port`'s setting and flag.
 */
export function listenOn(server: Server, options: ListenOptions & { readonly host: string; readonly port: number }, port: PortSetting): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(listenError(error, options, port));
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** The ports of `observability` and the flags that override them on every long-running command. */
export const ObservabilityPorts = {
  ready: { setting: 'observability.readyPort', flag: '--ready-port' },
  metrics: { setting: 'observability.metricsPort', flag: '--metrics-port' },
} as const satisfies Record<string, PortSetting>;
