/**
 * One sidecar process for bench/mesh.ts: reads a JSON spec (config, certificate,
 * snapshot) from the file named by argv[2] and serves it with a static snapshot source,
 * so the benchmark measures the data plane alone.
 *
 * Plain JavaScript, so that it runs on bare Node like a deployed sidecar: it imports the
 * sidecar's own bundle, dist/sidecar.mjs — the same file `causeway sidecar` runs, with
 * the same code loaded (control-plane client included) — or, with argv[3] naming
 * cli/sidecar-main.ts and node started with `--import tsx`, the TypeScript sources.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const { parseSidecarConfig, Sidecar, StaticSnapshotSource, WorkloadIdentity } = await import(pathToFileURL(process.argv[3] ?? new URL('../dist/sidecar.mjs', import.meta.url).pathname).href);

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const identity = new WorkloadIdentity();
identity.set({ keyPem: spec.keyPem, chainPem: spec.chainPem, trustBundlePem: spec.trustBundlePem });
const sidecar = new Sidecar({ config: parseSidecarConfig(spec.config), identity, snapshots: new StaticSnapshotSource(spec.snapshot), serveObservability: false });
await sidecar.start();
process.stdout.write(`READY ${sidecar.inboundPort}\n`);
const stop = () => void sidecar.close().then(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
