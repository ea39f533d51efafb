import { credentials, makeGenericClientConstructor, Metadata, Server, ServerCredentials, status, type ServiceDefinition, type ServiceError, type handleClientStreamingCall, type handleServerStreamingCall, type handleUnaryCall } from '@grpc/grpc-js';
import type { Client } from '@grpc/grpc-js';

/** A tiny gRPC service with raw JSON bytes as messages (no .proto needed): unary `Echo` and server-streaming `Count`. */
const identity = (b: Buffer) => b;
export const echoService: ServiceDefinition = {
  Echo: { path: '/cw.test.Echo/Echo', requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
  Count: { path: '/cw.test.Echo/Count', requestStream: false, responseStream: true, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
  Size: { path: '/cw.test.Echo/Size', requestStream: true, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity },
};

export interface GrpcEchoApp {
  readonly port: number;
  readonly name: string;
  calls(): number;
  /**
   * From now on every call fails with this gRPC status (undefined: answer normally).
   * `after`: how much of a response goes first — nothing (a trailers-only response), the
   * response headers (`sendMetadata`, then the status in the trailers), or for `Count`
   * one message too (`Echo` sends the headers only).
   */
  failWith(code: number | undefined, after?: 'headers' | 'message'): void;
  /** From now on `Count` sends its response headers at once and its first message only once `gate` resolves (undefined: no gate). */
  holdFirstMessage(gate: Promise<void> | undefined): void;
  /** From now on each call waits this long before answering. */
  delay(ms: number): void;
  /** Calls whose client went away (cancelled or past their deadline) while the app held them. */
  cancelled(): number;
  close(): Promise<void>;
}

/** A gRPC app answering with its name and the caller identity the sidecar put in the metadata. */
export async function startGrpcEchoApp(name: string): Promise<GrpcEchoApp> {
  let calls = 0;
  let failure: number | undefined;
  let failAfter: 'headers' | 'message' | undefined;
  let gate: Promise<void> | undefined;
  let delayMs = 0;
  let cancelled = 0;
  const server = new Server();
  const echo: handleUnaryCall<Buffer, Buffer> = (call, callback) => {
    calls++;
    call.on('cancelled', () => cancelled++);
    const answer = () => {
      if (failure !== undefined) {
        if (failAfter) call.sendMetadata(new Metadata());
        return callback({ code: failure, details: `${name} fails on purpose` } as ServiceError);
      }
      const peer = call.metadata.get('x-causeway-peer-identity')[0] ?? null;
      callback(null, Buffer.from(JSON.stringify({ app: name, peer, request: call.request.toString() })));
    };
    if (delayMs > 0) setTimeout(answer, delayMs);
    else answer();
  };
  const count: handleServerStreamingCall<Buffer, Buffer> = (call) => {
    calls++;
    const n = Number(call.request.toString());
    let i = 0;
    if (failure !== undefined) {
      const error = { code: failure, details: `${name} fails on purpose` } as ServiceError;
      if (failAfter) call.sendMetadata(new Metadata());
      if (failAfter === 'message') call.write(Buffer.from(JSON.stringify({ app: name, i: i++ })));
      call.emit('error', error);
      return;
    }
    const next = () => {
      if (i === n) return call.end();
      call.write(Buffer.from(JSON.stringify({ app: name, i: i++ })));
      setTimeout(next, 5);
    };
    if (!gate) return next();
    call.sendMetadata(new Metadata());
    void gate.then(next);
  };
  const size: handleClientStreamingCall<Buffer, Buffer> = (call, callback) => {
    calls++;
    let bytes = 0;
    let messages = 0;
    call.on('data', (m: Buffer) => {
      bytes += m.length;
      messages++;
    });
    call.on('end', () => callback(null, Buffer.from(JSON.stringify({ app: name, bytes, messages }))));
  };
  server.addService(echoService, { Echo: echo, Count: count, Size: size });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (error, p) => (error ? reject(error) : resolve(p))));
  return {
    port,
    name,
    calls: () => calls,
    failWith(code, after) {
      failure = code;
      failAfter = after;
    },
    holdFirstMessage(g) {
      gate = g;
    },
    delay(ms) {
      delayMs = ms;
    },
    cancelled: () => cancelled,
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())).then(() => server.forceShutdown()),
  };
}

export type EchoClient = Client & {
  Echo(request: Buffer, options: { deadline?: number }, callback: (error: ServiceError | null, response?: Buffer) => void): void;
  Count(request: Buffer): NodeJS.ReadableStream & { cancel(): void };
  Size(callback: (error: ServiceError | null, response?: Buffer) => void): NodeJS.WritableStream;
};

/** One gRPC channel (one HTTP/2 connection) to `address:port`, plaintext, as an app talks to its sidecar. */
export function echoClient(address: string, port: number): EchoClient {
  const Ctor = makeGenericClientConstructor(echoService, 'Echo');
  return new Ctor(`${address}:${port}`, credentials.createInsecure()) as unknown as EchoClient;
}

/** One unary call; resolves with the parsed answer or the gRPC error. */
export function echo(client: EchoClient, request = 'hi', deadlineMs = 10_000): Promise<{ app: string; peer: string | null } | ServiceError> {
  return new Promise((resolve) => {
    client.Echo(Buffer.from(request), { deadline: Date.now() + deadlineMs }, (error, response) => resolve(error ?? (JSON.parse(response!.toString()) as { app: string; peer: string | null })));
  });
}

export { status as GrpcCode };
