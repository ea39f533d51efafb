import { Agent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type Server as HttpServer, type ServerResponse } from 'node:http';
import { connect as tcpConnect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import { InboundH2 } from './h2-inbound.js';
import { listenOn, parseSpiffeId, tryParseSni, type AuthorizationPolicy, type Logger, type ServicePort } from '../mesh/index.js';
import { AccessLog, fastPathFacts, headerText, type HttpAccessFacts } from './access-log.js';
import type { RequestTrace, Tracer } from './tracing.js';
import { recordServerSpan } from './request-spans.js';
import { authorize, rbacDetails, type Caller } from './authorization.js';
import type { SidecarTuning } from './config.js';
import type { SidecarMetrics } from './metrics.js';
import { ProxyErrorCodes } from './errors.js';
import { clusterOfIssuer, spiffeIdOf } from './peer-certificate.js';
import { encodeProxyV2 } from './proxy-protocol.js';
import { headerValue, rewriteHead, textResponse, upgradeLines, type ResponseHead } from './http1.js';
import { DownstreamConnection, UpstreamConnection, handOffServer, type AbortListener, type BufferedRequest, type DownstreamHandler, type ResponseSink } from './http1-relay.js';
import { APP_RESET, APP_UNAVAILABLE, IDLE_KEEPALIVE_MS, PEER_CLUSTER_HEADER, PEER_IDENTITY_HEADER } from './wire.js';
import type { WorkloadIdentity } from './workload-identity.js';

export interface InboundDeps {
  readonly tuning: SidecarTuning;
  readonly identity: WorkloadIdentity;
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  readonly cluster: string;
  readonly namespace: string;
  readonly service: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly ports: readonly ServicePort[];
  readonly mtlsMode: 'strict' | 'permissive';
  readonly host: string;
  readonly port: number;
  /** Current authorization policies (from the last snapshot). */
  readonly policies: () => readonly AuthorizationPolicy[];
  /** Spans and trace context; undefined = tracing off. */
  readonly tracer: Tracer | undefined;
  /** Subset definitions of this service (from the last snapshot). */
  readonly subsets: () => Readonly<Record<string, Readonly<Record<string, string>>>> | undefined;
}

interface PeerLabels {
  direction: 'inbound';
  source_cluster: string;
  source_service: string;
  destination_cluster: string;
  destination_service: string;
}

interface InboundContext {
  caller: Caller;
  port: ServicePort;
  denied: string | undefined;
  labels?: PeerLabels;
  /** The policy list `denied` was decided against: a pooled connection re-decides only when the snapshot's list changes. */
  decidedFor?: readonly AuthorizationPolicy[];
  /** The fast path's connection to the app (one per inbound connection, opened at its first request). */
  app?: UpstreamConnection | undefined;
  /** The caller's identity as header lines for the app, built once per connection. */
  identityLines?: string;
}

/** Headers a caller may not set: the sidecar writes them from the verified certificate. */
const IDENTITY_HEADERS: ReadonlySet<string> = new Set([PEER_IDENTITY_HEADER, PEER_CLUSTER_HEADER]);
/** With tracing on, the caller's traceparent is replaced by one naming this sidecar's span. */
const IDENTITY_AND_TRACE_HEADERS: ReadonlySet<string> = new Set([PEER_IDENTITY_HEADER, PEER_CLUSTER_HEADER, 'traceparent']);
const NO_EXTRA_DROPS: ReadonlySet<string> = new Set();
/**
 * ALPN the inbound listener answers, for clients that offer it: client sidecars offer `h2`
 * on `http2`/`grpc` ports only; sidecars from before HTTP/2, and every other port, offer
 * none and get none (an offer without a match also continues without ALPN).
 */
const INBOUND_ALPN = ['h2', 'http/1.1'];

/**
 * The inbound listener (15006): terminates mTLS (STRICT: a client certificate chaining
 * to the trust bundle is required; PERMISSIVE: plaintext and certificate-less TLS are
 * let through as an unauthenticated caller), checks that the SNI names this workload,
 * applies authorization policy, and forwards to the app port the SNI names, telling the
 * app who called (HTTP header, or PROXY v2 for TCP ports that ask for it).
 */
export class InboundListener {
  readonly #deps: InboundDeps;
  readonly #accessLog: AccessLog;
  readonly #tls: TlsServer;
  readonly #front: TcpServer | undefined;
  readonly #http = new Map<number, HttpServer>();
  readonly #contexts = new WeakMap<Duplex, InboundContext>();
  readonly #appAgent = new Agent({ keepAlive: true, maxSockets: 1024, maxFreeSockets: 128, scheduling: 'lifo' });
  readonly #sockets = new Set<Duplex>();
  readonly #onIdentityChange: () => void;
  readonly #fastPath: DownstreamHandler<InboundContext>;
  readonly #appHost: AppExchangeHost;
  readonly #h2: InboundH2;
  #port = 0;

  constructor(deps: InboundDeps) {
    this.#deps = deps;
    this.#accessLog = new AccessLog(deps.log, deps.tuning);
    this.#tls = createTlsServer({ ...deps.identity.serverContextOptions(), requestCert: true, rejectUnauthorized: false, handshakeTimeout: 10_000, noDelay: true, ALPNProtocols: INBOUND_ALPN });
    this.#h2 = new InboundH2({ appHost: deps.tuning.appHost, metrics: deps.metrics, log: deps.log.child({ module: 'h2-inbound' }), serviceLabel: `${deps.service}.${deps.namespace}`, cluster: deps.cluster, dropHeaders: IDENTITY_HEADERS, tracer: deps.tracer });
    this.#tls.on('secureConnection', (socket) => this.#onSecureConnection(socket));
    this.#tls.on('tlsClientError', (error, socket) => {
      deps.metrics.inboundRefused.inc({ reason: 'handshake' });
      deps.log.debug({ err: error, remote: socket.remoteAddress }, 'inbound TLS handshake failed');
    });
    // Rotation: new handshakes use the new certificate; established sessions are untouched.
    this.#onIdentityChange = () => {
      try {
        this.#tls.setSecureContext(deps.identity.serverContextOptions());
      } catch (error) {
        deps.log.error({ err: error }, 'could not install the new certificate in the inbound listener');
      }
    };
    deps.identity.on('change', this.#onIdentityChange);
    this.#appHost = {
      metrics: deps.metrics,
      log: deps.log,
      accessLog: this.#accessLog,
      parties: (context) => this.#parties(context),
      tracer: deps.tracer,
      retry: (connection, request) => this.#forwardHttp(connection, request, true),
    };
    this.#fastPath = {
      handle: (connection, request) => this.#forwardHttp(connection, request),
      handOff: (socket, _buffered, connection) => {
        this.#contexts.set(socket, connection.context);
        this.#httpServerFor(connection.context.port).emit('connection', socket);
        socket.resume();
      },
    };
    if (deps.mtlsMode === 'permissive') {
      this.#front = createTcpServer({ pauseOnConnect: false, noDelay: true }, (socket) => this.#sniff(socket));
    }
  }

  get port(): number {
    return this.#port;
  }

  async start(): Promise<number> {
    const server = this.#front ?? this.#tls;
    this.#port = (await listenOn(server, { host: this.#deps.host, port: this.#deps.port }, { setting: 'inboundPort' })).port;
    return this.#port;
  }

  async close(): Promise<void> {
    this.#deps.identity.off('change', this.#onIdentityChange);
    const server = this.#front ?? this.#tls;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    await this.#h2.close();
    for (const s of this.#sockets) s.destroy();
    for (const h of this.#http.values()) h.closeAllConnections();
    this.#appAgent.destroy();
    await closed;
  }

  /** PERMISSIVE: a TLS ClientHello starts with 0x16; anything else is plaintext for the default port. */
  #sniff(socket: Socket): void {
    socket.on('error', () => {});
    socket.once('data', (first: Buffer) => {
      socket.pause();
      socket.unshift(first);
      if (first[0] === 0x16) {
        // The TLS socket reads the unshifted ClientHello itself; resuming here would emit it to nobody.
        this.#tls.emit('connection', socket);
        return;
      }
      const port = this.#deps.ports[0];
      if (!port) return this.#refuse(socket, 'no_port');
      this.#deliver(socket, { caller: { spiffeId: undefined, cluster: undefined }, port, denied: undefined });
      socket.resume();
    });
  }

  #refuse(socket: Duplex, reason: string, detail: Record<string, unknown> = {}): void {
    this.#deps.metrics.inboundRefused.inc({ reason });
    this.#deps.log.debug({ reason, ...detail }, 'inbound connection refused');
    socket.destroy();
  }

  #onSecureConnection(socket: TLSSocket): void {
    socket.on('error', () => {});
    const cert = socket.getPeerCertificate();
    const presented = cert && Object.keys(cert).length > 0;
    let caller: Caller;
    if (socket.authorized) {
      const spiffeId = spiffeIdOf(cert);
      if (!spiffeId) return this.#refuse(socket, 'no_spiffe_id', { san: cert.subjectaltname });
      caller = { spiffeId, cluster: clusterOfIssuer(cert) };
    } else if (this.#deps.mtlsMode === 'permissive' && !presented) {
      caller = { spiffeId: undefined, cluster: undefined };
    } else {
      return this.#refuse(socket, presented ? 'untrusted_certificate' : 'no_client_certificate', { error: socket.authorizationError });
    }
    const servername = socket.servername;
    let port: ServicePort | undefined;
    if (!servername) {
      if (this.#deps.mtlsMode !== 'permissive') return this.#refuse(socket, 'no_sni');
      port = this.#deps.ports[0];
    } else {
      const sni = tryParseSni(servername);
      if (sni instanceof Error || sni.kind !== 'service') return this.#refuse(socket, 'bad_sni', { sni: servername });
      if (sni.namespace !== this.#deps.namespace || sni.service !== this.#deps.service || sni.cluster !== this.#deps.cluster) {
        return this.#refuse(socket, 'sni_not_this_workload', { sni: servername });
      }
      if (sni.subset !== undefined) {
        const wanted = this.#deps.subsets()?.[sni.subset];
        if (!wanted || Object.entries(wanted).some(([k, v]) => this.#deps.labels[k] !== v)) return this.#refuse(socket, 'subset_mismatch', { sni: servername });
      }
      port = this.#deps.ports.find((p) => p.port === sni.port);
    }
    if (!port) return this.#refuse(socket, 'unknown_port', { sni: servername });
    const decision = authorize(this.#deps.policies(), { namespace: this.#deps.namespace, service: this.#deps.service, port: port.port }, caller);
    const context: InboundContext = { caller, port, denied: decision.allowed ? undefined : decision.policy };
    // HTTP and HTTP/2 decide per request (a denied one gets a 403 or PERMISSION_DENIED); other ports per connection.
    if (!decision.allowed && port.protocol !== 'http' && !(socket.alpnProtocol === 'h2' && (port.protocol === 'http2' || port.protocol === 'grpc'))) {
      this.#countDenial(caller, decision.policy);
      if (this.#accessLog.enabled) {
        this.#accessLog.tcp({ ...this.#parties(context), started: performance.now(), result: 'denied', details: rbacDetails(decision.policy), bytesReceived: 0, bytesSent: 0 });
      }
      return this.#refuse(socket, 'authorization_denied', { caller: caller.spiffeId, policy: decision.policy });
    }
    this.#deliver(socket, context);
  }

  #countDenial(caller: Caller, policy: string): void {
    let ns = 'unknown';
    try {
      if (caller.spiffeId) ns = parseSpiffeId(caller.spiffeId).namespace;
    } catch {
      /* unparseable IDs were refused earlier */
    }
    this.#deps.metrics.authorizationDenials.inc({ destination_service: `${this.#deps.service}.${this.#deps.namespace}`, source_namespace: ns, source_cluster: caller.cluster ?? 'unknown', policy });
    this.#deps.log.info({ caller: caller.spiffeId ?? '(unauthenticated)', cluster: caller.cluster, policy }, 'authorization denied');
  }

  /** Metric labels of a caller, computed once per connection (parsing the SPIFFE ID per request showed in profiles). */
  #labels(context: InboundContext): PeerLabels {
    if (context.labels) return context.labels;
    const caller = context.caller;
    let sourceService = 'unknown';
    if (caller.spiffeId) {
      const id = parseSpiffeId(caller.spiffeId);
      sourceService = `${id.serviceAccount}.${id.namespace}`;
    }
    context.labels = { direction: 'inbound', source_cluster: caller.cluster ?? 'unknown', source_service: sourceService, destination_cluster: this.#deps.cluster, destination_service: `${this.#deps.service}.${this.#deps.namespace}` };
    return context.labels;
  }

  #deliver(socket: Duplex, context: InboundContext): void {
    this.#sockets.add(socket);
    this.#deps.metrics.activeConnections.inc({ direction: 'inbound' });
    const started = performance.now();
    socket.once('close', () => {
      this.#sockets.delete(socket);
      context.app?.destroy();
      this.#deps.metrics.activeConnections.dec({ direction: 'inbound' });
      const labels = this.#labels(context);
      this.#deps.metrics.connections.inc({ ...labels, result: 'ok' });
      this.#deps.metrics.connectionSeconds.observe({ direction: 'inbound', destination_cluster: labels.destination_cluster, destination_service: labels.destination_service }, (performance.now() - started) / 1000);
      const s = socket as Socket;
      this.#deps.metrics.bytes.inc({ direction: 'inbound', destination_cluster: labels.destination_cluster, destination_service: labels.destination_service, flow: 'sent' }, s.bytesRead ?? 0);
      this.#deps.metrics.bytes.inc({ direction: 'inbound', destination_cluster: labels.destination_cluster, destination_service: labels.destination_service, flow: 'received' }, s.bytesWritten ?? 0);
      if (this.#accessLog.enabled && context.port.protocol !== 'http') {
        this.#accessLog.tcp({ ...this.#parties(context), started, result: 'ok', bytesReceived: s.bytesRead ?? 0, bytesSent: s.bytesWritten ?? 0 });
      }
    });
    if ((socket as TLSSocket).alpnProtocol === 'h2' && (context.port.protocol === 'http2' || context.port.protocol === 'grpc')) {
      this.#serveH2(socket, context);
      return;
    }
    if (context.port.protocol === 'http') {
      new DownstreamConnection(socket as Socket, this.#fastPath, context, IDLE_KEEPALIVE_MS);
      return;
    }
    this.#pipeTcp(socket, context);
  }

  /** An HTTP/2 connection (ALPN h2 on an `http2`/`grpc` port): streams authorized and forwarded one by one. */
  #serveH2(socket: Duplex, context: InboundContext): void {
    const port = context.port;
    const identityHeaders: Record<string, string> = {};
    if (context.caller.spiffeId) identityHeaders[PEER_IDENTITY_HEADER] = context.caller.spiffeId;
    if (context.caller.cluster) identityHeaders[PEER_CLUSTER_HEADER] = context.caller.cluster;
    this.#h2.serve(socket, {
      targetPort: port.targetPort ?? port.port,
      identityHeaders,
      denied: () => this.#denied(context, port),
      countDenial: (policy) => this.#countDenial(context.caller, policy),
      finish: (code, result, started, facts, trace, grpcStatus) => this.#requestDone(context, code, result, started, facts, trace, grpcStatus),
    });
  }

  /**
   * One inbound request (Node's HTTP/1.1 path) or HTTP/2 stream done: its counter, its
   * duration, when the access log is on its line, and when its trace is sampled its
   * server span (`facts` is called only for those).
   */
  #requestDone(context: InboundContext, code: number, result: string, started: number, facts: () => InboundRequestFacts, trace: RequestTrace | undefined, grpcStatus?: number): void {
    const labels = this.#labels(context);
    this.#deps.metrics.requests.inc({ ...labels, code: String(code), result });
    this.#deps.metrics.requestSeconds.observe({ direction: 'inbound', destination_cluster: labels.destination_cluster, destination_service: labels.destination_service }, (performance.now() - started) / 1000);
    const accessLog = this.#accessLog.enabled;
    const span = trace?.sampled === true;
    if (!accessLog && !span) return;
    const parties = this.#parties(context);
    const f = facts();
    if (accessLog) this.#accessLog.http({ ...parties, ...f, traceId: trace?.traceId ?? f.traceId, status: code, result });
    if (span) recordServerSpan(this.#deps.tracer!, trace, { ...parties, method: f.method, path: f.path, status: code, grpcStatus, started });
  }

  #pipeTcp(socket: Duplex, context: InboundContext): void {
    const targetPort = context.port.targetPort ?? context.port.port;
    const app = tcpConnect({ host: this.#deps.tuning.appHost, port: targetPort, noDelay: true });
    app.on('error', (error) => {
      this.#deps.log.debug({ err: error, port: targetPort }, 'app connection failed');
      socket.destroy();
    });
    socket.once('close', () => app.destroy());
    app.once('close', () => socket.destroy());
    app.once('connect', () => {
      if (this.#deps.tuning.proxyProtocolPorts.includes(targetPort)) {
        const s = socket as Socket;
        app.write(
          encodeProxyV2({
            sourceAddress: s.remoteAddress ?? '0.0.0.0',
            sourcePort: s.remotePort ?? 0,
            destinationAddress: s.localAddress ?? '0.0.0.0',
            destinationPort: s.localPort ?? 0,
            spiffeId: context.caller.spiffeId,
            cluster: context.caller.cluster,
          }),
        );
      }
      socket.pipe(app);
      app.pipe(socket);
    });
  }

  /** Authorization for one request: decided again only when the snapshot's policy list changed. */
  #denied(context: InboundContext, port: ServicePort): string | undefined {
    const policies = this.#deps.policies();
    if (context.decidedFor !== policies || context.port !== port) {
      const decision = authorize(policies, { namespace: this.#deps.namespace, service: this.#deps.service, port: port.port }, context.caller);
      context.denied = decision.allowed ? undefined : decision.policy;
      context.decidedFor = policies;
    }
    return context.denied;
  }

  /**
   * One request on the fast path: authorized, its head rewritten (incoming identity
   * headers dropped, the verified ones added), sent with its body to the app on this
   * connection's own app connection, and the response relayed back as it comes.
   */
  #forwardHttp(connection: DownstreamConnection<InboundContext>, request: BufferedRequest, retried = false): void {
    const context = connection.context;
    const port = context.port;
    const denied = this.#denied(context, port);
    if (denied) {
      this.#countDenial(context.caller, denied);
      connection.write(textResponse(403, `RBAC: access denied (${denied})\n`, { 'x-causeway-error': ProxyErrorCodes.authzDenied }));
      new AppExchange(this.#appHost, connection, request, this.#labels(context), undefined, retried).finish(403, 'denied', undefined, rbacDetails(denied));
      connection.finish(request.head.close);
      return;
    }
    if (context.identityLines === undefined) {
      let lines = '';
      if (context.caller.spiffeId) lines += `${PEER_IDENTITY_HEADER}: ${context.caller.spiffeId}\r\n`;
      if (context.caller.cluster) lines += `${PEER_CLUSTER_HEADER}: ${context.caller.cluster}\r\n`;
      context.identityLines = lines;
    }
    const upgrade = request.head.upgrade;
    const tracer = this.#deps.tracer;
    const trace = tracer?.start(headerValue(request.head, 'traceparent'), false);
    const extra = upgrade ? context.identityLines + upgradeLines(upgrade) : context.identityLines;
    const head = trace ? rewriteHead(request.head, IDENTITY_AND_TRACE_HEADERS, extra + trace.header) : rewriteHead(request.head, IDENTITY_HEADERS, extra);
    let app = context.app;
    if (!app || app.closed) {
      const socket = tcpConnect({ host: this.#deps.tuning.appHost, port: port.targetPort ?? port.port, noDelay: true });
      app = context.app = new UpstreamConnection(socket);
    }
    const exchange = new AppExchange(this.#appHost, connection, request, this.#labels(context), app, retried, trace);
    connection.onAbort(exchange);
    app.send(request.head.method, head, request.body, exchange, upgrade !== undefined);
  }

  #parties(context: InboundContext): InboundParties {
    const port = context.port;
    return {
      direction: 'inbound',
      retries: 0,
      upstreamHost: `${this.#deps.tuning.appHost}:${port.targetPort ?? port.port}`,
      upstreamCluster: this.#deps.cluster,
      sourceCluster: context.caller.cluster,
      destinationService: `${this.#deps.service}.${this.#deps.namespace}`,
      sourcePrincipal: context.caller.spiffeId,
      destinationPrincipal: this.#deps.identity.spiffeId,
    };
  }

  #httpServerFor(port: ServicePort): HttpServer {
    let server = this.#http.get(port.port);
    if (server) return server;
    server = handOffServer((req, res) => this.#proxyHttp(req, res, port));
    this.#http.set(port.port, server);
    return server;
  }

  #proxyHttp(req: IncomingMessage, res: ServerResponse, port: ServicePort): void {
    const started = performance.now();
    const context = this.#contexts.get(req.socket);
    if (!context) {
      res.writeHead(500).end();
      return;
    }
    let appRes: IncomingMessage | undefined;
    let respondedAt = 0;
    const trace = this.#deps.tracer?.start(headerText(req.headers.traceparent), false);
    const finish = (code: number, result: string, details?: string) =>
      this.#requestDone(context, code, result, started, () => ({
        started,
        method: req.method,
        path: req.url,
        protocol: `HTTP/${req.httpVersion}`,
        details,
        bytesReceived: Number(req.headers['content-length'] ?? 0) || 0,
        // Node's path streams the body through: its declared length stands for the bytes (0 for a chunked one).
        bytesSent: Number(appRes?.headers['content-length'] ?? 0) || 0,
        upstreamServiceMs: appRes ? respondedAt - started : undefined,
        header: (name) => headerText(req.headers[name]),
        responseHeader: (name) => headerText(appRes?.headers[name]),
      }), trace);
    // Policies can change while a pooled connection lives: decide again whenever the
    // snapshot's policy list is another one (a new snapshot brings a new array).
    const denied = this.#denied(context, port);
    if (denied) {
      this.#countDenial(context.caller, denied);
      req.resume();
      const body = `RBAC: access denied (${denied})\n`;
      res.writeHead(403, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-causeway-error': ProxyErrorCodes.authzDenied }).end(body);
      finish(403, 'denied', rbacDetails(denied));
      return;
    }
    const headers: OutgoingHttpHeaders = {};
    const incoming = req.headers;
    for (const name in incoming) {
      const value = incoming[name];
      if (value === undefined || name === PEER_IDENTITY_HEADER || name === PEER_CLUSTER_HEADER || name === 'connection' || name === 'keep-alive') continue;
      headers[name] = value;
    }
    if (context.caller.spiffeId) headers[PEER_IDENTITY_HEADER] = context.caller.spiffeId;
    if (context.caller.cluster) headers[PEER_CLUSTER_HEADER] = context.caller.cluster;
    if (trace) headers.traceparent = trace.traceparent;
    const appReq = httpRequest({ agent: this.#appAgent, host: this.#deps.tuning.appHost, port: port.targetPort ?? port.port, method: req.method, path: req.url, headers, setHost: false });
    appReq.once('response', (response) => {
      appRes = response;
      respondedAt = performance.now();
      const out: OutgoingHttpHeaders = {};
      const answered = response.headers;
      for (const name in answered) {
        const value = answered[name];
        if (value !== undefined && name !== 'connection' && name !== 'keep-alive' && name !== 'transfer-encoding') out[name] = value;
      }
      res.writeHead(response.statusCode ?? 502, response.statusMessage, out);
      response.pipe(res);
      res.once('close', () => finish(response.statusCode ?? 502, response.complete ? 'ok' : 'incomplete'));
    });
    let connected = false;
    appReq.once('socket', (socket) => {
      if (!socket.connecting) connected = true;
      else socket.once('connect', () => (connected = true));
    });
    appReq.once('error', (error) => {
      this.#deps.log.debug({ err: error, port: port.targetPort ?? port.port }, 'app request failed');
      // Unavailable = the request never reached the app, so the caller may safely retry it elsewhere.
      const code = connected ? APP_RESET : APP_UNAVAILABLE;
      if (!res.headersSent) {
        res.writeHead(503, { 'content-type': 'text/plain', 'x-causeway-error': code }).end(connected ? 'the app closed the connection without answering\n' : 'the app behind the sidecar is not listening\n');
      } else res.destroy();
      finish(503, connected ? 'app_reset' : 'app_unavailable');
    });
    req.pipe(appReq);
  }
}

/** The access-log fields an inbound connection fixes: who called, who answered, where the app is. */
type InboundParties = Pick<HttpAccessFacts, 'direction' | 'retries' | 'upstreamHost' | 'upstreamCluster' | 'sourceCluster' | 'destinationService' | 'sourcePrincipal' | 'destinationPrincipal'>;
/** What a request's path adds to its parties, status and result for its access-log line. */
export type InboundRequestFacts = Omit<HttpAccessFacts, keyof InboundParties | 'status' | 'result'>;

interface AppExchangeHost {
  readonly metrics: SidecarMetrics;
  readonly log: Logger;
  readonly accessLog: AccessLog;
  /** The access log's who-called-whom of an inbound connection. */
  parties(context: InboundContext): InboundParties;
  readonly tracer: Tracer | undefined;
  /** Sends the request again on a fresh app connection. */
  retry(connection: DownstreamConnection<InboundContext>, request: BufferedRequest): void;
}


/** One request from an inbound connection to the app, and its response back (a class: made once per request). */
class AppExchange implements ResponseSink, AbortListener {
  readonly #host: AppExchangeHost;
  readonly #connection: DownstreamConnection<InboundContext>;
  readonly #request: BufferedRequest;
  readonly #labels: PeerLabels;
  readonly #app: UpstreamConnection | undefined;
  readonly #retried: boolean;
  readonly #reused: boolean;
  #status = 0;
  #closeAfter: boolean;
  /** For the access log: when the app's response head came, body bytes sent back, the head itself. */
  #respondedAt = 0;
  #bytesSent = 0;
  #response: ResponseHead | undefined;
  readonly #trace: RequestTrace | undefined;

  constructor(host: AppExchangeHost, connection: DownstreamConnection<InboundContext>, request: BufferedRequest, labels: PeerLabels, app: UpstreamConnection | undefined, retried: boolean, trace?: RequestTrace) {
    this.#trace = trace;
    this.#host = host;
    this.#connection = connection;
    this.#request = request;
    this.#labels = labels;
    this.#app = app;
    this.#retried = retried;
    this.#reused = app !== undefined && app.served > 0;
    this.#closeAfter = request.head.close;
  }

  finish(code: number, result: string, error?: Error, details?: string): void {
    const labels = this.#labels;
    const started = this.#request.started;
    this.#host.metrics.requests.inc({ ...labels, code: String(code), result });
    this.#host.metrics.requestSeconds.observe({ direction: 'inbound', destination_cluster: labels.destination_cluster, destination_service: labels.destination_service }, (performance.now() - started) / 1000);
    if (this.#host.accessLog.enabled) this.#host.accessLog.http(this.#accessFacts(code, result, error, details));
    const trace = this.#trace;
    if (trace?.sampled) {
      const head = this.#request.head;
      recordServerSpan(this.#host.tracer!, trace, { ...this.#host.parties(this.#connection.context), method: head.method, path: head.target, status: code, started });
    }
  }

  #accessFacts(status: number, result: string, error: Error | undefined, details: string | undefined): HttpAccessFacts {
    const response = this.#response;
    return {
      ...this.#host.parties(this.#connection.context),
      ...fastPathFacts(this.#request, response),
      status,
      result,
      error,
      details,
      bytesSent: this.#bytesSent,
      upstreamServiceMs: response ? this.#respondedAt - this.#request.started : undefined,
    };
  }

  aborted(): void {
    this.#dropApp();
    this.finish(this.#status || 499, 'incomplete');
  }

  #dropApp(): void {
    const app = this.#app!;
    app.destroy();
    const context = this.#connection.context;
    if (context.app === app) context.app = undefined;
  }

  head(response: ResponseHead, kind: 'none' | 'length' | 'chunked' | 'close'): 'forward' | 'discard' {
    if (response.status < 200) {
      this.#connection.write(rewriteHead(response, NO_EXTRA_DROPS, ''));
      return 'forward';
    }
    this.#status = response.status;
    this.#respondedAt = performance.now();
    this.#response = response;
    if (kind === 'close') this.#closeAfter = true;
    this.#connection.write(rewriteHead(response, NO_EXTRA_DROPS, this.#closeAfter ? 'connection: close\r\n' : ''));
    return 'forward';
  }

  body(chunk: Buffer): void {
    this.#bytesSent += chunk.length;
    this.#connection.write(chunk, this.#app!);
  }

  end(reusable: boolean): void {
    this.#connection.onAbort(undefined);
    const context = this.#connection.context;
    if (!reusable && context.app === this.#app) context.app = undefined;
    this.finish(this.#status, 'ok');
    this.#connection.finish(this.#closeAfter);
  }

  fail(error: Error, gotHead: boolean): void {
    const connection = this.#connection;
    connection.onAbort(undefined);
    this.#dropApp();
    if (gotHead) {
      connection.abort();
      this.finish(this.#status, 'incomplete', error);
      return;
    }
    // A kept-alive app connection the app had just closed: one fresh try.
    if (this.#reused && !this.#retried) {
      this.#host.retry(connection, this.#request);
      return;
    }
    const connected = this.#app!.connected;
    this.#host.log.debug({ err: error, port: connection.context.port.targetPort ?? connection.context.port.port }, 'app request failed');
    // Unavailable = the request never reached the app, so the caller may safely retry it elsewhere.
    const code = connected ? APP_RESET : APP_UNAVAILABLE;
    connection.write(textResponse(503, connected ? 'the app closed the connection without answering\n' : 'the app behind the sidecar is not listening\n', { 'x-causeway-error': code }));
    this.finish(503, connected ? 'app_reset' : 'app_unavailable');
    connection.finish(this.#request.head.close);
  }

  upgraded(response: ResponseHead, rest: Buffer): void {
    const connection = this.#connection;
    const app = this.#app!;
    if (connection.context.app === app) connection.context.app = undefined;
    connection.switchProtocols(app, response, rest, this.#request.head.upgrade!);
    this.finish(101, 'upgraded');
  }

  batch(open: boolean): void {
    if (open) this.#connection.io.cork();
    else this.#connection.io.uncork();
  }
}
