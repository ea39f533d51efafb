import { constants, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { GrpcStatus, grpcMessage, grpcStatusOf } from './grpc-wire.js';

/** Connection-specific headers HTTP/2 forbids (RFC 9113 §8.2.2): never forwarded. */
const CONNECTION_HEADERS: ReadonlySet<string> = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings']);

/** Headers (pseudo-headers included) as they go on to the next hop: connection-specific and `drop` ones removed, `extra` added. */
export function forwardHeaders(headers: IncomingHttpHeaders, drop?: ReadonlySet<string>, extra?: Readonly<Record<string, string>>): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    if (CONNECTION_HEADERS.has(name) || drop?.has(name)) continue;
    const value = headers[name];
    if (value !== undefined) out[name] = value;
  }
  if (extra) for (const name in extra) out[name] = extra[name];
  return out;
}

/**
 * Whether a response's HEADERS frame ended the stream (`flags` of the `response` event):
 * a trailers-only response. `ClientHttp2Stream#endAfterHeaders` is not set yet when the
 * event fires.
 */
export function endsStream(flags: number): boolean {
  return (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0;
}

/** How one relayed response ended: its `grpc-status` (headers or trailers), whether it arrived whole, and the body bytes relayed. */
export type RelayFinished = (grpcStatus: number | undefined, complete: boolean, bytesSent: number) => void;

/**
 * Relays one response, headers already in hand, from an upstream stream to the
 * downstream stream: body as it comes (with backpressure both ways), trailers after it,
 * a trailers-only response as one HEADERS frame. An upstream that breaks off after the
 * headers ends a gRPC call with `UNAVAILABLE` in the trailers and resets any other stream;
 * a downstream that goes away cancels the upstream stream. `received`: trailers that
 * already came (a response held until then), sent after the body as if they came now.
 */
export function relayResponse(upstream: ClientHttp2Stream, headers: IncomingHttpHeaders, trailersOnly: boolean, downstream: ServerHttp2Stream, grpc: boolean, finished: RelayFinished, received?: IncomingHttpHeaders): void {
  if (downstream.destroyed || downstream.closed) {
    upstream.close(constants.NGHTTP2_CANCEL);
    finished(grpcStatusOf(headers), false, 0);
    return;
  }
  if (trailersOnly) {
    downstream.respond(forwardHeaders(headers), { endStream: true });
    finished(grpcStatusOf(headers), true, 0);
    return;
  }
  let trailers: OutgoingHttpHeaders = received ? forwardHeaders(received) : {};
  let grpcStatus = (received && grpcStatusOf(received)) ?? grpcStatusOf(headers);
  let ended = false;
  let bytesSent = 0;
  downstream.respond(forwardHeaders(headers), { waitForTrailers: true });
  downstream.once('wantTrailers', () => {
    try {
      downstream.sendTrailers(trailers);
    } catch {
      /* the downstream stream is already gone */
    }
  });
  upstream.on('trailers', (received: IncomingHttpHeaders) => {
    trailers = forwardHeaders(received);
    grpcStatus = grpcStatusOf(received) ?? grpcStatus;
  });
  upstream.on('data', (chunk: Buffer) => {
    bytesSent += chunk.length;
    if (!downstream.write(chunk)) {
      upstream.pause();
      downstream.once('drain', () => upstream.resume());
    }
  });
  const breakOff = () => {
    if (grpc && !downstream.destroyed) {
      trailers = { 'grpc-status': String(GrpcStatus.unavailable), 'grpc-message': grpcMessage('the upstream stream broke off') };
      downstream.end();
    } else {
      downstream.close(constants.NGHTTP2_INTERNAL_ERROR);
    }
    finished(GrpcStatus.unavailable, false, bytesSent);
  };
  // Node ends a stream's readable side when the stream is reset or its session dies, so
  // an 'end' is whole only without an error code (and, for gRPC, with a status).
  upstream.once('end', () => {
    ended = true;
    if ((upstream.rstCode ?? 0) !== constants.NGHTTP2_NO_ERROR || (grpc && grpcStatus === undefined)) return breakOff();
    downstream.end();
    finished(grpcStatus, true, bytesSent);
  });
  upstream.once('close', () => {
    if (ended) return;
    ended = true;
    breakOff();
  });
  downstream.once('close', () => {
    if (!ended) upstream.close(constants.NGHTTP2_CANCEL);
  });
}
