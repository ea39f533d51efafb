/**
 * Simulated discovery nodes for the benchmarks (`bench:controller`, `bench:scale`): a child
 * process holding `nodes` discovery streams to one controller, each on its own mTLS
 * connection, that ack every version on receipt and report when all of them have it. The
 * nodes model the transport and the controller, not a sidecar's parsing. A child process,
 * so the controller under test keeps its own core when it runs in the parent.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { credentials, type ClientDuplexStream } from '@grpc/grpc-js';
import { DiscoveryClientConstructor, spiffeIdOfCertificate, type DiscoveryRequest, type DiscoveryResponse } from '../api-client/index.js';
import { controllerIdentity } from '../mesh/index.js';

export interface DiscoveryNodesOptions {
  /** The controller's gRPC `host:port`. */
  readonly address: string;
  readonly nodes: number;
  readonly trustDomain: string;
  /** The controller's cluster (the nodes' `Hello.cluster`) and the nodes' region (the snapshot view). */
  readonly cluster: string;
  readonly region: string;
  /** A workload certificate of the cluster's intermediate. */
  readonly key: string;
  readonly certChain: string;
  readonly trustBundle: string;
}

/** From the child: all nodes hold their first snapshot, or all acked `version`. */
export type DiscoveryNodesMessage =
  | { readonly type: 'ready'; readonly wireBytes: number; readonly jsonBytes: number }
  | { readonly type: 'acked'; readonly version: string; readonly ackTimes: number[]; readonly wireBytes: number; readonly jsonBytes: number };

export interface DiscoveryNodes {
  /** The next message of the child; fails past `timeoutMs`. */
  next(timeoutMs: number): Promise<DiscoveryNodesMessage>;
  close(): void;
}

/** Starts the nodes in a child process; {@link DiscoveryNodes.next} yields `ready` once every node holds a snapshot. */
export function startDiscoveryNodes(options: DiscoveryNodesOptions): DiscoveryNodes {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--discovery-nodes'], { execArgv: ['--import=tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const messages: DiscoveryNodesMessage[] = [];
  let wake: (() => void) | undefined;
  let exited: string | undefined;
  child.on('message', (m: DiscoveryNodesMessage) => {
    messages.push(m);
    wake?.();
  });
  child.on('exit', (code, signal) => {
    exited = `discovery nodes exited (${code ?? signal})`;
    wake?.();
  });
  child.send(options);
  return {
    async next(timeoutMs) {
      const deadline = Date.now() + timeoutMs;
      while (messages.length === 0) {
        if (exited) throw new Error(exited);
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for the discovery nodes`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 100);
        });
      }
      return messages.shift()!;
    },
    close() {
      child.kill('SIGKILL');
    },
  };
}

function snapshotBytes(res: DiscoveryResponse): { wireBytes: number; jsonBytes: number } {
  const wireBytes = res.snapshot.length;
  return { wireBytes, jsonBytes: res.encoding === 'gzip' ? gunzipSync(res.snapshot).length : wireBytes };
}

function runNodes(init: DiscoveryNodesOptions): void {
  const versions = new Map<string, number[]>();
  let connected = 0;
  for (let i = 0; i < init.nodes; i++) {
    const creds = credentials.createSsl(Buffer.from(init.trustBundle), Buffer.from(init.key), Buffer.from(init.certChain), {
      checkServerIdentity: (_h, cert) => (spiffeIdOfCertificate(cert) === controllerIdentity(init.trustDomain) ? undefined : new Error('wrong controller identity')),
    });
    const client = new DiscoveryClientConstructor(init.address, creds, {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.max_receive_message_length': -1,
      'grpc.ssl_target_name_override': `controller.${init.cluster}.cw1.${init.trustDomain}`,
    });
    const stream = (client as unknown as { Stream(): ClientDuplexStream<DiscoveryRequest, DiscoveryResponse> }).Stream();
    stream.write({ hello: { nodeKind: 'sidecar', nodeId: `bench-${i}`, cluster: init.cluster, region: init.region, zone: `${init.region}-1`, lastVersion: '', acceptEncodings: ['gzip'] } });
    let first = true;
    stream.on('data', (res: DiscoveryResponse) => {
      stream.write({ ack: { version: res.version } });
      if (first) {
        first = false;
        if (++connected === init.nodes) process.send!({ type: 'ready', ...snapshotBytes(res) } satisfies DiscoveryNodesMessage);
        return;
      }
      const times = versions.get(res.version) ?? [];
      times.push(Date.now());
      versions.set(res.version, times);
      if (times.length === init.nodes) {
        process.send!({ type: 'acked', version: res.version, ackTimes: times, ...snapshotBytes(res) } satisfies DiscoveryNodesMessage);
        versions.delete(res.version);
      }
    });
    stream.on('error', (error) => {
      process.stderr.write(`discovery node ${i}: ${error.message}\n`);
      process.exit(1);
    });
  }
}

if (process.argv.includes('--discovery-nodes')) {
  process.once('message', (init: DiscoveryNodesOptions) => runNodes(init));
  // The parent's end: a bench that dies must not leave 100 streams behind.
  process.on('disconnect', () => process.exit(0));
}
