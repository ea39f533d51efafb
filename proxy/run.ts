import { hostname } from 'node:os';
import type { Registry } from 'prom-client';
import { logger as moduleLogger, workloadGroupEndpointId, type Logger } from '../mesh/index.js';
import type { SidecarConfig } from './config.js';
import { DiscoverySnapshotSource, certificatePart, defaultEndpointId, registrationPart } from './control-plane.js';
import { Sidecar } from './sidecar.js';
import { WorkloadIdentity } from './workload-identity.js';

export interface RunSidecarOptions {
  readonly log?: Logger;
  readonly registry?: Registry;
  /** Stable endpoint id (default `<service>-<advertiseAddress>-<inboundPort>`). */
  readonly endpointId?: string;
  /** Serve /healthz/ready and /metrics (default true). */
  readonly serveObservability?: boolean;
}

/**
 * A sidecar wired to its cluster's controller: certificate bootstrap and renewal from
 * the CA service, discovery stream, endpoint registration with a local app probe.
 * `causeway sidecar --config workload.yaml` runs exactly this.
 */
export async function runSidecar(config: SidecarConfig, options: RunSidecarOptions = {}): Promise<Sidecar> {
  const log = options.log ?? moduleLogger('sidecar', { workload: `${config.service}.${config.namespace}`, cluster: config.cluster });
  const identity = new WorkloadIdentity();
  // A host onboarded into a workload group registers as `<group>-<address>`.
  if (!options.endpointId && config.workloadGroup) options = { ...options, endpointId: workloadGroupEndpointId(config.workloadGroup, config.advertiseAddress) };
  const nodeId = options.endpointId ?? (config.inboundPort !== 0 ? defaultEndpointId(config, config.inboundPort) : `${config.service}-${hostname()}-${process.pid}`.toLowerCase().replace(/[^a-z0-9.-]/g, '-'));
  const snapshots = new DiscoverySnapshotSource(config, identity, log.child({ module: 'discovery' }), nodeId);
  const sidecar = new Sidecar({
    config,
    identity,
    snapshots,
    bootstrap: [certificatePart(config, identity, log.child({ module: 'certificates' }))],
    parts: [registrationPart(config, identity, log.child({ module: 'registration' }), options.endpointId)],
    log,
    ...(options.registry ? { registry: options.registry } : {}),
    ...(options.serveObservability !== undefined ? { serveObservability: options.serveObservability } : {}),
  });
  await sidecar.start();
  return sidecar;
}
