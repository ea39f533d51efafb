import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { DiscoveryClient, RegistrationClient, type TlsIdentity } from '../../api-client/index.js';
import { CatalogAdmin, Controller, type ControllerOptions } from '../../controller/index.js';
import { Etcd3Store, type EtcdStore } from '../../store/index.js';
import { controllerIdentity, parseConfig, type ClusterConfig } from '../../mesh/index.js';
import { startEtcd, type EtcdServer } from '../../testkit/etcd.js';
import { createMeshPki, type MeshPki } from '../../testkit/mesh-pki.js';

export const TD = 'causeway.internal';
export const spiffe = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

/** One cluster for a test: real etcd, a real mesh PKI from ca/, helpers for controllers and clients. */
export interface ControllerWorld {
  readonly etcd: EtcdServer;
  readonly pki: MeshPki;
  readonly admin: CatalogAdmin;
  /** Direct etcd access (what an operator or another component would write). */
  readonly store: EtcdStore;
  config(overrides?: { grpcPort?: number; dns?: boolean; leaseTtlSeconds?: number; debounceMs?: number }): ClusterConfig;
  startController(options?: Partial<ControllerOptions> & { grpcPort?: number; dns?: boolean; leaseTtlSeconds?: number }): Promise<Controller>;
  /** A workload identity's TLS material (`<ns>/<sa>`). */
  identity(nsSa: string): Promise<TlsIdentity>;
  /** A started DiscoveryClient (pass `start: false` to attach listeners first). */
  discovery(controller: Controller | number, nsSa: string, options?: DiscoveryOptions): Promise<DiscoveryClient>;
  registration(controller: Controller | number, nsSa: string, endpoint: ConstructorParameters<typeof RegistrationClient>[0]['endpoint'], options?: { heartbeatIntervalMs?: number }): Promise<RegistrationClient>;
}

export interface DiscoveryOptions {
  nodeId?: string;
  region?: string;
  cluster?: string;
  accept?: ConstructorParameters<typeof DiscoveryClient>[0]['accept'];
  initialSnapshot?: ConstructorParameters<typeof DiscoveryClient>[0]['initialSnapshot'];
  start?: boolean;
}

export async function controllerWorld(t: ExecutionContext): Promise<ControllerWorld> {
  const dir = await mkdtemp(join(tmpdir(), 'cw-ctrl-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const pki = await createMeshPki(join(dir, 'pki'), { trustDomain: TD });
  const east = await pki.cluster('east');
  const adminStore = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => adminStore.close());
  const admin = new CatalogAdmin(adminStore);
  const config = (o: { grpcPort?: number; dns?: boolean; leaseTtlSeconds?: number; debounceMs?: number } = {}) =>
    parseConfig('cluster', {
      cluster: { name: 'east', locality: { region: 'eu', zone: 'eu-1' } },
      trustDomain: TD,
      etcd: { endpoints: etcd.endpoints },
      federation: { heartbeatIntervalMs: 500 },
      controller: {
        host: '127.0.0.1',
        grpcPort: o.grpcPort ?? 0,
        endpointLeaseTtlSeconds: o.leaseTtlSeconds ?? 2,
        pushDebounceMs: o.debounceMs ?? 20,
        ...(o.dns ? { dns: { host: '127.0.0.1', port: 0 } } : {}),
      },
      observability: { host: '127.0.0.1', readyPort: 0, metricsPort: 0 },
    });
  const port = (c: Controller | number) => (typeof c === 'number' ? c : c.grpcPort);
  const identity = async (nsSa: string): Promise<TlsIdentity> => {
    const w = await pki.workload('east', nsSa);
    return { key: w.privateKeyPem, certChain: w.certChainPem, trustBundle: w.trustBundlePem };
  };
  return {
    etcd,
    pki,
    admin,
    store: adminStore,
    config,
    async startController(options = {}) {
      const { grpcPort, dns, leaseTtlSeconds, ...rest } = options;
      const controller = new Controller({ config: config({ grpcPort, dns, leaseTtlSeconds }), intermediate: east.ca, healthChecks: { enabled: true, intervalMs: 100, timeoutMs: 200 }, ...rest });
      t.teardown(() => controller.stop());
      await controller.start();
      return controller;
    },
    identity,
    async discovery(c, nsSa, o = {}) {
      const client = new DiscoveryClient({
        address: `127.0.0.1:${port(c)}`,
        tls: await identity(nsSa),
        expectedServerId: controllerIdentity(TD),
        hello: { nodeId: o.nodeId ?? nsSa.replace('/', '-'), cluster: o.cluster ?? 'east', region: o.region ?? 'eu', zone: 'eu-1' },
        backoff: { initialMs: 50, maxMs: 300 },
        ...(o.accept ? { accept: o.accept } : {}),
        ...(o.initialSnapshot ? { initialSnapshot: o.initialSnapshot } : {}),
      });
      t.teardown(() => client.close());
      return o.start === false ? client : client.start();
    },
    async registration(c, nsSa, endpoint, o = {}) {
      const client = new RegistrationClient({
        address: `127.0.0.1:${port(c)}`,
        tls: await identity(nsSa),
        expectedServerId: controllerIdentity(TD),
        endpoint,
        cluster: 'east',
        backoff: { initialMs: 50, maxMs: 300 },
        ...(o.heartbeatIntervalMs ? { heartbeatIntervalMs: o.heartbeatIntervalMs } : {}),
      });
      t.teardown(() => client.stop());
      return client;
    },
  };
}

export const reviews = {
  name: 'reviews',
  namespace: 'default',
  ports: [{ name: 'http', port: 9080, protocol: 'http' }],
  serviceAccounts: [spiffe('default', 'reviews')],
};
