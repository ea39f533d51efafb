import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createH2Server, Http2ServerRequest, Http2ServerResponse, type Http2Server } from 'node:http2';
import type { SnapshotTarget } from '../mesh/index.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { headerText, type HttpAccessFacts } from './access-log.js';
import { ProxyError, ProxyErrorCodes, UpstreamConnectError } from './errors.js';
import { peerSpiffeId } from './peer-certificate.js';
import { REQUEST_ID_HEADER } from './request-id.js';
import { recordOutboundSpans } from './request-spans.js';
import type { RequestTrace } from './tracing.js';
import { REQUEST_BUFFER_BYTES, handOffServer } from './http1-relay.js';
import { errorStatus, type AttemptPlan, type OutboundListenerSpec, type RequestPolicy } from './request-policy.js';
import type { TryOutcome } from './retry-policy.js';
import { targetKey } from './target-balancer.js';
import { HeaderMapRouteRequest } from './traffic-routes.js';
import type { TargetAgent, TargetConnections } from './target-connections.js';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate']);

/** A request on Node's server path: HTTP/1.x, or one stream of an app's HTTP/2 connection on an `http` port. */
type ServerRequest = IncomingMessage | Http2ServerRequest;
type ServerReply = ServerResponse | Http2ServerResponse;

type SendOutcome = { response: IncomingMessage } | { error: unknown; reusedSocket: boolean; timedOut: boolean };

/**
 * Requests the HTTP/1.1 fast path does not take (HTTP/1.0, `Expect: 100-continue`,
 * absolute-form targets, bodies over the retry buffer — proxy/README.md) and the forward
 * proxy's plain requests: served by Node's HTTP server and client, under the same
 * request policy as the fast path. Bodies up to the retry buffer are held so that an
 * attempt can be replayed; larger ones stream (without replays).
 *
 * An app's HTTP/2 connection on an `http` port (h2c: prior knowledge or `Upgrade: h2c`)
 * is served here too, by Node's HTTP/2 server and its compatibility API: each stream is
 * one request forwarded as HTTP/1.1 on the mTLS hop — the peer's inbound and its app
 * speak HTTP/1.1 on an `http` port — with the same plan, retries and log as the rest.
 */
export class HttpFallback {
  readonly #policy: RequestPolicy;
  readonly #connections: TargetConnections;
  readonly #servers = new Set<HttpServer>();

  constructor(policy: RequestPolicy, connections: TargetConnections) {
    this.#policy = policy;
    this.#connections = connections;
  }

  /** Node's HTTP server for the connections one listener's fast path hands over (never listening itself). */
  server(listener: ListenerSpec): HttpServer {
    const server = handOffServer((req, res) => this.#serveListener(req, res, listener));
    this.#servers.add(server);
    return server;
  }

  /**
   * Node's HTTP/2 server for one listener's h2c connections (never listening itself:
   * connections are emitted into it). Its sessions close with their connections.
   */
  h2Server(listener: ListenerSpec): Http2Server {
    return createH2Server((req, res) => {
      if (req.method === 'CONNECT') {
        reply(res, 405, { 'content-type': 'text/plain', 'x-causeway-error': ProxyErrorCodes.badRequest }, 'CONNECT is not forwarded on an http port; use a tcp port or the HTTP proxy\n');
        return;
      }
      this.#serveListener(req, res, listener);
    });
  }

  #serveListener(req: ServerRequest, res: ServerReply, listener: ListenerSpec): void {
    const spec = listener.spec;
    if (!spec) {
      reply(res, 503, {});
      return;
    }
    void this.serve(req, res, spec);
  }

  /** A listener closed: its server is no longer closed with the sidecar (its connections finish on their own). */
  forget(server: HttpServer): void {
    this.#servers.delete(server);
  }

  close(): void {
    for (const server of this.#servers) server.closeAllConnections();
    this.#servers.clear();
  }

  /** One request to a listener's service: attempts in the request policy's plan. */
  async serve(req: ServerRequest, res: ServerReply, spec: OutboundListenerSpec): Promise<void> {
    const policy = this.#policy;
    const started = performance.now();
    let plan: AttemptPlan | undefined;
    let target: SnapshotTarget | undefined;
    // The access log's view of the request (only when it is on; this path is not the hot one).
    const access = policy.accessLog.enabled ? new FallbackAccess(req, started) : undefined;
    let attempt = 0;
    const requestId = policy.requestIds?.replacement(headerText(req.headers[REQUEST_ID_HEADER]));
    // Set once the request policy admitted the request (tracing on), with what its spans need.
    let trace: RequestTrace | undefined;
    let firstSentAt = 0;
    let respondedAt = 0;
    // Read when the response head comes: once it is complete, Node detaches its socket.
    let destinationPrincipal: string | undefined;
    const done = (code: number, result: string, error?: unknown) => {
      const facts = access && { ...access.facts(code, result, error, attempt, target, spec.serviceLabel, policy.sourcePrincipal), requestId, traceId: trace?.traceId };
      policy.requestDone(spec.serviceLabel, target, code, result, started, facts, plan);
      if (trace?.sampled) {
        recordOutboundSpans(policy.tracer!, trace, { method: req.method ?? '', path: req.url, status: code, serviceLabel: spec.serviceLabel, sourcePrincipal: policy.sourcePrincipal, target, retries: attempt, started, firstSentAt, respondedAt, destinationPrincipal });
      }
    };
    const fail = (error: unknown) => {
      const { status, code } = errorStatus(error);
      if (!res.headersSent) {
        const body = `${(error as Error).message}\n`;
        reply(res, status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-causeway-error': code }, body);
      } else {
        res.destroy();
      }
      done(status, code, error);
    };
    try {
      plan = policy.plan(spec, new HeaderMapRouteRequest(req.method, pathOf(req.url), req.headers));
      policy.admitRequest(plan);
    } catch (error) {
      req.resume();
      fail(error);
      return;
    }
    const admitted = plan;
    res.once('close', () => policy.release(admitted));
    const body = await bufferBody(req, REQUEST_BUFFER_BYTES);
    if (body === 'aborted') {
      done(499, 'downstream_closed');
      return;
    }
    access?.body(body);
    const bodyHeld = body instanceof Buffer;
    const method = req.method ?? '';
    const headers = forwardHeaders(req.headers);
    if (bodyHeld) headers['content-length'] = body.length;
    if (requestId !== undefined) headers[REQUEST_ID_HEADER] = requestId;
    trace = policy.tracer?.start(headerText(req.headers.traceparent), true);
    if (trace) headers.traceparent = trace.traceparent;
    let lastError: unknown;
    for (let i = 0; i < plan.attempts; i++) {
      target = plan.targets[i]!;
      // The route's timeout bounds each try's wait for a response head, and ends the request when it has passed.
      const left = plan.deadline === undefined ? undefined : plan.deadline - performance.now();
      if (left !== undefined && left <= 0) {
        fail(policy.routeTimeout(plan));
        return;
      }
      const perTry = plan.perTryTimeoutMs;
      const tryTimeoutMs = left === undefined ? perTry : Math.min(left, perTry ?? left);
      attempt = i;
      access?.sending();
      if (firstSentAt === 0) firstSentAt = performance.now();
      const sent = await this.#sendOnce(req, body, headers, this.#connections.agent(target, plan.route, plan.connectTimeoutMs), tryTimeoutMs, perTry);
      let outcome: TryOutcome;
      if ('response' in sent) {
        const upstreamRes = sent.response;
        const status = upstreamRes.statusCode ?? 502;
        const serverError = status === 503 ? upstreamRes.headers['x-causeway-error'] : undefined;
        outcome = policy.responded(plan, target, status, typeof serverError === 'string' ? serverError : undefined);
        const delay = policy.retryDelay(plan, i, outcome, method, bodyHeld);
        if (delay !== undefined) {
          upstreamRes.resume();
          lastError = new ProxyError(ProxyErrorCodes.upstreamReset, `${plan.serviceLabel}: ${typeof serverError === 'string' ? serverError : status} from ${targetKey(target)}`);
          if (delay > 0) await sleep(delay);
          continue;
        }
        respondedAt = performance.now();
        destinationPrincipal = peerSpiffeId(upstreamRes.socket);
        access?.responded(upstreamRes, destinationPrincipal);
        if (res instanceof Http2ServerResponse) {
          // HTTP/2 has no reason phrase; the HTTP/1.1 response's trailers become the stream's.
          res.writeHead(status, forwardHeaders(upstreamRes.headers));
          upstreamRes.once('end', () => {
            if (Object.keys(upstreamRes.trailers).length > 0) res.addTrailers(forwardHeaders(upstreamRes.trailers));
          });
        } else res.writeHead(status, upstreamRes.statusMessage, forwardHeaders(upstreamRes.headers));
        upstreamRes.pipe(res);
        let upstreamError: Error | undefined;
        upstreamRes.once('error', (error) => {
          upstreamError = error;
          res.destroy();
        });
        res.once('close', () => {
          if (!upstreamRes.complete) upstreamRes.destroy();
          done(status, upstreamRes.complete ? 'ok' : 'incomplete', upstreamError);
        });
        return;
      }
      lastError = sent.error;
      if (sent.error instanceof UpstreamConnectError) {
        policy.connectFailed(plan, target, sent.error);
        outcome = { kind: 'connect-failure' };
      } else {
        if (sent.timedOut && plan.deadline !== undefined && performance.now() >= plan.deadline) {
          fail(policy.routeTimeout(plan));
          return;
        }
        outcome = policy.noResponse(plan, target, sent.reusedSocket, sent.timedOut);
      }
      const delay = policy.retryDelay(plan, i, outcome, method, bodyHeld);
      if (delay === undefined) break;
      if (delay > 0) await sleep(delay);
    }
    fail(policy.exhausted(plan, lastError));
  }

  /** One try; `timeoutMs` ends it without a response head (`perTryTimeoutMs`, when set, is the one named in the error). */
  #sendOnce(req: ServerRequest, body: Buffer | 'stream', headers: OutgoingHttpHeaders, agent: TargetAgent, timeoutMs: number | undefined, perTryTimeoutMs: number | undefined): Promise<SendOutcome> {
    return new Promise((resolve) => {
      let timedOut = false;
      const upstreamReq = httpRequest({ agent, method: req.method, path: pathOf(req.url), headers, setHost: false });
      upstreamReq.once('response', (response) => {
        if (timer) clearTimeout(timer);
        resolve({ response });
      });
      upstreamReq.once('error', (error) => {
        if (timer) clearTimeout(timer);
        resolve({ error, reusedSocket: upstreamReq.reusedSocket, timedOut });
      });
      const timer =
        timeoutMs !== undefined
          ? setTimeout(() => {
              timedOut = true;
              upstreamReq.destroy(this.#policy.requestTimeout(perTryTimeoutMs ?? timeoutMs));
            }, timeoutMs)
          : undefined;
      if (body === 'stream') {
        req.pipe(upstreamReq);
        req.resume();
      } else if (body.length === 0) {
        // end() without a chunk sends the head as one string: one TLS write instead of a writev of two.
        upstreamReq.end();
      } else upstreamReq.end(body);
    });
  }
}

/** What the access log needs of one request on Node's server path, gathered as it goes. */
class FallbackAccess {
  readonly #req: ServerRequest;
  readonly #started: number;
  #received = 0;
  #sent = 0;
  #sentAt = 0;
  #upstreamServiceMs: number | undefined;
  #response: IncomingMessage | undefined;
  #destinationPrincipal: string | undefined;

  constructor(req: ServerRequest, started: number) {
    this.#req = req;
    this.#started = started;
  }

  /** The request body as read: its length, or for a streamed body its declared length (counting would need a reader of its own). */
  body(body: Buffer | 'stream'): void {
    this.#received = body instanceof Buffer ? body.length : Number(this.#req.headers['content-length'] ?? 0) || 0;
  }

  sending(): void {
    this.#sentAt = performance.now();
  }

  responded(response: IncomingMessage, destinationPrincipal: string | undefined): void {
    this.#upstreamServiceMs = performance.now() - this.#sentAt;
    this.#response = response;
    this.#destinationPrincipal = destinationPrincipal;
    response.on('data', (chunk: Buffer) => (this.#sent += chunk.length));
  }

  facts(status: number, result: string, error: unknown, retries: number, target: SnapshotTarget | undefined, destinationService: string, sourcePrincipal: string | undefined): HttpAccessFacts {
    const req = this.#req;
    const response = this.#response;
    return {
      direction: 'outbound',
      started: this.#started,
      method: req.method,
      path: req.url,
      protocol: req.httpVersionMajor === 2 ? 'HTTP/2' : `HTTP/${req.httpVersion}`,
      status,
      result,
      error,
      retries,
      bytesReceived: this.#received,
      bytesSent: this.#sent,
      upstreamServiceMs: this.#upstreamServiceMs,
      header: (name) => headerText(req.headers[name]),
      responseHeader: (name) => headerText(response?.headers[name]),
      upstreamHost: target && `${target.address}:${target.port}`,
      upstreamCluster: target?.cluster,
      sourceCluster: undefined,
      destinationService,
      sourcePrincipal,
      destinationPrincipal: this.#destinationPrincipal,
    };
  }
}

/** The headers to forward: hop-by-hop ones dropped; an HTTP/2 request's pseudo-headers dropped, its `:authority` as `host`. */
function forwardHeaders(headers: ServerRequest['headers']): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  // Runs twice per request: no token set unless the message names extra hop-by-hop headers.
  const connection = headers.connection;
  const connectionTokens =
    connection === undefined || connection === '' || connection === 'keep-alive'
      ? undefined
      : new Set(
          connection
            .toLowerCase()
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean),
        );
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || HOP_BY_HOP.has(name) || connectionTokens?.has(name) || name.charCodeAt(0) === COLON) continue;
    out[name] = value;
  }
  const authority = headers[':authority'];
  if (out.host === undefined && typeof authority === 'string') out.host = authority;
  return out;
}

const COLON = 0x3a;

/** Answers with a whole response of the sidecar's own (the two response APIs' overloads do not unite for TypeScript). */
function reply(res: ServerReply, status: number, headers: OutgoingHttpHeaders, body = ''): void {
  if (res instanceof Http2ServerResponse) res.writeHead(status, headers).end(body);
  else res.writeHead(status, headers).end(body);
}
type ListenerSpec = { readonly spec: OutboundListenerSpec | undefined };

/** An absolute-form target (`http://host:port/path`, sent to a forward proxy) becomes its origin form. */
function pathOf(url: string | undefined): string {
  if (!url) return '/';
  if (url.startsWith('/')) return url;
  try {
    const parsed = new URL(url);
    return `${parsed.pathname}${parsed.search}`;
  } catch {
    return '/';
  }
}

/** Reads a request body up to `limit` bytes; beyond that the request streams (and cannot be retried). */
function bufferBody(req: ServerRequest, limit: number): Promise<Buffer | 'stream' | 'aborted'> {
  const length = req.headers['content-length'];
  // An HTTP/2 request has a body unless its HEADERS ended the stream (a length is optional there).
  const hasBody = req instanceof Http2ServerRequest ? !req.stream.endAfterHeaders : (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
  if (!hasBody) {
    req.resume();
    return Promise.resolve(Buffer.alloc(0));
  }
  if (length !== undefined && Number(length) > limit) return Promise.resolve('stream');
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size > limit) {
        // Too big to keep: put what we have back and stream the rest.
        req.off('data', onData);
        req.off('end', onEnd);
        req.pause();
        req.unshift(Buffer.concat(chunks));
        resolve('stream');
      }
    };
    const onEnd = () => resolve(Buffer.concat(chunks, size));
    req.on('data', onData);
    req.once('end', onEnd);
    req.once('aborted', () => resolve('aborted'));
    req.once('error', () => resolve('aborted'));
  });
}
