import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import { status, type Client, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { Backoff, TypedEmitter, grpcFailure, logger, type HealthState, type Locality, type Snapshot } from '../mesh/index.js';
import { ControllerError, ControllerErrorCodes } from './errors.js';
import {
  DiscoveryClientConstructor,
  RegistrationClientConstructor,
  type DiscoveryRequest,
  type DiscoveryResponse,
  type HeartbeatResponse,
  type RegisterResponse,
} from './protos.js';
import { SnapshotDecoder } from './snapshot-decoder.js';
import { controllerChannel, type ControllerConnection } from './tls.js';

const gunzipAsync = promisify(gunzip);

export interface DiscoveryHello {
  /** `sidecar` (default) or `gateway`. */
  readonly nodeKind?: string;
  readonly nodeId: string;
  readonly cluster: string;
  readonly region?: string;
  readonly zone?: string;
}

export interface DiscoveryClientOptions extends ControllerConnection {
  readonly hello: DiscoveryHello;
  /**
   * Last snapshot the node applied before (e.g. persisted across a sidecar restart): it
   * is served until the controller sends a newer one, and its version is announced.
   */
  readonly initialSnapshot?: Snapshot;
  /**
   * Decides whether the node can apply a snapshot that passed schema validation; return
   * a reason to nack it (the node then keeps its previous snapshot).
   */
  readonly accept?: (snapshot: Snapshot) => string | undefined;
}

type DiscoveryEvents = {
  /** A new snapshot was validated, accepted and acked; the previous one is replaced. */
  snapshot: [snapshot: Snapshot];
  /** A version was rejected (schema or `accept`) and nacked; `snapshot` is unchanged. */
  nack: [version: string, reason: string];
  connected: [];
  /** The stream broke; the client reconnects with backoff and keeps serving the last snapshot. */
  disconnected: [error: Error];
};

/**
 * A controller that cannot be reached, as one sentence for logs and the CLI, without
 * grpc-js's status prefix and "Resolution note:" (mesh/grpc-failure.ts). Our own errors
 * and the controller's refusals pass through.
 */
export function controllerCallError(error: Error, address: string): Error {
  if (error instanceof ControllerError || typeof (error as { code?: unknown }).code !== 'number') return error;
  const { unreachable, reason } = grpcFailure(error);
  // A controller that answered and refused (FAILED_PRECONDITION, PERMISSION_DENIED…) said
  // what it meant; callers match on its gRPC status, so that error goes through as it is.
  if (!unreachable) return error;
  return new ControllerError(ControllerErrorCodes.unreachable, `the controller at ${address} is unreachable (${reason}); check that it runs and the controller address in the config`, { cause: error, retryable: true });
}

/**
 * The node side of `causeway.discovery.v1.Discovery/Stream`, for sidecars and gateways.
 *
 * ```ts
 * const discovery = new DiscoveryClient({
 *   address: 'controller:15012',
 *   tls: () => ({ key, certChain, trustBundle }),          // current workload cert
 *   expectedServerId: controllerIdentity('causeway.internal'),
 *   hello: { nodeId: 'reviews-1', cluster: 'east', region: 'eu', zone: 'eu-1' },
 * });
 * discovery.on('snapshot', (snapshot) => applyRoutes(snapshot));
 * discovery.start();
 * // discovery.snapshot — the last accepted snapshot, kept across disconnects
 * await discovery.close();
 * ```
 * Guarantees: snapshots are validated with mesh/snapshot.ts before `snapshot` fires
 * (only changed services are re-validated; treat snapshots as read-only: unchanged
 * services are shared between consecutive snapshots);
 * a rejected one is nacked and the previous snapshot stays; the stream reconnects
 * forever with exponential backoff + jitter, announcing the last applied version so an
 * unchanged catalog is not re-sent. gzip-encoded snapshots are accepted.
 */
export class DiscoveryClient extends TypedEmitter<DiscoveryEvents> {
  #current: Snapshot | undefined;
  #client: Client | undefined;
  #stream: ClientDuplexStream<DiscoveryRequest, DiscoveryResponse> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  #started = false;
  #isConnected = false;
  readonly #backoff: Backoff;
  readonly #decoder = new SnapshotDecoder();
  readonly #log = logger('discovery-client');

  readonly #options: DiscoveryClientOptions;

  constructor(options: DiscoveryClientOptions) {
    super();
    this.#options = options;
    this.#current = options.initialSnapshot;
    this.#backoff = new Backoff({ initialMs: options.backoff?.initialMs ?? 100, maxMs: options.backoff?.maxMs ?? 5_000 });
  }

  /** The last accepted snapshot (undefined until the first one). */
  get snapshot(): Snapshot | undefined {
    return this.#current;
  }

  get version(): string | undefined {
    return this.#current?.version;
  }

  get connected(): boolean {
    return this.#isConnected;
  }

  start(): this {
    if (!this.#started) {
      this.#started = true;
      this.#connect();
    }
    return this;
  }

  /** Resolves with the first snapshot (immediately if one is held). */
  firstSnapshot(): Promise<Snapshot> {
    if (this.#current) return Promise.resolve(this.#current);
    return new Promise((resolve) => this.once('snapshot', resolve));
  }

  /** Drops the connection now and reconnects (e.g. after a certificate renewal). */
  reconnect(): void {
    this.#teardown();
    if (!this.#closed) this.#connect();
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#teardown();
  }

  #teardown(): void {
    const stream = this.#stream;
    this.#stream = undefined;
    if (stream) {
      stream.removeAllListeners();
      stream.on('error', () => undefined);
      stream.cancel();
    }
    this.#client?.close();
    this.#client = undefined;
    this.#isConnected = false;
  }

  #connect(): void {
    if (this.#closed) return;
    let stream: ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>;
    try {
      const { credentials: creds, options } = controllerChannel({ cluster: this.#options.hello.cluster, ...this.#options });
      this.#client = new DiscoveryClientConstructor(this.#options.address, creds, options);
      stream = (this.#client as unknown as { Stream(): ClientDuplexStream<DiscoveryRequest, DiscoveryResponse> }).Stream();
    } catch (error) {
      this.#retry(error as Error);
      return;
    }
    this.#stream = stream;
    const h = this.#options.hello;
    stream.write({
      hello: {
        nodeKind: h.nodeKind ?? 'sidecar',
        nodeId: h.nodeId,
        cluster: h.cluster,
        region: h.region ?? '',
        zone: h.zone ?? '',
        lastVersion: this.#current?.version ?? '',
        acceptEncodings: ['gzip'],
      },
    });
    stream.on('metadata', () => {
      if (this.#stream !== stream) return;
      this.#isConnected = true;
      this.emit('connected');
    });
    // Responses are handled one at a time, in order.
    let queue = Promise.resolve();
    stream.on('data', (res: DiscoveryResponse) => {
      queue = queue.then(() => this.#receive(stream, res));
    });
    const broken = (error: Error) => {
      if (this.#stream !== stream) return;
      this.#retry(error);
    };
    stream.on('error', broken);
    stream.on('end', () => broken(new ControllerError(ControllerErrorCodes.clientClosed, 'the controller ended the discovery stream', { retryable: true })));
  }

  #retry(error: Error): void {
    this.#teardown();
    if (this.#closed) return;
    this.emit('disconnected', controllerCallError(error, this.#options.address));
    const delay = this.#backoff.next();
    this.#log.debug({ err: error.message, delayMs: Math.round(delay) }, 'discovery stream down; reconnecting');
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  async #receive(stream: ClientDuplexStream<DiscoveryRequest, DiscoveryResponse>, res: DiscoveryResponse): Promise<void> {
    let reason: string | undefined;
    let snapshot: Snapshot | undefined;
    try {
      const body = res.encoding === 'gzip' ? await gunzipAsync(res.snapshot) : res.encoding === '' ? res.snapshot : undefined;
      if (!body) throw new Error(`unknown snapshot encoding "${res.encoding}"`);
      const decoded = this.#decoder.decode(body.toString('utf8'));
      if (!decoded.ok) reason = decoded.reason;
      else if (decoded.snapshot.version !== res.version) reason = `snapshot version ${decoded.snapshot.version} differs from the message version ${res.version}`;
      else snapshot = decoded.snapshot;
      if (snapshot && this.#options.accept) reason = this.#options.accept(snapshot);
    } catch (error) {
      reason = `unreadable snapshot: ${(error as Error).message}`;
    }
    if (this.#stream !== stream) return;
    this.#backoff.reset();
    if (reason !== undefined || !snapshot) {
      stream.write({ nack: { version: res.version, reason: reason ?? 'rejected' } });
      this.#log.warn({ version: res.version, reason }, 'rejected a snapshot; keeping the previous one');
      this.emit('nack', res.version, reason ?? 'rejected');
      return;
    }
    this.#current = snapshot;
    stream.write({ ack: { version: res.version } });
    this.emit('snapshot', snapshot);
  }
}

export interface EndpointRegistration {
  readonly service: string;
  readonly namespace: string;
  /** Stable per workload instance, `[a-z0-9._-]`. */
  readonly endpointId: string;
  /** Address peers use to reach this sidecar's inbound listener. */
  readonly address: string;
  readonly inboundPort: number;
  /** The sidecar's /metrics port on `address`, listed in the catalog for `causeway ui`. */
  readonly metricsPort?: number;
  readonly labels?: Record<string, string>;
  /** Default: the controller's cluster locality. */
  readonly locality?: Locality;
}

export interface RegistrationClientOptions extends ControllerConnection {
  readonly endpoint: EndpointRegistration;
  /** Initial health (default `healthy`); change it with {@link RegistrationClient.setHealth}. */
  readonly health?: HealthState;
  /** Heartbeat period; default a third of the lease TTL the controller returns. */
  readonly heartbeatIntervalMs?: number;
  /** Deadline of each call (default 3 s). */
  readonly callTimeoutMs?: number;
}

type RegistrationEvents = {
  registered: [leaseTtlSeconds: number];
  heartbeat: [leaseTtlSeconds: number];
  /** A call failed; the client retries (registration refusals keep retrying at the max backoff). */
  error: [error: ServiceError];
  /** The controller refused the registration (PERMISSION_DENIED, INVALID_ARGUMENT, …). */
  refused: [error: ServiceError];
};

const PERMANENT = new Set<number>([status.PERMISSION_DENIED, status.INVALID_ARGUMENT, status.UNAUTHENTICATED, status.FAILED_PRECONDITION]);

/**
 * The sidecar side of `causeway.registry.v1.Registration`: registers the endpoint, then
 * heartbeats (a third of the lease TTL by default) to keep its etcd lease alive;
 * re-registers on NOT_FOUND (lease expired); retries through controller restarts with
 * quick backoff, so a restart shorter than the TTL loses nothing. `setHealth()` reports
 * the local probe result on the next heartbeat, which starts at once.
 *
 * ```ts
 * const registration = new RegistrationClient({ address, tls, expectedServerId,
 *   endpoint: { service: 'reviews', namespace: 'default', endpointId: 'reviews-1', address: '10.0.0.5', inboundPort: 15006, labels: { version: 'v2' } } });
 * registration.on('refused', (e) => log.error(e.details));
 * await registration.start();   // resolves after the first successful Register
 * registration.setHealth('unhealthy');
 * await registration.stop({ deregister: true });
 * ```
 */
export class RegistrationClient extends TypedEmitter<RegistrationEvents> {
  #client: Client | undefined;
  #health: HealthState;
  #registered = false;
  #ttlSeconds = 10;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  readonly #backoff: Backoff;
  #firstRegistration: { resolve: () => void; promise: Promise<void> };

  readonly #options: RegistrationClientOptions;

  constructor(options: RegistrationClientOptions) {
    super();
    this.#options = options;
    this.#health = options.health ?? 'healthy';
    this.#backoff = new Backoff({ initialMs: options.backoff?.initialMs ?? 100, maxMs: options.backoff?.maxMs ?? 2_000 });
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.#firstRegistration = { resolve, promise };
  }

  get isRegistered(): boolean {
    return this.#registered;
  }

  /** Starts registering; resolves once the endpoint is registered (it keeps trying until then). */
  start(): Promise<void> {
    this.#tick(0);
    return this.#firstRegistration.promise;
  }

  setHealth(health: HealthState): void {
    if (health === this.#health) return;
    this.#health = health;
    if (this.#registered) this.#tick(0);
  }

  /** Stops heartbeating; with `deregister`, removes the endpoint now instead of at lease expiry. */
  async stop(options: { deregister?: boolean } = {}): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    if (options.deregister && this.#registered) {
      const e = this.#options.endpoint;
      await this.#call('Deregister', { service: e.service, namespace: e.namespace, endpointId: e.endpointId }).catch(() => undefined);
    }
    this.#client?.close();
    this.#client = undefined;
  }

  /** Uses fresh TLS material (`tls()` is read again) from the next call on, e.g. after a renewal. */
  reconnect(): void {
    this.#client?.close();
    this.#client = undefined;
  }

  /** Stops heartbeating without deregistering, like a killed sidecar (tests, drills). */
  abandon(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#client?.close();
    this.#client = undefined;
  }

  #tick(delayMs: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => void this.#run(), delayMs);
  }

  #grpc(): Client {
    if (!this.#client) {
      const { credentials: creds, options } = controllerChannel(this.#options);
      this.#client = new RegistrationClientConstructor(this.#options.address, creds, options);
    }
    return this.#client;
  }

  #call<Res>(method: 'Register' | 'Heartbeat' | 'Deregister', request: object): Promise<Res> {
    return new Promise((resolve, reject) => {
      const fn = (this.#grpc() as unknown as Record<string, (req: object, opts: object, cb: (e: ServiceError | null, r: Res) => void) => void>)[method]!;
      fn.call(this.#client, request, { deadline: Date.now() + (this.#options.callTimeoutMs ?? 3000) }, (error, response) => (error ? reject(error) : resolve(response)));
    });
  }

  async #run(): Promise<void> {
    const e = this.#options.endpoint;
    try {
      if (!this.#registered) {
        const res = await this.#call<RegisterResponse>('Register', {
          service: e.service,
          namespace: e.namespace,
          endpointId: e.endpointId,
          address: e.address,
          inboundPort: e.inboundPort,
          metricsPort: e.metricsPort ?? 0,
          labels: e.labels ?? {},
          locality: e.locality ?? null,
          health: this.#health,
        });
        if (this.#stopped) return;
        this.#registered = true;
        this.#ttlSeconds = Number(res.leaseTtlSeconds) || 10;
        this.#backoff.reset();
        this.emit('registered', this.#ttlSeconds);
        this.#firstRegistration.resolve();
      } else {
        const res = await this.#call<HeartbeatResponse>('Heartbeat', { service: e.service, namespace: e.namespace, endpointId: e.endpointId, health: this.#health });
        if (this.#stopped) return;
        this.#backoff.reset();
        this.emit('heartbeat', Number(res.leaseTtlSeconds));
      }
      this.#tick(this.#options.heartbeatIntervalMs ?? (this.#ttlSeconds * 1000) / 3);
    } catch (error) {
      if (this.#stopped) return;
      const err = error as ServiceError;
      if (err.code === status.NOT_FOUND) {
        this.#registered = false;
        this.#tick(0);
        return;
      }
      if (!this.#registered && PERMANENT.has(err.code)) {
        this.emit('refused', err);
        this.#tick(this.#options.backoff?.maxMs ?? 2_000);
        return;
      }
      if (this.listenerCount('error') > 0) this.emit('error', err);
      // A broken channel is rebuilt, reading the (possibly renewed) certificate again.
      if (err.code === status.UNAVAILABLE) this.reconnect();
      this.#tick(this.#backoff.next());
    }
  }
}
