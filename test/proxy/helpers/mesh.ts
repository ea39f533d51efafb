import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, Agent, type Server as HttpServer } from 'node:http';
import { connect as tcpConnect, createServer as createTcpServer, type AddressInfo, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { join } from 'node:path';
import type { Snapshot, SnapshotService, SnapshotTarget } from '../../../mesh/index.js';
import { parseSidecarConfig, Sidecar, StaticSnapshotSource, WorkloadIdentity, type SidecarConfigInput, type SidecarOptions, type SnapshotSource } from '../../../proxy/index.js';
import type { MeshPki } from './pki.js';

export const TD = 'causeway.internal';
export const spiffe = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

// Test files run in parallel worker processes: each starts its loopback ranges at its own
// offset. Explicit, never reused within a process: tests here share one keep-alive agent,
// and with `auto` a sidecar started after another closed took its addresses back, so the
// agent handed a later test a pooled socket of the closed sidecar ('socket hang up').
let rangeCounter = (process.pid % 700) * 64;

/** An HTTP app that answers with who called it (the header the sidecar sets) and where it runs. */
export async function startEchoApp(name: string, options: { status?: number; delayMs?: number } = {}): Promise<{ port: number; server: HttpServer; hits: () => number; setStatus(s: number): void; close(): Promise<void> }> {
  let hits = 0;
  let status = options.status ?? 200;
  const delayMs = options.delayMs ?? 0;
  const server = createHttpServer((req, res) => {
    hits++;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({ app: name, peer: req.headers['x-causeway-peer-identity'] ?? null, peerCluster: req.headers['x-causeway-peer-cluster'] ?? null, method: req.method, path: req.url, body: Buffer.concat(chunks).toString() });
      const answer = () => {
        if (!res.destroyed) res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body);
      };
      if (delayMs > 0) setTimeout(answer, delayMs);
      else answer();
    });
  });
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    server,
    hits: () => hits,
    setStatus(s) {
      status = s;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A TCP app that writes back everything it receives, prefixed by its name. */
export async function startTcpEchoApp(name: string): Promise<{ port: number; server: TcpServer; received: Buffer[]; close(): Promise<void> }> {
  const received: Buffer[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = createTcpServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let first = true;
    socket.on('data', (d: Buffer) => {
      received.push(d);
      socket.write(first ? Buffer.concat([Buffer.from(`${name}:`), d]) : d);
      first = false;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    server,
    received,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

export interface TestSidecar {
  readonly sidecar: Sidecar;
  readonly source: SnapshotSource;
  readonly identity: WorkloadIdentity;
  readonly spiffeId: string;
  close(): Promise<void>;
}

export interface TestSidecarOptions {
  cluster: string;
  namespace?: string;
  service: string;
  serviceAccount?: string;
  ports?: SidecarConfigInput['ports'];
  labels?: Record<string, string>;
  pki: MeshPki;
  source?: SnapshotSource;
  /** Sign the certificate with another cluster's intermediate (for cluster-from-issuer tests). */
  issuerCluster?: string;
  /** Overrides of the config. */
  config?: Partial<SidecarConfigInput>;
  extra?: Partial<SidecarOptions>;
  certificateSeconds?: number;
}

/** A sidecar on loopback with its own outbound range, random ports and a certificate from the test PKI. */
export async function startTestSidecar(options: TestSidecarOptions): Promise<TestSidecar> {
  const namespace = options.namespace ?? 'default';
  const sa = options.serviceAccount ?? options.service;
  const spiffeId = spiffe(namespace, sa);
  const stateDir = mkdtempSync(join(tmpdir(), 'causeway-sidecar-'));
  const n = ++rangeCounter;
  const config = parseSidecarConfig({
    cluster: options.cluster,
    locality: { region: 'r1', zone: 'z1' },
    namespace,
    service: options.service,
    serviceAccount: sa,
    labels: options.labels ?? {},
    ports: options.ports ?? [{ name: 'http', port: 9080, protocol: 'http' }],
    controller: { address: '127.0.0.1:1' },
    advertiseAddress: '127.0.0.1',
    inboundPort: 0,
    dnsPort: 0,
    stateDir,
    observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
    ...options.config,
    sidecar: { inboundHost: '127.0.0.1', outboundRange: `127.${10 + ((n >> 8) & 0xff)}.${n & 0xff}.0/24`, dns: { outside: 'refuse' }, ...options.config?.sidecar },
  });
  const identity = new WorkloadIdentity();
  const pem = await options.pki.issue(options.issuerCluster ?? options.cluster, spiffeId, { seconds: options.certificateSeconds ?? 3600 });
  identity.set({ keyPem: pem.key, chainPem: pem.chain, trustBundlePem: [options.pki.rootPem] });
  const source = options.source ?? new StaticSnapshotSource();
  const sidecar = new Sidecar({ config, snapshots: source, identity, ...options.extra });
  await sidecar.start();
  return {
    sidecar,
    source,
    identity,
    spiffeId,
    async close() {
      await sidecar.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

export function endpointTarget(cluster: string, port: number, options: Partial<SnapshotTarget> = {}): SnapshotTarget {
  return {
    kind: 'endpoint',
    cluster,
    address: '127.0.0.1',
    port,
    locality: { region: 'r1', zone: 'z1' },
    priority: 0,
    weight: 1,
    labels: {},
    healthy: true,
    stale: false,
    ...options,
  };
}

export function gatewayTarget(cluster: string, address: string, port: number, options: Partial<SnapshotTarget> = {}): SnapshotTarget {
  return { ...endpointTarget(cluster, port, options), kind: 'gateway', address, priority: options.priority ?? 1, weight: options.weight ?? 1 };
}

export function service(name: string, targets: SnapshotTarget[], options: Partial<SnapshotService> = {}): SnapshotService {
  return {
    name,
    namespace: 'default',
    ports: [{ name: 'http', port: 9080, protocol: 'http' }],
    serviceAccounts: [spiffe('default', name)],
    subsets: {},
    targets,
    ...options,
  };
}

let version = 0;
export function snapshot(cluster: string, services: SnapshotService[], options: Partial<Snapshot> = {}): Snapshot {
  return { schema: 1, version: String(++version), cluster, trustDomain: TD, trustBundle: [], services, authorization: [], traffic: [], ...options };
}

const clientAgent = new Agent({ keepAlive: true, maxSockets: 64 });

/** A response body parsed as JSON, or undefined when it is not JSON. */
export function jsonBody(text: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

/** An HTTP GET through a sidecar's outbound address; resolves with status, headers and parsed JSON (when JSON). */
export function get(address: string, port: number, path = '/', options: { agent?: Agent | false; method?: string; body?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string; json: Record<string, unknown> | undefined }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: address, port, path, method: options.method ?? 'GET', headers: options.headers, agent: options.agent === undefined ? clientAgent : options.agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: jsonBody(body) });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** Reads one counter's value (summed over label sets matching `labels`) from a sidecar's registry. */
export async function metricValue(sidecar: Sidecar, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = sidecar.registry.getSingleMetric(name);
  if (!metric) return 0;
  const data = await metric.get();
  let sum = 0;
  for (const v of data.values) {
    if ((v as { metricName?: string }).metricName && (v as { metricName?: string }).metricName !== name) continue;
    if (Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want)) sum += v.value;
  }
  return sum;
}

export function tempDir(prefix: string): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Steady request load: `workers` loops of GETs until stop(); counts answers per app and every failure. */
export function load(address: string, options: { port?: number; workers?: number } = {}) {
  let running = true;
  let ok = 0;
  const failures: string[] = [];
  const apps = new Map<string, number>();
  const loops = Array.from({ length: options.workers ?? 3 }, async () => {
    while (running) {
      try {
        const res = await get(address, options.port ?? 9080, '/load');
        if (res.status === 200) {
          ok++;
          const app = String(res.json?.app);
          apps.set(app, (apps.get(app) ?? 0) + 1);
        } else failures.push(`${res.status} ${String(res.headers['x-causeway-error'] ?? '')} ${res.body.slice(0, 160)}`);
      } catch (error) {
        failures.push((error as Error).message);
      }
    }
  });
  return {
    ok: () => ok,
    apps,
    failures,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** An echo app behind a `reviews` sidecar in east, and a `productpage` client sidecar whose snapshots the test pushes. */
export async function startPair(t: import('ava').ExecutionContext, pki: MeshPki) {
  const app = await startEchoApp('reviews-east');
  t.teardown(() => app.close());
  const server = await startTestSidecar({ cluster: 'east', service: 'reviews', pki, ports: [{ name: 'http', port: 9080, targetPort: app.port, protocol: 'http' }] });
  t.teardown(() => server.close());
  const source = new StaticSnapshotSource();
  const client = await startTestSidecar({ cluster: 'east', service: 'productpage', pki, source });
  t.teardown(() => client.close());
  return { app, server, client, source };
}

export type LogLine = Record<string, unknown>;

/** A pino logger writing into memory (every line parsed), for tests that read a sidecar's log lines; `access()` has the access log's. */
export function captureLog(): { log: import('pino').Logger; lines: LogLine[]; access: () => LogLine[] } {
  const lines: LogLine[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const text of chunk.toString().split('\n')) if (text) lines.push(JSON.parse(text) as LogLine);
      callback();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines, access: () => lines.filter((l) => l.log === 'access') };
}

/**
 * Writes raw bytes to address:port — each piece its own write, 20 ms apart, so the peer
 * reads them separately — and collects everything until the peer closes or resets
 * (`closedByPeer`) or `idleMs` of silence.
 */
export function rawExchange(address: string, port: number, pieces: readonly (string | Buffer)[], idleMs = 1500): Promise<{ text: string; closedByPeer: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: address, port });
    const chunks: Buffer[] = [];
    let timer = setTimeout(() => done(false), idleMs);
    const done = (closedByPeer: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closedByPeer });
    };
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      clearTimeout(timer);
      timer = setTimeout(() => done(false), idleMs);
    });
    socket.once('end', () => done(true));
    socket.once('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? done(true) : reject(error)));
    let i = 0;
    const next = () => {
      if (i < pieces.length) socket.write(pieces[i++]!, () => setTimeout(next, 20));
    };
    next();
  });
}
