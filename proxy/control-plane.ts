import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect as tcpConnect } from 'node:net';
import { join } from 'node:path';
import { WorkloadCertificateClient, splitCertificates, type CurrentCertificate } from '../ca/index.js';
import { DiscoveryClient, RegistrationClient, controllerCallError, type ControllerConnection } from '../api-client/index.js';
import { Backoff, controllerIdentity, controllerSni, formatSpiffeId, grpcFailure, workloadGroupEndpointId, type HealthState, type Logger, type Snapshot } from '../mesh/index.js';
import type { SidecarConfig } from './config.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';
import type { Sidecar, SidecarPart } from './sidecar.js';
import { parseSnapshot, type SnapshotSource, type SnapshotSourceEvents } from './snapshot-source.js';
import type { WorkloadIdentity } from './workload-identity.js';

const SNAPSHOT_FILE = 'last-snapshot.json';

/** The workload's SPIFFE ID from its config. */
export function workloadSpiffeId(config: SidecarConfig): string {
  return formatSpiffeId({ trustDomain: config.trustDomain, namespace: config.namespace, serviceAccount: config.serviceAccount });
}

/**
 * A stable endpoint id for this workload instance: `<group>-<address>` for a host
 * onboarded into a workload group (mesh/catalog.ts), else `<service>-<address>-<inbound port>`.
 */
export function defaultEndpointId(config: SidecarConfig, inboundPort: number): string {
  if (config.workloadGroup) return workloadGroupEndpointId(config.workloadGroup, config.advertiseAddress);
  return `${config.service}-${config.advertiseAddress}-${inboundPort}`.toLowerCase().replace(/[^a-z0-9.-]/g, '-');
}

/** How the sidecar reaches its controller (directly, or through a gateway by the controller's SNI). */
export function controllerConnection(config: SidecarConfig, identity: WorkloadIdentity): ControllerConnection {
  return {
    address: config.controller.address,
    expectedServerId: controllerIdentity(config.trustDomain),
    ...(config.controller.viaGateway ? { serverName: controllerSni(config.cluster, config.trustDomain) } : {}),
    tls: () => {
      const c = identity.certificate;
      if (!c) throw new ProxyError(ProxyErrorCodes.noCertificate, 'no workload certificate yet to authenticate to the controller');
      return { key: c.keyPem, certChain: c.chainPem.join(''), trustBundle: identity.trustBundle().join('') };
    },
  };
}

/**
 * Snapshots from the controller's discovery stream (the controller's DiscoveryClient:
 * reconnect with backoff, ack/nack, last snapshot kept across disconnects). The last
 * applied snapshot is also written to `<stateDir>/last-snapshot.json`, so a sidecar
 * restarted while the controller is away serves it at once.
 */
export class DiscoverySnapshotSource extends EventEmitter<SnapshotSourceEvents> implements SnapshotSource {
  readonly #client: DiscoveryClient;
  readonly #stateDir: string;
  readonly #log: Logger;
  #connected = false;
  #started = false;

  constructor(config: SidecarConfig, identity: WorkloadIdentity, log: Logger, nodeId: string) {
    super();
    this.#stateDir = config.stateDir;
    this.#log = log;
    const initialSnapshot = loadSnapshot(config.stateDir, log);
    this.#client = new DiscoveryClient({
      ...controllerConnection(config, identity),
      hello: { nodeKind: 'sidecar', nodeId, cluster: config.cluster, region: config.locality.region, zone: config.locality.zone },
      ...(initialSnapshot ? { initialSnapshot } : {}),
      accept: (s) => (s.cluster !== config.cluster ? `snapshot is for cluster ${s.cluster}, this sidecar is in ${config.cluster}` : undefined),
    });
    this.#client.on('snapshot', (snapshot) => {
      this.#persist(snapshot);
      this.emit('snapshot', snapshot);
    });
    this.#client.on('connected', () => {
      this.#connected = true;
      log.info('discovery stream connected');
    });
    this.#client.on('disconnected', (error) => {
      if (this.#connected) log.warn({ reason: error.message }, 'discovery stream lost; serving the last snapshot while reconnecting');
      this.#connected = false;
    });
    this.#client.on('nack', (version, reason) => log.warn({ version, reason }, 'snapshot rejected'));
    // A gRPC channel keeps the credentials it was made with: reconnect with a renewed
    // certificate (the last snapshot keeps serving meanwhile). The first one starts the stream.
    let leaf = identity.certificate?.chainPem[0];
    identity.on('change', () => {
      const next = identity.certificate?.chainPem[0];
      if (leaf !== undefined && next !== leaf && this.#started) this.#client.reconnect();
      leaf = next;
    });
  }

  get current(): Snapshot | undefined {
    return this.#client.snapshot;
  }

  get connected(): boolean {
    return this.#client.connected;
  }

  /** Reconnect now (e.g. the certificate was renewed). */
  reconnect(): void {
    this.#client.reconnect();
  }

  start(): void {
    this.#started = true;
    this.#client.start();
  }

  async close(): Promise<void> {
    await this.#client.close();
  }

  #persist(snapshot: Snapshot): void {
    try {
      mkdirSync(this.#stateDir, { recursive: true, mode: 0o700 });
      const temp = join(this.#stateDir, `.${SNAPSHOT_FILE}.tmp`);
      writeFileSync(temp, JSON.stringify(snapshot));
      renameSync(temp, join(this.#stateDir, SNAPSHOT_FILE));
    } catch (error) {
      this.#log.warn({ err: error }, 'could not persist the last snapshot');
    }
  }
}

function loadSnapshot(stateDir: string, log: Logger): Snapshot | undefined {
  const file = join(stateDir, SNAPSHOT_FILE);
  if (!existsSync(file)) return undefined;
  try {
    return parseSnapshot(JSON.parse(readFileSync(file, 'utf8')));
  } catch (error) {
    log.warn({ err: error, file }, 'ignoring an unreadable saved snapshot');
    return undefined;
  }
}

/**
 * Certificates from the controller's CA (the CA's WorkloadCertificateClient: join token
 * for the first certificate, persisted in stateDir so a restart needs no token, renewal
 * at half-life with jitter), installed into the sidecar's identity, whose listeners swap
 * contexts for new handshakes without dropping established connections.
 */
export function certificatePart(config: SidecarConfig, identity: WorkloadIdentity, log: Logger): SidecarPart & { readonly client: () => WorkloadCertificateClient | undefined } {
  let client: WorkloadCertificateClient | undefined;
  let lastError: string | undefined;
  const install = (cert: CurrentCertificate) => {
    identity.set({ keyPem: cert.privateKeyPem, chainPem: [...cert.certChain], trustBundlePem: splitCertificates(cert.trustBundlePem) });
  };
  return {
    name: 'certificates',
    client: () => client,
    problems: () => (identity.ready ? [] : [`no workload certificate yet${lastError ? ` (${lastError})` : ''}`]),
    async start(sidecar: Sidecar) {
      const bundleFile = config.trustBundleFile ?? join(config.stateDir, 'trust-bundle.pem');
      if (!existsSync(bundleFile)) {
        throw new ProxyError(ProxyErrorCodes.bootstrapToken, `no trust bundle to verify the controller: set trustBundleFile (the mesh root, e.g. from \`causeway ca init\`) in the workload config`);
      }
      client = new WorkloadCertificateClient({
        endpoint: {
          address: config.controller.address,
          trustBundlePem: readFileSync(bundleFile, 'utf8'),
          ...(config.controller.viaGateway ? { serverName: controllerSni(config.cluster, config.trustDomain) } : {}),
        },
        spiffeId: workloadSpiffeId(config),
        joinToken: () => (config.joinTokenFile && existsSync(config.joinTokenFile) ? readFileSync(config.joinTokenFile, 'utf8').trim() : undefined),
        stateDir: config.stateDir,
        ...(config.sidecar.pkcs12 ? { pkcs12: config.sidecar.pkcs12 } : {}),
        ttlSeconds: config.sidecar.certificateTtlSeconds,
        // The controller's snapshots announce a new root before our next renewal brings it.
        additionalRoots: () => identity.trustBundle(),
        logger: log,
      });
      client.on('certificate', (cert) => {
        try {
          install(cert);
          sidecar.metrics.certificateRenewals.inc({ result: 'ok' });
        } catch (error) {
          sidecar.metrics.certificateRenewals.inc({ result: 'unusable' });
          log.error({ err: error }, 'the CA returned a certificate the sidecar cannot use');
        }
      });
      client.on('renewal-failed', (error) => {
        lastError = error.message;
        sidecar.metrics.certificateRenewals.inc({ result: error.code });
      });
      // Retry the first certificate until it comes (the controller may start after us).
      const backoff = new Backoff({ initialMs: 250, maxMs: 10_000, jitter: false });
      for (;;) {
        try {
          install(await client.start());
          return;
        } catch (error) {
          lastError = (error as Error).message;
          const retryable = (error as { retryable?: boolean }).retryable ?? false;
          sidecar.metrics.certificateRenewals.inc({ result: (error as { code?: string }).code ?? 'error' });
          if (!retryable) throw new ProxyError(ProxyErrorCodes.certificateIssue, `could not get the first workload certificate: ${lastError}`, { cause: error });
          const delay = backoff.next();
          log.warn({ reason: lastError, retryInMs: delay }, 'first certificate not available yet; retrying');
          await new Promise((r) => setTimeout(r, delay));
        }
      }
    },
    close() {
      client?.close();
    },
  };
}

/** Probes the app (TCP connect or HTTP GET < 400) and reports healthy/unhealthy. */
export function probeApp(config: SidecarConfig, timeoutMs = 1_000): Promise<HealthState> {
  const probe = config.probe;
  const host = config.sidecar.appHost;
  if (!probe) return Promise.resolve('healthy');
  return new Promise((resolve) => {
    const timer = setTimeout(() => done('unhealthy'), timeoutMs);
    let finished = false;
    const done = (state: HealthState) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      resolve(state);
    };
    if ('tcp' in probe) {
      const socket = tcpConnect({ host, port: probe.tcp.port });
      socket.once('connect', () => {
        socket.destroy();
        done('healthy');
      });
      socket.once('error', () => done('unhealthy'));
      return;
    }
    const req = httpRequest({ host, port: probe.http.port, path: probe.http.path, agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      done((res.statusCode ?? 500) < 400 ? 'healthy' : 'unhealthy');
    });
    req.once('error', () => done('unhealthy'));
    req.end();
  });
}

/**
 * Registers this endpoint with the controller (the controller's RegistrationClient:
 * Register, Heartbeat every ttl/3, re-register on NOT_FOUND) and feeds it the local
 * probe result of the app.
 */
export function registrationPart(config: SidecarConfig, identity: WorkloadIdentity, log: Logger, endpointId?: string): SidecarPart & { readonly client: () => RegistrationClient | undefined } {
  let client: RegistrationClient | undefined;
  let timer: NodeJS.Timeout | undefined;
  let health: HealthState = 'unknown';
  let closed = false;
  let onIdentityChange: (() => void) | undefined;
  return {
    name: 'registration',
    client: () => client,
    async start(sidecar: Sidecar) {
      health = await probeApp(config);
      const connect = () => {
        const next = new RegistrationClient({
          ...controllerConnection(config, identity),
          endpoint: {
            service: config.service,
            namespace: config.namespace,
            endpointId: endpointId ?? defaultEndpointId(config, sidecar.inboundPort),
            address: config.advertiseAddress,
            inboundPort: sidecar.inboundPort,
            ...(sidecar.observability?.metricsPort ? { metricsPort: sidecar.observability.metricsPort } : {}),
            labels: { ...config.labels },
            locality: config.locality,
          },
          health,
        });
        next.on('refused', (error) => log.error({ reason: grpcFailure(error).reason }, 'the controller refused this endpoint registration'));
        next.on('error', (error) => log.debug({ reason: controllerCallError(error, config.controller.address).message }, 'registration call failed; retrying'));
        next.on('registered', (ttl) => log.info({ leaseTtlSeconds: ttl, health }, 'endpoint registered'));
        return next;
      };
      client = connect();
      // A gRPC channel keeps the credentials it was made with: after a renewal, a new
      // client (the endpoint and its lease stay; Register is idempotent for the same identity).
      let leaf = identity.certificate?.chainPem[0];
      onIdentityChange = () => {
        const next = identity.certificate?.chainPem[0];
        if (closed || next === leaf) return; // e.g. only the trust bundle grew
        leaf = next;
        const old = client;
        client = connect();
        old?.abandon();
        void client.start();
      };
      identity.on('change', onIdentityChange);
      // Do not block the sidecar on the controller: it registers whenever the controller answers.
      void client.start();
      const tick = async () => {
        const next = await probeApp(config);
        if (next !== health) log.info({ from: health, to: next }, 'app health changed');
        health = next;
        client?.setHealth(next);
        timer = setTimeout(() => void tick(), config.sidecar.probeIntervalMs);
        timer.unref();
      };
      timer = setTimeout(() => void tick(), config.sidecar.probeIntervalMs);
      timer.unref();
    },
    async close() {
      closed = true;
      if (onIdentityChange) identity.off('change', onIdentityChange);
      clearTimeout(timer);
      await client?.stop({ deregister: true });
    },
  };
}
