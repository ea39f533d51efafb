import test from 'ava';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { EtcdKeys } from '../../mesh/index.js';
import { startEtcd } from '../../testkit/etcd.js';
import { freePorts, waitFor } from '../../testkit/ports.js';
import { startProcess } from '../../testkit/processes.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CLI = ['--import=tsx', join(ROOT, 'cli/main.ts')];

function causeway(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

test('causeway controller, service apply, export/unexport and policy apply work against a real etcd', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cw-ctrl-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  t.is((await causeway(['ca', 'init', '--trust-domain', 'causeway.internal', '--out', join(dir, 'root')])).code, 0);
  t.is((await causeway(['ca', 'intermediate', '--root', join(dir, 'root'), '--cluster', 'east', '--out', join(dir, 'east-ca')])).code, 0);
  const [grpcPort, readyPort] = await freePorts(2);
  const config = join(dir, 'cluster.yaml');
  await writeFile(
    config,
    [
      'cluster: { name: east, locality: { region: eu, zone: eu-1 } }',
      `etcd: { endpoints: [${etcd.clientUrl}] }`,
      `controller: { host: 127.0.0.1, grpcPort: ${grpcPort}, caDir: ${join(dir, 'east-ca')} }`,
      `observability: { host: 127.0.0.1, readyPort: ${readyPort}, metricsPort: ${readyPort} }`,
    ].join('\n'),
  );
  const svc = join(dir, 'svc.yaml');
  await writeFile(svc, ['kind: Service', 'name: reviews', 'namespace: default', 'ports: [{ name: http, port: 9080, protocol: http }]', 'serviceAccounts: [spiffe://causeway.internal/ns/default/sa/reviews]', 'subsets: { v1: { version: v1 }, v2: { version: v2 } }'].join('\n'));
  const applied = await causeway(['service', 'apply', '-f', svc, '--config', config]);
  t.is(applied.code, 0, applied.stderr);
  t.regex(applied.stdout, /service reviews\.default applied/);

  // As users start it: bin/causeway.js, which replaces itself with the controller's bundle.
  const proc = startProcess(process.execPath, [join(ROOT, 'bin/causeway.js'), 'controller', '--config', config], { cwd: ROOT, name: 'controller' });
  t.teardown(() => proc.kill());
  await proc.waitForOutput(/serving gRPC on port \d+/, 30_000);
  t.regex(readFileSync(`/proc/${proc.child.pid}/cmdline`, 'utf8'), /\/dist\/controller\.mjs\0controller\0/);
  await waitFor(async () => (await fetch(`http://127.0.0.1:${readyPort}/healthz/ready`)).status === 200, { what: 'ready' });

  t.is((await causeway(['export', 'reviews.default', '--config', config])).code, 0);
  await waitFor(() => etcd.etcdctl(['get', EtcdKeys.exportedService('default', 'reviews'), '--print-value-only']).includes('"healthy"'), { what: 'export published by the running controller' });
  t.is((await causeway(['unexport', 'reviews.default', '--config', config])).code, 0);
  await waitFor(() => etcd.etcdctl(['get', EtcdKeys.exportedService('default', 'reviews'), '--print-value-only']).trim() === '', { what: 'export removed' });

  const policy = join(dir, 'policy.yaml');
  await writeFile(policy, ['kind: AuthorizationPolicy', 'name: allow-productpage', 'namespace: default', 'service: reviews', 'action: allow', 'from: [{ identities: [spiffe://causeway.internal/ns/default/sa/productpage] }]', '---', 'kind: TrafficPolicy', 'name: reviews-failover', 'namespace: default', 'service: reviews', 'failoverOrder: [east, west]', 'retries: 2'].join('\n'));
  const policyResult = await causeway(['policy', 'apply', '-f', policy, '--config', config]);
  t.is(policyResult.code, 0, policyResult.stderr);
  t.true(etcd.etcdctl(['get', EtcdKeys.policy('authorization', 'default', 'allow-productpage'), '--print-value-only']).includes('"action":"allow"'));

  const bad = join(dir, 'bad.yaml');
  await writeFile(bad, ['kind: AuthorizationPolicy', 'name: broken', 'namespace: default', 'action: maybe'].join('\n'));
  const badResult = await causeway(['policy', 'apply', '-f', bad, '--config', config]);
  t.is(badResult.code, 2, 'a bad policy file is a bad input file: exit 2');
  t.regex(badResult.stderr, /action/);

  // A canary split may name only the service's subsets.
  const canary = (subset: string) => ['kind: TrafficPolicy', 'name: reviews-canary', 'namespace: default', 'service: reviews', `split: [{ subset: v1, weight: 90 }, { subset: ${subset}, weight: 10 }]`].join('\n');
  await writeFile(bad, canary('v9'));
  const unknownSubset = await causeway(['policy', 'apply', '-f', bad, '--config', config]);
  t.is(unknownSubset.code, 2);
  t.regex(unknownSubset.stderr, /split\[1\]\.subset: service reviews\.default has no subset "v9" \(it has: v1, v2\)/);
  t.is(etcd.etcdctl(['get', EtcdKeys.policy('traffic', 'default', 'reviews-canary'), '--print-value-only']).trim(), '');
  await writeFile(bad, canary('v2'));
  const split = await causeway(['policy', 'apply', '-f', bad, '--config', config]);
  t.is(split.code, 0, split.stderr);
  t.true(etcd.etcdctl(['get', EtcdKeys.policy('traffic', 'default', 'reviews-canary'), '--print-value-only']).includes('"split":[{"subset":"v1","weight":90},{"subset":"v2","weight":10}]'));

  // Routes: the example policy applies; a route naming an unknown subset, or a regex the
  // linear-time engine cannot run, is refused with the path of the bad value.
  const example = await causeway(['policy', 'apply', '-f', 'examples/traffic-policy-routes.yaml', '--config', config]);
  t.is(example.code, 0, example.stderr);
  t.true(etcd.etcdctl(['get', EtcdKeys.policy('traffic', 'default', 'reviews'), '--print-value-only']).includes('"name":"canary","match":{"headers":[{"name":"x-canary","exact":"1"}]},"subset":"v2"'));
  const routed = (route: string) => ['kind: TrafficPolicy', 'name: reviews-routes', 'namespace: default', 'service: reviews', 'routes:', '  - { name: ok }', `  - ${route}`].join('\n');
  await writeFile(bad, routed('{ name: canary, match: { headers: [{ name: x-canary, exact: "1" }] }, subset: v9 }'));
  const routeSubset = await causeway(['policy', 'apply', '-f', bad, '--config', config]);
  t.is(routeSubset.code, 2);
  t.regex(routeSubset.stderr, /routes\[1\]\.subset: service reviews\.default has no subset "v9"/);
  await writeFile(bad, routed('{ name: users, match: { headers: [{ name: x-user, regex: "(a)\\\\1" }] } }'));
  const backReference = await causeway(['policy', 'apply', '-f', bad, '--config', config]);
  t.is(backReference.code, 2);
  t.regex(backReference.stderr, /routes\[1\]\.match\.headers\[0\]\.regex: pattern needs backtracking/);
  t.is(etcd.etcdctl(['get', EtcdKeys.policy('traffic', 'default', 'reviews-routes'), '--print-value-only']).trim(), '');

  t.is(await proc.stop(15_000), 0, 'SIGTERM: a clean exit, no SIGKILL needed');
  t.regex(proc.output(), /controller stopped/);
});
