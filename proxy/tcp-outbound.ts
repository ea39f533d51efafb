import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { SnapshotTarget } from '../mesh/index.js';
import type { TcpAccessFacts } from './access-log.js';
import type { SidecarMetrics } from './metrics.js';
import { peerSpiffeId } from './peer-certificate.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import type { AttemptPlan, Circuit, OutboundListenerSpec, RequestPolicy } from './request-policy.js';
import type { TargetConnections } from './target-connections.js';

/**
 * Outbound TCP ports (and the forward proxy's CONNECT tunnels): per connection, a target
 * from the request policy's plan — the next one after a failed connect, handshake or
 * secure-naming check — then the bytes spliced both ways. The circuit breaker counts
 * open connections and connects under way.
 */
export class TcpOutbound {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #metrics: SidecarMetrics;
  readonly #downstreams = new Set<Socket>();

  constructor(policy: RequestPolicy, connections: TargetConnections, metrics: SidecarMetrics) {
    this.#policy = policy;
    this.#connections = connections;
    this.#metrics = metrics;
  }

  /** A TCP port's listener: each connection goes to the service the listener stands for at that moment. */
  server(listener: { readonly spec: OutboundListenerSpec | undefined }): TcpServer {
    return createTcpServer({ allowHalfOpen: false, pauseOnConnect: true, noDelay: true }, (socket) => {
      const spec = listener.spec;
      if (!spec) return socket.destroy();
      void this.proxy(socket, spec);
    });
  }

  close(): void {
    for (const socket of this.#downstreams) socket.destroy();
  }

  /** Proxies one (paused) downstream connection to the service of `spec`. */
  async proxy(downstream: Socket, spec: OutboundListenerSpec): Promise<void> {
    const started = performance.now();
    this.#downstreams.add(downstream);
    this.#metrics.activeConnections.inc({ direction: 'outbound' });
    downstream.on('error', () => {});
    let upstream: TLSSocket | undefined;
    let target: SnapshotTarget | undefined;
    let retries = 0;
    // Read while the TLS session is up (a destroyed socket has no peer certificate).
    let destinationPrincipal: string | undefined;
    const finish = (result: string) => {
      this.#downstreams.delete(downstream);
      this.#metrics.activeConnections.dec({ direction: 'outbound' });
      const access: TcpAccessFacts | undefined = this.#policy.accessLog.enabled
        ? {
            direction: 'outbound',
            started,
            result,
            retries,
            bytesReceived: downstream.bytesRead,
            bytesSent: downstream.bytesWritten,
            upstreamHost: target && `${target.address}:${target.port}`,
            upstreamCluster: target?.cluster,
            sourceCluster: undefined,
            destinationService: spec.serviceLabel,
            sourcePrincipal: this.#policy.sourcePrincipal,
            destinationPrincipal,
          }
        : undefined;
      this.#policy.connectionDone(spec.serviceLabel, target, result, started, access);
    };
    let circuit: Circuit;
    let plan: AttemptPlan | undefined;
    try {
      plan = this.#policy.plan(spec);
      circuit = plan.circuit;
      ({ socket: upstream, target, retries } = await this.#connectWithRetries(plan));
    } catch (error) {
      // Every attempt failed (a plan or the breaker refusing tried none).
      if (plan && error instanceof ProxyError && error.code !== ProxyErrorCodes.circuitOpen) retries = plan.attempts - 1;
      downstream.destroy();
      finish(error instanceof ProxyError ? error.code : 'error');
      return;
    }
    if (downstream.destroyed) {
      upstream.destroy();
      finish('downstream_closed');
      return;
    }
    if (this.#policy.accessLog.enabled) destinationPrincipal = peerSpiffeId(upstream);
    circuit.active++;
    let closed = 0;
    const onClose = () => {
      if (++closed === 2) {
        circuit.active--;
        finish('ok');
      }
      downstream.destroy();
      upstream.destroy();
    };
    upstream.on('error', () => {}).once('close', onClose);
    downstream.once('close', onClose);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
    downstream.resume();
  }

  async #connectWithRetries(plan: AttemptPlan): Promise<{ socket: TLSSocket; target: SnapshotTarget; retries: number }> {
    this.#policy.admitConnection(plan);
    const circuit = plan.circuit;
    let lastError: unknown;
    for (let i = 0; i < plan.attempts; i++) {
      const target = plan.targets[i]!;
      circuit.pending++;
      try {
        const socket = await this.#connections.connect(target, plan.route, plan.connectTimeoutMs);
        this.#policy.connected(target);
        return { socket, target, retries: i };
      } catch (error) {
        lastError = error;
        this.#policy.connectFailed(plan, target, error);
      } finally {
        circuit.pending--;
      }
    }
    throw lastError instanceof ProxyError ? lastError : new ProxyError(ProxyErrorCodes.connectFailed, String(lastError));
  }
}
