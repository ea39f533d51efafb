import { status, type ServerUnaryCall, type sendUnaryData, type UntypedServiceImplementation } from '@grpc/grpc-js';
import {
  CATALOG_SCHEMA_VERSION,
  Endpoint,
  EtcdKeys,
  HealthStates,
  ServiceSpec,
  ValidationError,
  decodeCatalogValue,
  encodeCatalogValue,
  logger,
  parseSpiffeId,
  type HealthState,
  type Locality,
} from '../mesh/index.js';
import { serviceKey, type CatalogCache } from './catalog-cache.js';
import { ControllerError, ControllerErrorCodes } from './errors.js';
import type { EtcdStore, StoredValue } from '../store/index.js';
import type { ControllerMetrics } from './metrics.js';
import type { DeregisterRequest, HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse } from '../api-client/index.js';
import { callerSpiffeId } from './caller-identity.js';

export interface RegistrationOptions {
  readonly cluster: string;
  readonly trustDomain: string;
  readonly locality: Locality;
  readonly leaseTtlSeconds: number;
}

const refuse = (code: string, message: string) => new ControllerError(code, message);

/**
 * `causeway.registry.v1.Registration`: endpoints bound to etcd leases.
 *
 * One lease per endpoint, granted by whichever controller takes the Register call.
 * The lease id is not kept in controller memory as the source of truth: etcd stores it
 * with the key (KeyValue.lease), so any controller sharing the cluster's etcd can serve
 * the endpoint's Heartbeat — it reads the lease id from its watch-fed catalog (or etcd,
 * when the catalog has not seen the key yet) and refreshes that lease. Controllers
 * therefore never fight over an endpoint and a controller restart loses nothing: the
 * lease lives in etcd and outlives the controller for its TTL. A Heartbeat answers
 * NOT_FOUND only when the key or its lease is gone; the sidecar then registers again.
 */
export class RegistrationService {
  readonly #log = logger('controller-registry');

  readonly #store: EtcdStore;
  readonly #catalog: CatalogCache;
  readonly #options: RegistrationOptions;
  readonly #metrics: ControllerMetrics;

  constructor(
    store: EtcdStore,
    catalog: CatalogCache,
    options: RegistrationOptions,
    metrics: ControllerMetrics,
  ) {
    this.#store = store;
    this.#catalog = catalog;
    this.#options = options;
    this.#metrics = metrics;
  }

  implementation(): UntypedServiceImplementation {
    return {
      Register: this.#unary('register', (call: ServerUnaryCall<RegisterRequest, RegisterResponse>) => this.register(call)),
      Heartbeat: this.#unary('heartbeat', (call: ServerUnaryCall<HeartbeatRequest, HeartbeatResponse>) => this.heartbeat(call)),
      Deregister: this.#unary('deregister', (call: ServerUnaryCall<DeregisterRequest, object>) => this.deregister(call)),
    };
  }

  #unary<Req, Res>(what: 'register' | 'heartbeat' | 'deregister', run: (call: ServerUnaryCall<Req, Res>) => Promise<Res>) {
    return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
      run(call).then(
        (res) => {
          if (what === 'register') this.#metrics.registrations.inc({ result: 'ok' });
          if (what === 'heartbeat') this.#metrics.heartbeats.inc({ result: 'ok' });
          callback(null, res);
        },
        (error: unknown) => {
          const known = error instanceof ControllerError ? error : undefined;
          const code = known?.grpcStatus ?? status.INTERNAL;
          const result = known?.code ?? 'internal';
          if (what === 'register') this.#metrics.registrations.inc({ result });
          if (what === 'heartbeat') this.#metrics.heartbeats.inc({ result });
          if (!known) this.#log.error({ err: error, what }, 'registration call failed');
          else if (what !== 'heartbeat' || code !== status.NOT_FOUND) this.#log.info({ what, code: known.code, reason: known.message }, 'registration call refused');
          callback({ code, details: (error as Error).message ?? String(error) });
        },
      );
    };
  }

  #identity(call: ServerUnaryCall<unknown, unknown>): string {
    const id = callerSpiffeId(call);
    if (!id) throw refuse(ControllerErrorCodes.unauthenticated, 'registration needs a client certificate that chains to the mesh trust bundle and carries one SPIFFE ID');
    if (parseSpiffeId(id).trustDomain !== this.#options.trustDomain) {
      throw refuse(ControllerErrorCodes.permissionDenied, `identity ${id} is outside trust domain ${this.#options.trustDomain}`);
    }
    return id;
  }

  #endpointKey(namespace: string, service: string, endpointId: string): string {
    try {
      return EtcdKeys.endpoint(namespace, service, endpointId);
    } catch (error) {
      throw refuse(ControllerErrorCodes.invalidRequest, `bad service, namespace or endpoint_id: ${(error as Error).message}`);
    }
  }

  async #spec(namespace: string, name: string): Promise<ServiceSpec> {
    const cached = this.#catalog.services.get(serviceKey(namespace, name));
    if (cached) return cached.value;
    // A service applied a moment ago may not have reached this controller's watch yet.
    const key = EtcdKeys.service(namespace, name);
    const kv = await this.#store.get(key);
    const decoded = kv ? decodeCatalogValue(ServiceSpec, key, kv.value) : undefined;
    if (!decoded?.ok) {
      throw refuse(ControllerErrorCodes.unknownService, `service ${name}.${namespace} is not in the catalog; apply it first (causeway service apply -f)`);
    }
    return decoded.value;
  }

  #health(text: string, field = 'health'): HealthState {
    if (text === '') return 'unknown';
    if (!(HealthStates as readonly string[]).includes(text)) throw refuse(ControllerErrorCodes.invalidRequest, `${field} must be one of ${HealthStates.join(', ')} (got "${text}")`);
    return text as HealthState;
  }

  #decodeStored(kv: StoredValue): Endpoint | undefined {
    const decoded = decodeCatalogValue(Endpoint, kv.key, kv.value);
    return decoded.ok ? decoded.value : undefined;
  }

  async register(call: ServerUnaryCall<RegisterRequest, RegisterResponse>): Promise<RegisterResponse> {
    const identity = this.#identity(call);
    const req = call.request;
    const key = this.#endpointKey(req.namespace, req.service, req.endpointId);
    const spec = await this.#spec(req.namespace, req.service);
    if (!spec.serviceAccounts.includes(identity)) {
      throw refuse(ControllerErrorCodes.permissionDenied, `identity ${identity} may not serve ${req.service}.${req.namespace}; allowed: ${spec.serviceAccounts.join(', ')}`);
    }
    const health = this.#health(req.health);
    for (let attempt = 0; attempt < 3; attempt++) {
      const existing = await this.#store.get(key);
      const previous = existing ? this.#decodeStored(existing) : undefined;
      if (previous && previous.identity !== identity) {
        throw refuse(ControllerErrorCodes.permissionDenied, `endpoint ${req.endpointId} of ${req.service}.${req.namespace} belongs to ${previous.identity}; choose another endpoint_id`);
      }
      let lease: string | undefined;
      if (existing && existing.lease !== '0' && (await this.#store.keepAlive(existing.lease)) > 0) lease = existing.lease;
      lease ??= await this.#store.grantLease(this.#options.leaseTtlSeconds);
      let value: string;
      try {
        value = encodeCatalogValue(Endpoint, key, {
          schema: CATALOG_SCHEMA_VERSION,
          id: req.endpointId,
          service: req.service,
          namespace: req.namespace,
          cluster: this.#options.cluster,
          address: req.address,
          inboundPort: req.inboundPort,
          labels: req.labels ?? {},
          locality: req.locality && req.locality.region ? { region: req.locality.region, zone: req.locality.zone } : this.#options.locality,
          identity,
          health,
          registeredAt: previous?.registeredAt ?? new Date().toISOString(),
          ...(req.metricsPort ? { metricsPort: req.metricsPort } : {}),
        });
      } catch (error) {
        if (lease !== existing?.lease) await this.#store.revokeLease(lease).catch(() => undefined);
        if (error instanceof ValidationError) throw refuse(ControllerErrorCodes.invalidRequest, `malformed registration: ${error.message}`);
        throw error;
      }
      if (await this.#store.putIfUnchanged(key, value, existing?.modRevision ?? '0', { lease })) {
        this.#log.debug({ key, identity, lease }, 'endpoint registered');
        return { endpointId: req.endpointId, leaseTtlSeconds: this.#options.leaseTtlSeconds };
      }
      if (lease !== existing?.lease) await this.#store.revokeLease(lease).catch(() => undefined);
    }
    throw refuse(ControllerErrorCodes.conflict, `endpoint ${key} kept changing while registering; retry`);
  }

  async heartbeat(call: ServerUnaryCall<HeartbeatRequest, HeartbeatResponse>): Promise<HeartbeatResponse> {
    const identity = this.#identity(call);
    const req = call.request;
    const key = this.#endpointKey(req.namespace, req.service, req.endpointId);
    const health = req.health === '' ? undefined : this.#health(req.health);
    const notFound = () => refuse(ControllerErrorCodes.endpointNotFound, `endpoint ${req.endpointId} of ${req.service}.${req.namespace} is not registered (its lease expired?); register again`);
    const cached = this.#catalog.endpointsOf(serviceKey(req.namespace, req.service)).get(req.endpointId);
    let current: { endpoint: Endpoint; lease: string; modRevision: string } | undefined = cached
      ? { endpoint: cached.value, lease: cached.lease, modRevision: cached.modRevision }
      : undefined;
    let ttl = 0;
    if (current && current.lease !== '0') ttl = await this.#store.keepAlive(current.lease);
    if (ttl <= 0) {
      // The catalog may lag a registration made through another controller: ask etcd.
      const kv = await this.#store.get(key);
      const endpoint = kv ? this.#decodeStored(kv) : undefined;
      if (!kv || !endpoint || kv.lease === '0') throw notFound();
      current = { endpoint, lease: kv.lease, modRevision: kv.modRevision };
      ttl = await this.#store.keepAlive(kv.lease);
      if (ttl <= 0) throw notFound();
    }
    if (current!.endpoint.identity !== identity) {
      throw refuse(ControllerErrorCodes.permissionDenied, `endpoint ${req.endpointId} belongs to ${current!.endpoint.identity}, not ${identity}`);
    }
    if (health && health !== current!.endpoint.health) {
      const value = encodeCatalogValue(Endpoint, key, { ...current!.endpoint, health });
      const written = await this.#store.putIfUnchanged(key, value, current!.modRevision, { lease: current!.lease });
      if (!written) this.#log.debug({ key }, 'endpoint changed during heartbeat; health update left to the next heartbeat');
    }
    return { leaseTtlSeconds: ttl };
  }

  async deregister(call: ServerUnaryCall<DeregisterRequest, object>): Promise<object> {
    const identity = this.#identity(call);
    const req = call.request;
    const key = this.#endpointKey(req.namespace, req.service, req.endpointId);
    const kv = await this.#store.get(key);
    if (!kv) return {};
    const endpoint = this.#decodeStored(kv);
    if (endpoint && endpoint.identity !== identity) {
      throw refuse(ControllerErrorCodes.permissionDenied, `endpoint ${req.endpointId} belongs to ${endpoint.identity}, not ${identity}`);
    }
    if (await this.#store.deleteIfUnchanged(key, kv.modRevision)) {
      if (kv.lease !== '0') await this.#store.revokeLease(kv.lease).catch(() => undefined);
    }
    return {};
  }
}
