import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connectControllerStore } from '../../controller/index.js';
import { connectFederationStore } from '../../federation/index.js';
import { loadConfigFile } from '../../mesh/index.js';
import { startEtcd } from '../../testkit/etcd.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

function causeway(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import=tsx', join(ROOT, 'cli/main.ts'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 }, (error, stdout, stderr) =>
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr }),
    );
  });
}

/** Words of etcd3's and grpc-js's insides that must not reach a user. */
const INTERNALS = /circuit breaker|Resolution note|14 UNAVAILABLE|No connection established/;

test('regression: with etcd down, the controller\'s etcd errors name the endpoint, the cause and the setting in the config file — also once etcd3\'s circuit breaker is open', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cw-etcd-errors-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const endpoint = etcd.endpoints[0]!;
  const file = join(dir, 'east.yaml');
  await writeFile(
    file,
    [
      'cluster: { name: east, locality: { region: eu, zone: eu-1 } }',
      'trustDomain: causeway.internal',
      `etcd: { endpoints: [${endpoint}] }`,
      'links:',
      '  - peer: west',
      `    etcd: { endpoints: [${endpoint}] }`,
    ].join('\n'),
  );
  const config = loadConfigFile('cluster', file);
  const store = connectControllerStore(config.etcd);
  t.teardown(() => store.close());
  await store.put('/causeway/v1/probe', 'up'); // connected while etcd runs
  await etcd.stop();

  const expected = new RegExp(`^etcd at ${endpoint.replace(/[.:/]/g, '\\$&')} is unreachable \\(connection refused[^)]*\\); check that etcd runs and etcd\\.endpoints in ${file.replace(/[.:/]/g, '\\$&')}$`);
  // etcd3 opens its circuit breaker after a few failures; every message still says why.
  for (let i = 0; i < 5; i++) {
    const error = await t.throwsAsync(store.get('/causeway/v1/probe'), { code: 'CW_CTRL_ETCD_UNAVAILABLE' });
    t.regex(error.message, expected, `call ${i + 1}`);
    t.notRegex(error.message, INTERNALS);
  }

  // The federation's store: a peer link names its own setting.
  const peer = connectFederationStore(config.links[0]!.etcd!);
  t.teardown(() => peer.close());
  for (let i = 0; i < 4; i++) {
    const error = await t.throwsAsync(peer.list('/causeway/v1/exports/'), { code: 'CW_FEDERATION_ETCD_UNAVAILABLE' });
    t.regex(error.message, /is unreachable \(connection refused[^)]*during listing \/causeway\/v1\/exports\/\); check that etcd runs and links\[0\]\.etcd\.endpoints in /);
    t.notRegex(error.message, INTERNALS);
  }

  // And on the command line.
  const cli = await causeway(['export', 'reviews.default', '--config', file]);
  t.is(cli.code, 1, cli.stderr);
  t.regex(cli.stderr, new RegExp(`etcd at ${endpoint.replace(/[.:/]/g, '\\$&')} is unreachable \\(connection refused`));
  t.regex(cli.stderr, /check that etcd runs and etcd\.endpoints in .*east\.yaml/);
  t.notRegex(cli.stderr, INTERNALS);
});
