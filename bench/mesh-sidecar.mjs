/**
 * One sidecar process for bench/mesh.ts: reads a JSON spec (config, certificate,
 * snapshot) from the file named by argv[2] and serves it with a static snapshot source,
 * so the benchmark measures the data plane alone.
 */
import { readFileSync } from 'node:fs';
import { parseSidecarConfig, Sidecar, StaticSnapshotSource, WorkloadIdentity } from '../proxy/index.js';

interface Spec {
  config: unknown;
  keyPem: string;
  chainPem: string[];
  trustBundlePem: string[];
  snapshot: unknown;
}

const spec = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as Spec;
const identity = new WorkloadIdentity();
identity.set({ keyPem: spec.keyPem, chainPem: spec.chainPem, trustBundlePem: spec.trustBundlePem });
const sidecar = new Sidecar({ config: parseSidecarConfig(spec.config), identity, snapshots: new StaticSnapshotSource(spec.snapshot), serveObservability: false });
await sidecar.start();
process.stdout.write(`READY ${sidecar.inboundPort}\n`);
const stop = () => void sidecar.close().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
