import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { hostname } from 'node:os';

/**
 * The header through which the sidecar tells the app who called: the caller's SPIFFE ID,
 * taken from the client certificate it verified on its inbound (15006) listener.
 */
export const PEER_IDENTITY_HEADER = 'x-causeway-peer-identity';
/** The caller's cluster, as the sidecar read it from the caller certificate's issuer. */
export const PEER_CLUSTER_HEADER = 'x-causeway-peer-cluster';

export interface EchoOptions {
  readonly port: number;
  readonly host?: string;
  readonly name: string;
  readonly cluster: string;
  readonly version: string;
}

/** What the echo app answers on every path but /healthz. */
export interface EchoReply {
  readonly service: string;
  readonly cluster: string;
  readonly version: string;
  readonly hostname: string;
  /** The caller's SPIFFE ID as the sidecar reported it, or null when no sidecar vouched for one. */
  readonly peerIdentity: string | null;
  /** The caller's cluster as the sidecar reported it, or null. */
  readonly peerCluster: string | null;
  readonly method: string;
  readonly path: string;
}

/**
 * The caller's identity: our own header first; else the URI of an Envoy-style
 * `x-forwarded-client-cert` (`By=…;URI=spiffe://…`), which other meshes' sidecars send.
 */
export function peerIdentityOf(headers: IncomingHttpHeaders): string | null {
  const own = headers[PEER_IDENTITY_HEADER];
  if (typeof own === 'string' && own.length > 0) return own;
  const xfcc = headers['x-forwarded-client-cert'];
  if (typeof xfcc === 'string') {
    const element = xfcc.split(',').pop() ?? '';
    const uri = /(?:^|;)URI=("?)([^";]+)\1/i.exec(element);
    if (uri) return uri[2]!;
  }
  return null;
}

export function startEchoServer(options: EchoOptions): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz' || req.url === '/healthz/ready') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
      return;
    }
    const reply: EchoReply = {
      service: options.name,
      cluster: options.cluster,
      version: options.version,
      hostname: process.env.HOSTNAME ?? hostname(),
      peerIdentity: peerIdentityOf(req.headers),
      peerCluster: typeof req.headers[PEER_CLUSTER_HEADER] === 'string' ? req.headers[PEER_CLUSTER_HEADER] : null,
      method: req.method ?? 'GET',
      path: req.url ?? '/',
    };
    const body = `${JSON.stringify(reply)}\n`;
    // Drain any request body before answering, so keep-alive connections stay usable.
    req.resume();
    req.once('end', () => res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body));
  });
  server.keepAliveTimeout = 30_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '0.0.0.0', () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
