import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { encodeSni, type SnapshotService, type SnapshotTarget } from '../mesh/index.js';
import { ProxyErrorCodes, SecureNamingError, UpstreamConnectError } from './errors.js';
import { spiffeIdOf } from './peer-certificate.js';
import type { WorkloadIdentity } from './workload-identity.js';

export interface UpstreamRoute {
  readonly service: SnapshotService;
  readonly servicePort: number;
  readonly subset?: string | undefined;
  readonly trustDomain: string;
}

export interface DialOptions {
  connectTimeoutMs: number;
  identity: WorkloadIdentity;
  /** ALPN to offer (`['h2']` for HTTP/2 and gRPC ports); none by default: the byte stream is the app's. */
  alpnProtocols?: string[] | undefined;
}

/** The SNI a client sidecar sends to reach `route` at `target`'s cluster (endpoint or gateway alike). */
export function sniFor(route: UpstreamRoute, target: SnapshotTarget): string {
  return encodeSni({
    port: route.servicePort,
    subset: route.subset,
    service: route.service.name,
    namespace: route.service.namespace,
    cluster: target.cluster,
    trustDomain: route.trustDomain,
  });
}

export function describeTarget(target: SnapshotTarget): string {
  return `${target.kind} ${target.address}:${target.port} (${target.cluster})`;
}

/**
 * Opens mTLS to one target: presents the workload certificate, sends the route's SNI,
 * verifies the server chain against the trust bundle and — secure naming — that the
 * server's SPIFFE ID is one the service allows. Returns the socket at once (for
 * http.Agent#createConnection); failures arrive as an `error` event carrying an
 * {@link UpstreamConnectError}, and `secureConnect` marks success.
 */
export function dialTarget(target: SnapshotTarget, route: UpstreamRoute, options: DialOptions): TLSSocket {
  const allowed = route.service.serviceAccounts;
  const name = describeTarget(target);
  let namingError: SecureNamingError | undefined;
  const socket = tlsConnect({
    host: target.address,
    port: target.port,
    servername: sniFor(route, target),
    secureContext: options.identity.secureContext,
    rejectUnauthorized: true,
    ...(options.alpnProtocols ? { ALPNProtocols: options.alpnProtocols } : {}),
    checkServerIdentity: (_host, cert) => {
      const presented = spiffeIdOf(cert);
      if (presented !== undefined && allowed.includes(presented)) return undefined;
      namingError = new SecureNamingError(name, presented, allowed);
      return namingError;
    },
  });
  socket.setNoDelay(true);
  let tcpConnected = false;
  let done = false;
  const timer = setTimeout(() => {
    if (done) return;
    done = true;
    socket.destroy(new UpstreamConnectError(ProxyErrorCodes.connectTimeout, name, `no mTLS session within ${options.connectTimeoutMs} ms`));
  }, options.connectTimeoutMs);
  socket.once('connect', () => {
    tcpConnected = true;
  });
  // Re-cast a failure before the session is up into our classes, so that callers (also
  // http.Agent's requests, which only see the socket's error) and metrics get one code.
  const emit = socket.emit;
  socket.once('secureConnect', () => {
    done = true;
    clearTimeout(timer);
    // A pooled connection carries many requests: every later event skips the wrapper
    // (its rest/spread arguments showed in profiles). Errors from here on pass unchanged anyway.
    socket.emit = emit;
  });
  socket.emit = function (this: TLSSocket, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'error' && !done) {
      done = true;
      clearTimeout(timer);
      const cause = args[0] as NodeJS.ErrnoException;
      if (namingError) args[0] = namingError;
      else if (!(cause instanceof UpstreamConnectError)) {
        args[0] = tcpConnected
          ? new UpstreamConnectError(ProxyErrorCodes.handshakeFailed, name, `TLS handshake failed (${cause.code ?? cause.message})`, { cause })
          : new UpstreamConnectError(ProxyErrorCodes.connectFailed, name, `TCP connect failed (${cause.code ?? cause.message})`, { cause });
      }
    }
    return (emit as (this: TLSSocket, event: string | symbol, ...a: unknown[]) => boolean).call(this, event, ...args);
  } as TLSSocket['emit'];
  socket.once('close', () => clearTimeout(timer));
  return socket;
}

/** {@link dialTarget} as a promise resolving once the mTLS session is up and verified. */
export function connectTarget(target: SnapshotTarget, route: UpstreamRoute, options: DialOptions): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = dialTarget(target, route, options);
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}
