/**
 * CA issuance benchmark: CSR (PEM) in → signed chain out, on one core.
 *
 *   npm run bench:ca                    # defaults
 *   npm run bench:ca -- --count 20000   # more iterations
 *
 * Reports certificates per second (wall and per CPU-second) and latency percentiles for:
 *   1. the hot path, IntermediateCa.signCsr: parse + verify the CSR, check identity and key,
 *      DER template + node:crypto sign, PEM-encode the chain;
 *   2. the @peculiar/x509 reference path doing the same work (baseline, fewer iterations);
 *   3. the whole gRPC CreateCertificate round trip over TLS, on one channel and with a new
 *      channel (TLS handshake) per call (client and server share this process, so the
 *      per-core figures include the client's cost).
 * The target is ≥ 2,000 certificates/s/core for (1).
 */
import { Metadata, Server } from '@grpc/grpc-js';
import { CertificateServiceClient, type CreateCertificateRequest } from '../api-client/index.js';
import {
  addCertificateService,
  createCertificateServiceCredentials,
  createCsr,
  createIntermediateCa,
  createRootCa,
  generatePrivateKey,
  mintJoinToken,
  requestCertificate,
  signingServiceChannelCredentials,
} from '../ca/index.js';
import { ReferenceLeafIssuer } from '../ca/x509-reference.js';
import { controllerIdentity, createRootLogger } from '../mesh/index.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const COUNT = flag('count', 5000);
const REFERENCE_COUNT = flag('reference-count', 300);
const GRPC_COUNT = flag('grpc-count', 2000);
const GRPC_CONCURRENCY = flag('grpc-concurrency', 16);
const TD = 'causeway.internal';

interface Result {
  readonly name: string;
  readonly count: number;
  readonly certsPerSecond: number;
  readonly certsPerCpuSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function measure(name: string, count: number, concurrency: number, one: (i: number) => Promise<unknown> | unknown): Promise<Result> {
  const latencies: number[] = new Array<number>(count);
  const cpuStart = process.cpuUsage();
  const start = process.hrtime.bigint();
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      const t0 = process.hrtime.bigint();
      await one(i);
      latencies[i] = Number(process.hrtime.bigint() - t0) / 1e6;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const wallSeconds = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  const cpuSeconds = (cpu.user + cpu.system) / 1e6;
  latencies.sort((a, b) => a - b);
  return { name, count, certsPerSecond: count / wallSeconds, certsPerCpuSecond: count / cpuSeconds, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99) };
}

async function main(): Promise<void> {
  const root = await createRootCa({ trustDomain: TD });
  const ca = await createIntermediateCa(root, { cluster: 'east' });
  const distinct = Math.min(COUNT, 1000);
  const ids = Array.from({ length: distinct }, (_, i) => `spiffe://${TD}/ns/bench/sa/sa-${i}`);
  const csrs = await Promise.all(ids.map(async (id) => createCsr(await generatePrivateKey(), id)));
  const at = (i: number) => i % distinct;

  // Warm-up so that JIT and OpenSSL caches do not count against the first path.
  for (let i = 0; i < 200; i++) ca.signCsr(csrs[at(i)] as string, { expectedSpiffeId: ids[at(i)] as string });

  const results: Result[] = [];
  results.push(await measure('signCsr (DER template + node:crypto)', COUNT, 1, (i) => ca.signCsr(csrs[at(i)] as string, { expectedSpiffeId: ids[at(i)] as string })));

  const reference = new ReferenceLeafIssuer(ca);
  await reference.signCsr(csrs[0] as string);
  results.push(await measure('@peculiar/x509 reference', REFERENCE_COUNT, 1, (i) => reference.signCsr(csrs[at(i)] as string)));

  const controller = await ca.issue({ spiffeId: controllerIdentity(TD) });
  const server = new Server();
  addCertificateService(server, { ca, logger: createRootLogger({ level: 'warn' }) });
  const tls = createCertificateServiceCredentials({ privateKeyPem: controller.privateKeyPem, certChainPem: controller.certChainPem, trustBundlePem: ca.trustBundlePem });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', tls.credentials, (e, p) => (e ? reject(e) : resolve(p))));
  const endpoint = { address: `127.0.0.1:${port}`, trustBundlePem: ca.trustBundlePem, controllerSpiffeId: controllerIdentity(TD) };
  const tokens = ids.map((id) => mintJoinToken(ca, { spiffeId: id }));
  // One channel, as a restart storm of many workloads looks to the server once their TLS sessions are up
  // (requestCertificate opens a channel per call: a TLS handshake each, what one workload does once a day).
  const client = new CertificateServiceClient(endpoint.address, signingServiceChannelCredentials(endpoint), { 'grpc.ssl_target_name_override': 'causeway-controller' }) as unknown as {
    createCertificate(request: CreateCertificateRequest, metadata: Metadata, callback: (error: Error | null) => void): void;
    close(): void;
  };
  const call = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const metadata = new Metadata();
      metadata.set('authorization', `Bearer ${tokens[at(i)] as string}`);
      client.createCertificate({ csr: csrs[at(i)] as string, validitySeconds: 0 }, metadata, (error) => (error ? reject(error) : resolve()));
    });
  await call(0);
  results.push(await measure(`gRPC CreateCertificate, one channel, ${GRPC_CONCURRENCY} in flight`, GRPC_COUNT, GRPC_CONCURRENCY, call));
  const perCall = await measure('gRPC CreateCertificate, new channel + TLS per call', Math.min(GRPC_COUNT, 200), 1, (i) =>
    requestCertificate(endpoint, { joinToken: tokens[at(i)] as string }, { csr: csrs[at(i)] as string, validitySeconds: 0 }),
  );
  results.push(perCall);
  client.close();
  server.forceShutdown();

  const pad = (s: string, n: number) => s.padEnd(n);
  process.stdout.write(`node ${process.version}, ECDSA P-256 intermediate and workload keys\n`);
  process.stdout.write(`${pad('path', 58)}${pad('n', 7)}${pad('certs/s', 10)}${pad('certs/cpu-s', 13)}${pad('p50 ms', 9)}p99 ms\n`);
  for (const r of results) {
    process.stdout.write(`${pad(r.name, 58)}${pad(String(r.count), 7)}${pad(r.certsPerSecond.toFixed(0), 10)}${pad(r.certsPerCpuSecond.toFixed(0), 13)}${pad(r.p50Ms.toFixed(3), 9)}${r.p99Ms.toFixed(3)}\n`);
  }
  const [fast, slow] = results;
  if (fast && slow) process.stdout.write(`speed-up of the hot path over @peculiar/x509: ${(fast.certsPerCpuSecond / slow.certsPerCpuSecond).toFixed(1)}×\n`);
  process.stdout.write(`${JSON.stringify({ results })}\n`);
}

await main();
