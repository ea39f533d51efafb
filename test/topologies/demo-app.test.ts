import test from 'ava';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
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
