import { execFile } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';

const bin = fileURLToPath(new URL('../../bin/causeway.js', import.meta.url));

function causeway(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

test('--help lists the command groups', async (t) => {
  const { code, stdout } = await causeway(['--help']);
  t.is(code, 0);
  t.regex(stdout, /Commands:/);
  t.regex(stdout, /config/);
});

test('--version prints the package version', async (t) => {
  const { code, stdout } = await causeway(['--version']);
  t.is(code, 0);
  t.regex(stdout, /^\d+\.\d+\.\d+\n$/);
});

test('an unknown command is a usage error: exit 2', async (t) => {
  const { code, stderr } = await causeway(['frobnicate']);
  t.is(code, 2);
  t.regex(stderr, /unknown command/);
});

test('a bad config file gives a path-precise one-line error and exit 2', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-cli-'));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, 'cluster:\n  name: east\n  locality: {region: r, zone: z}\netcd:\n  endpoints: [http://127.0.0.1:2379]\nlinks:\n  - peer: west\n    etcd: {endpoints: [http://a:1]}\n  - peer: south\n    etcd: {endpoints: [http://b:1, "nope"]}\n');
  const { code, stderr } = await causeway(['config', 'check', file]);
  t.is(code, 2);
  t.is(stderr, `causeway: error: ${file}: links[1].etcd.endpoints[1]: not a URL [CW_CONFIG_INVALID]\n`);
});

test('config schema prints JSON Schema', async (t) => {
  const { code, stdout } = await causeway(['config', 'schema', '--kind', 'workload']);
  t.is(code, 0);
  t.truthy((JSON.parse(stdout) as { properties: object }).properties);
});
