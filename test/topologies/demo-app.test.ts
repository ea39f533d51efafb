import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { PEER_CLUSTER_HEADER as PROXY_CLUSTER_HEADER, PEER_IDENTITY_HEADER as PROXY_IDENTITY_HEADER } from '../../proxy/index.js';
import { PEER_CLUSTER_HEADER, PEER_IDENTITY_HEADER, peerIdentityOf, runLoad, startEchoServer, unmetRequirements } from '../../topologies/index.js';

test('the echo app reads the identity header the sidecar sets', (t) => {
  t.is(PEER_IDENTITY_HEADER, PROXY_IDENTITY_HEADER);
  t.is(PEER_CLUSTER_HEADER, PROXY_CLUSTER_HEADER);
  t.is(peerIdentityOf({ [PEER_IDENTITY_HEADER]: 'spiffe://causeway.internal/ns/default/sa/web' }), 'spiffe://causeway.internal/ns/default/sa/web');
  t.is(peerIdentityOf({ 'x-forwarded-client-cert': 'By=spiffe://td/ns/a/sa/b;Hash=abc;URI=spiffe://td/ns/default/sa/web' }), 'spiffe://td/ns/default/sa/web');
  t.is(peerIdentityOf({}), null);
});

test('echo answers its name, cluster, version and the caller identity; load counts them', async (t) => {
  const server = await startEchoServer({ port: 0, host: '127.0.0.1', name: 'reviews', cluster: 'west', version: 'v2' });
  t.teardown(() => server.close());
  const { port } = server.address() as AddressInfo;
  const body = await new Promise<string>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/hello', headers: { [PEER_IDENTITY_HEADER]: 'spiffe://td/ns/default/sa/web', [PEER_CLUSTER_HEADER]: 'east' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve(text));
    });
    req.on('error', reject);
    req.end();
  });
  t.like(JSON.parse(body), { service: 'reviews', cluster: 'west', version: 'v2', peerIdentity: 'spiffe://td/ns/default/sa/web', peerCluster: 'east', path: '/hello' });

  const report = await runLoad({ url: `http://127.0.0.1:${port}/`, rps: 200, requests: 20, timeoutMs: 2000, expect: { cluster: 'west' } });
  t.like(report, { requests: 20, successes: 20, failures: 0, byCluster: { west: 20 }, byVersion: { v2: 20 }, byPeerIdentity: { none: 20 } });
  t.deepEqual(unmetRequirements(report, { minSuccesses: 20, onlyClusters: ['west'], seenClusters: ['west'] }), []);
  t.deepEqual(unmetRequirements(report, { seenClusters: ['east'], peerIdentity: 'spiffe://x' }), ['no answer from cluster east', 'peer identities none seen (expected spiffe://x)']);

  const wrong = await runLoad({ url: `http://127.0.0.1:${port}/`, rps: 200, requests: 3, timeoutMs: 2000, expect: { cluster: 'east' } });
  t.like(wrong, { successes: 0, failures: 3, failuresBy: { unexpected_cluster: 3 } });
});

test('load reports progress while it runs', async (t) => {
  const server = await startEchoServer({ port: 0, host: '127.0.0.1', name: 'x', cluster: 'c', version: 'v' });
  t.teardown(() => server.close());
  const { port } = server.address() as AddressInfo;
  const seen: number[] = [];
  // Paced over at least 400 ms, so a 20 ms progress clock ticks; counts only grow.
  const report = await runLoad({ url: `http://127.0.0.1:${port}/`, rps: 50, requests: 20, timeoutMs: 5000, progressEveryMs: 20, onProgress: (p) => seen.push(p.successes) });
  t.is(report.successes, 20);
  t.true(seen.length >= 2, `progress ${seen.join(',')}`);
  t.true(seen.every((n, i) => n <= report.successes && (i === 0 || n >= seen[i - 1]!)), `progress ${seen.join(',')} of ${report.successes}`);
});

test('load counts refused connections as failures without throwing', async (t) => {
  const server = await startEchoServer({ port: 0, host: '127.0.0.1', name: 'x', cluster: 'c', version: 'v' });
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  const report = await runLoad({ url: `http://127.0.0.1:${port}/`, rps: 100, requests: 5, timeoutMs: 2000 });
  t.is(report.requests, 5);
  t.is(report.successes, 0);
  t.is(report.failuresBy.ECONNREFUSED, report.requests);
});

/** A DNS server on 127.0.0.1 that knows one name (A → 127.0.0.1) and answers NXDOMAIN otherwise. */
async function startOneNameDns(t: ExecutionContext, known: string): Promise<string> {
  const dns2 = (await import('dns2')).default;
  const Packet = dns2.Packet as unknown as {
    createResponseFromRequest(r: unknown): { header: { rcode: number }; answers: unknown[] };
    createResourceFromQuestion(q: unknown, r: unknown): unknown;
    TYPE: { A: number };
    CLASS: { IN: number };
  };
  const server = new dns2.UDPServer({ type: 'udp4' });
  server.on('request', (request: { questions: { name: string; type: number }[] }, send: (r: unknown) => void) => {
    const response = Packet.createResponseFromRequest(request);
    const question = request.questions[0]!;
    if (question.name.toLowerCase() !== known) response.header.rcode = 3;
    else if (question.type === Packet.TYPE.A) response.answers.push(Packet.createResourceFromQuestion({ name: question.name, type: Packet.TYPE.A, class: Packet.CLASS.IN }, { ttl: 5, address: '127.0.0.1' }));
    send(response);
  });
  await new Promise<void>((resolve) => server.bind(0, '127.0.0.1', () => resolve()));
  t.teardown(() => server.close());
  return `127.0.0.1:${server.address().port}`;
}

test('load --dns resolves the URL host through that server: a mesh name reaches the app, an unknown one counts as ENOTFOUND', async (t) => {
  const server = await startEchoServer({ port: 0, host: '127.0.0.1', name: 'reviews', cluster: 'west', version: 'v1' });
  t.teardown(() => server.close());
  const { port } = server.address() as AddressInfo;
  const dnsServer = await startOneNameDns(t, 'reviews.default.svc.causeway.internal');

  const report = await runLoad({ url: `http://reviews.default.svc.causeway.internal:${port}/`, rps: 100, requests: 3, timeoutMs: 2000, dnsServer });
  t.like(report, { successes: 3, failures: 0, byService: { reviews: 3 }, byPeerCluster: { none: 3 } });

  const unknown = await runLoad({ url: `http://ratings.default.svc.causeway.internal:${port}/`, rps: 100, requests: 2, timeoutMs: 2000, dnsServer });
  t.like(unknown, { successes: 0, failures: 2, failuresBy: { ENOTFOUND: 2 } });

  const literal = await runLoad({ url: `http://127.0.0.1:${port}/`, rps: 100, requests: 1, timeoutMs: 2000, dnsServer });
  t.is(literal.successes, 1, 'an IP address in the URL is not looked up');
});

test('causeway app load --dns takes ip:port only, as a usage error (exit 2)', async (t) => {
  const bin = fileURLToPath(new URL('../../bin/causeway.js', import.meta.url));
  const run = (dns: string) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      execFile(process.execPath, [bin, 'app', 'load', '--dns', dns, '--url', 'http://reviews.default.svc.causeway.internal:9080/', '--requests', '1'], { timeout: 30_000 }, (error, _stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr }),
      );
    });
  for (const bad of ['localhost:15053', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000']) {
    const { code, stderr } = await run(bad);
    t.is(code, 2, bad);
    t.regex(stderr, /--dns must be a DNS server as ip:port/, bad);
  }
});
