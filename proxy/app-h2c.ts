import type { ServerHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../mesh/index.js';
import { H2cUpgradedSocket, SWITCHING_TO_H2C, decideUpgrade } from './h2c-upgrade.js';
import { textResponse } from './http1.js';
import type { BufferedRequest, DownstreamConnection } from './http1-relay.js';
import type { SidecarMetrics } from './metrics.js';
import { IDLE_KEEPALIVE_MS } from './wire.js';

/**
 * The app's h2c connections to outbound listeners, whatever the port's protocol: the
 * switch of an `Upgrade: h2c` request's connection to HTTP/2, and the accounting of the
 * HTTP/2 sessions (prior knowledge or upgraded) — gauge, idle timeout, debug log of
 * protocol failures.
 */
export class AppH2c {
  readonly #metrics: SidecarMetrics;
  readonly #log: Logger;

  constructor(metrics: SidecarMetrics, log: Logger) {
    this.#metrics = metrics;
    this.#log = log.child({ module: 'app-h2c' });
  }

  /**
   * A request that asked for `Upgrade: h2c` on the fast path. `'upgraded'`: the 101 went
   * out and `serve` got the connection as HTTP/2, the request being its stream 1.
   * `'refused'`: answered 400 (unreadable `HTTP2-Settings`) and closed. `'declined'`:
   * nothing was sent; the caller serves the request as HTTP/1.1 (RFC 9113 §3.1).
   */
  upgrade(connection: DownstreamConnection<undefined>, request: BufferedRequest, serve: (socket: Duplex) => void): 'upgraded' | 'declined' | 'refused' {
    const decision = decideUpgrade(request.head, request.body);
    const upgrades = this.#metrics.h2cUpgrades;
    if (decision.kind === 'decline') {
      upgrades.inc({ result: 'declined', reason: decision.reason });
      this.#log.debug({ reason: decision.reason, path: request.head.target }, 'Upgrade: h2c declined; served as HTTP/1.1');
      return 'declined';
    }
    if (decision.kind === 'refuse') {
      upgrades.inc({ result: 'refused', reason: 'bad-settings' });
      this.#log.debug({ err: decision.error }, 'Upgrade: h2c refused');
      connection.write(textResponse(400, `${decision.error.message}\n`, { 'x-causeway-error': decision.error.code }, true));
      connection.finish(true);
      return 'refused';
    }
    upgrades.inc({ result: 'upgraded', reason: 'none' });
    connection.write(SWITCHING_TO_H2C);
    connection.detach((early) => {
      const socket = connection.socket as Socket;
      if (socket.destroyed) return;
      serve(new H2cUpgradedSocket(socket, decision, early));
    });
    return 'upgraded';
  }

  /** An HTTP/2 session with the app: counted while open, closed when idle, its failures logged (its connection goes with it). */
  track(session: ServerHttp2Session, connection?: Duplex): void {
    const metrics = this.#metrics;
    metrics.h2Sessions.inc({ direction: 'outbound', peer: 'app' });
    session.once('close', () => {
      connection?.destroy();
      metrics.h2Sessions.dec({ direction: 'outbound', peer: 'app' });
    });
    // An app that is not speaking HTTP/2 after all (a bad preface, a protocol error): logged, connection closed.
    session.on('error', (error) => this.#log.debug({ err: error }, 'h2c session with the app failed'));
    session.setTimeout(IDLE_KEEPALIVE_MS, () => session.close());
  }
}
