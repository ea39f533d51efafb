import { Metadata, status, type ServerDuplexStream, type UntypedServiceImplementation } from '@grpc/grpc-js';
import { logger, parseSpiffeId, type Locality } from '../mesh/index.js';
import type { CatalogChanges } from './catalog-cache.js';
import type { ControllerMetrics } from './metrics.js';
import { preserializedResponse, type DiscoveryRequest, type DiscoveryResponse, type HelloMessage } from '../api-client/index.js';
import type { BuiltSnapshot, SnapshotBuilder } from './snapshot-builder.js';
import { callerSpiffeId } from './caller-identity.js';

/** What the controller knows of one connected node (status, tests, metrics). */
export interface NodeStatus {
  readonly identity: string;
  readonly kind: string;
  readonly nodeId: string;
  readonly view: string;
  readonly sentVersion: string | undefined;
  readonly ackedVersion: string | undefined;
  readonly nackedVersion: string | undefined;
  readonly nackReason: string | undefined;
}

const IN_FLIGHT_TIMEOUT_MS = 30_000;

type Stream = ServerDuplexStream<DiscoveryRequest, DiscoveryResponse>;

class NodeStream implements NodeStatus {
  identity: string;
  kind = 'sidecar';
  nodeId = '';
  view = '';
  gzip = false;
  sentVersion: string | undefined;
  ackedVersion: string | undefined;
  nackedVersion: string | undefined;
  nackReason: string | undefined;
  /** A push waits for the previous version's ack or nack: a slow node gets the latest, not a backlog. */
  inFlight = false;
  sentAt = 0;
  /** When the oldest catalog change not yet acknowledged by this node happened. */
  changeAt = 0;
  closed = false;

  constructor(
    readonly call: Stream,
    identity: string,
  ) {
    this.identity = identity;
  }
}

export interface DiscoveryOptions {
  readonly cluster: string;
  readonly trustDomain: string;
  readonly locality: Locality;
  readonly debounceMs: number;
}

/**
 * `causeway.discovery.v1.Discovery/Stream`. The node is named by its client certificate;
 * its Hello adds kind, id and locality. Snapshots are built per view (region) once and
 * shared; pushes are debounced, and each node has at most one version in flight, so a
 * burst of catalog changes costs each node one push of the latest state. A nack is
 * logged and counted; the node keeps its previous version and gets the next one that
 * differs.
 */
export class DiscoveryService {
  readonly #nodes = new Set<NodeStream>();
  readonly #responses = new WeakMap<BuiltSnapshot, Map<string, DiscoveryResponse>>();
  readonly #log = logger('controller-discovery');
  #debounce: NodeJS.Timeout | undefined;
  #firstPendingChangeAt = 0;
  #closed = false;

  readonly #builder: SnapshotBuilder;
  readonly #options: DiscoveryOptions;
  readonly #metrics: ControllerMetrics;

  constructor(
    builder: SnapshotBuilder,
    options: DiscoveryOptions,
    metrics: ControllerMetrics,
  ) {
    this.#builder = builder;
    this.#options = options;
    this.#metrics = metrics;
  }

  implementation(): UntypedServiceImplementation {
    return { Stream: (call: Stream) => this.#accept(call) };
  }

  /** Nodes currently connected, with the versions they hold. */
  status(): NodeStatus[] {
    return [...this.#nodes].map((n) => ({
      identity: n.identity,
      kind: n.kind,
      nodeId: n.nodeId,
      view: n.view,
      sentVersion: n.sentVersion,
      ackedVersion: n.ackedVersion,
      nackedVersion: n.nackedVersion,
      nackReason: n.nackReason,
    }));
  }

  /** Called for every catalog change; pushes after the debounce window. */
  onCatalogChange(changes: CatalogChanges): void {
    if (!changes.affectsSnapshots) return;
    this.#builder.invalidate(changes);
    this.schedulePush();
  }

  /** Rebuild and push now-ish (e.g. the trust bundle changed). */
  schedulePush(): void {
    if (this.#closed) return;
    if (this.#firstPendingChangeAt === 0) this.#firstPendingChangeAt = Date.now();
    if (this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      const changeAt = this.#firstPendingChangeAt;
      this.#firstPendingChangeAt = 0;
      this.#pushAll(changeAt);
    }, this.#options.debounceMs);
  }

  /** Ends every stream with UNAVAILABLE so nodes reconnect (to this or another controller). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#debounce);
    for (const node of this.#nodes) this.#end(node, { code: status.UNAVAILABLE, details: 'controller shutting down; reconnect' });
    this.#nodes.clear();
    this.#metrics.connectedNodes.reset();
  }

  #end(node: NodeStream, error?: { code: status; details: string }): void {
    if (node.closed) return;
    node.closed = true;
    try {
      if (error) node.call.emit('error', Object.assign(new Error(error.details), error));
      else node.call.end();
    } catch {
      // the stream may already be gone
    }
  }

  #accept(call: Stream): void {
    const identity = callerSpiffeId(call);
    if (!identity) {
      call.emit('error', Object.assign(new Error('the discovery stream needs a client certificate that chains to the mesh trust bundle'), { code: status.UNAUTHENTICATED }));
      return;
    }
    if (parseSpiffeId(identity).trustDomain !== this.#options.trustDomain) {
      call.emit('error', Object.assign(new Error(`identity ${identity} is outside trust domain ${this.#options.trustDomain}`), { code: status.PERMISSION_DENIED }));
      return;
    }
    const node = new NodeStream(call, identity);
    let helloSeen = false;
    call.on('data', (req: DiscoveryRequest) => {
      if (node.closed) return;
      if (req.hello) {
        if (helloSeen) return;
        helloSeen = true;
        this.#hello(node, req.hello);
      } else if (!helloSeen) {
        this.#end(node, { code: status.INVALID_ARGUMENT, details: 'the first message on the discovery stream must be a Hello' });
      } else if (req.ack) {
        this.#ack(node, req.ack.version);
      } else if (req.nack) {
        this.#nack(node, req.nack.version, req.nack.reason);
      }
    });
    const gone = () => {
      if (this.#nodes.delete(node)) this.#metrics.connectedNodes.dec({ kind: node.kind });
      node.closed = true;
    };
    call.on('end', () => {
      gone();
      try {
        call.end();
      } catch {
        // already ended
      }
    });
    call.on('error', gone);
    call.on('close', gone);
    call.on('cancelled', gone);
  }

  #hello(node: NodeStream, hello: HelloMessage): void {
    if (hello.cluster && hello.cluster !== this.#options.cluster) {
      this.#end(node, { code: status.FAILED_PRECONDITION, details: `this controller serves cluster ${this.#options.cluster}, not ${hello.cluster}; connect to that cluster's controller` });
      return;
    }
    node.kind = hello.nodeKind || 'sidecar';
    node.nodeId = hello.nodeId || node.identity;
    node.view = hello.region || this.#options.locality.region;
    node.gzip = (hello.acceptEncodings ?? []).includes('gzip');
    this.#nodes.add(node);
    this.#metrics.connectedNodes.inc({ kind: node.kind });
    // Headers now: the node learns it is connected even when no snapshot follows (same version).
    node.call.sendMetadata(new Metadata());
    this.#log.debug({ identity: node.identity, node: node.nodeId, view: node.view }, 'node connected');
    const current = this.#current(node.view);
    if (hello.lastVersion && hello.lastVersion === current.version) {
      // The node already holds what we would send (a reconnect after a controller restart).
      node.sentVersion = node.ackedVersion = current.version;
      return;
    }
    node.changeAt = Date.now();
    this.#send(node, current);
  }

  #current(view: string): BuiltSnapshot {
    if (this.#builder.isBuilt(view)) return this.#builder.snapshot(view);
    const started = performance.now();
    const snapshot = this.#builder.snapshot(view);
    this.#metrics.snapshotBuildSeconds.observe((performance.now() - started) / 1000);
    this.#metrics.snapshotBytes.set({ view }, snapshot.json.length);
    return snapshot;
  }

  #pushAll(changeAt: number): void {
    const views = new Map<string, BuiltSnapshot>();
    for (const node of this.#nodes) {
      let snapshot = views.get(node.view);
      if (!snapshot) views.set(node.view, (snapshot = this.#current(node.view)));
      if (node.sentVersion === snapshot.version) continue;
      if (node.changeAt === 0) node.changeAt = changeAt;
      // A node silent for too long on its in-flight version gets the latest anyway.
      if (!node.inFlight || Date.now() - node.sentAt > IN_FLIGHT_TIMEOUT_MS) this.#send(node, snapshot);
    }
  }

  #send(node: NodeStream, snapshot: BuiltSnapshot): void {
    node.inFlight = true;
    node.sentVersion = snapshot.version;
    node.sentAt = Date.now();
    const write = (body: Buffer, encoding: string) => {
      if (node.closed || node.sentVersion !== snapshot.version) return;
      try {
        node.call.write(this.#response(snapshot, body, encoding));
        this.#metrics.pushes.inc({ encoding: encoding || 'json' });
      } catch (error) {
        this.#log.debug({ err: (error as Error).message, node: node.nodeId }, 'push failed; node is gone');
      }
    };
    if (node.gzip && snapshot.json.length > 16 * 1024) {
      snapshot.gzip().then(
        (body) => write(body, 'gzip'),
        () => write(snapshot.json, ''),
      );
    } else {
      write(snapshot.json, '');
    }
  }

  /** One encoded response per snapshot version and encoding, shared by every node. */
  #response(snapshot: BuiltSnapshot, body: Buffer, encoding: string): DiscoveryResponse {
    let byEncoding = this.#responses.get(snapshot);
    if (!byEncoding) this.#responses.set(snapshot, (byEncoding = new Map()));
    let response = byEncoding.get(encoding);
    if (!response) byEncoding.set(encoding, (response = preserializedResponse({ version: snapshot.version, snapshot: body, encoding })));
    return response;
  }

  #settle(node: NodeStream): void {
    node.inFlight = false;
    const latest = this.#current(node.view);
    if (latest.version !== node.sentVersion) this.#send(node, latest);
  }

  #ack(node: NodeStream, version: string): void {
    if (version !== node.sentVersion) return;
    node.ackedVersion = version;
    this.#metrics.acks.inc();
    if (node.changeAt) this.#metrics.pushToAckSeconds.observe((Date.now() - node.changeAt) / 1000);
    node.changeAt = 0;
    this.#settle(node);
  }

  #nack(node: NodeStream, version: string, reason: string): void {
    if (version !== node.sentVersion) return;
    node.nackedVersion = version;
    node.nackReason = reason;
    node.changeAt = 0;
    this.#metrics.nacks.inc();
    this.#log.warn({ identity: node.identity, node: node.nodeId, version, kept: node.ackedVersion, reason }, 'node rejected a snapshot; it keeps its previous version');
    this.#settle(node);
  }
}
