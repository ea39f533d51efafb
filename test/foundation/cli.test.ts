import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { freePort, startProcess, waitFor } from '../../testkit/index.js';

const bin = fileURLToPath(new URL('../../bin/causeway.js', import.meta.url));

function causeway(args: string[], nodeArgs: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...nodeArgs, bin, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
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

// A Node older than 22.12 (Debian's system Node 20, as on CI) reads as 20.0.0 here, on
// whatever Node runs the tests: bin/causeway.js then re-runs the command under
// node_modules' Node, which gets no --import and sees its own version.
const OLD_NODE = ['--import', 'data:text/javascript,Object.defineProperty(process.versions,"node",{value:"20.0.0"})'];

test('started by a Node older than 22.12, causeway re-runs under node_modules/node: exit codes come back, SIGTERM reaches the command', async (t) => {
  t.is((await causeway(['--version'], OLD_NODE)).code, 0);
  const unknown = await causeway(['frobnicate'], OLD_NODE);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /unknown command/);

  const proc = startProcess(process.execPath, [...OLD_NODE, bin, 'app', 'echo', '--host', '127.0.0.1', '--port', String(await freePort()), '--name', 'old-node'], { name: 'causeway app echo (old Node)' });
  t.teardown(() => proc.kill());
  await proc.waitForOutput(/echo old-node .* listening/, 60_000);
  const wrapper = proc.child.pid!;
  const [command] = readFileSync(`/proc/${wrapper}/task/${wrapper}/children`, 'utf8').trim().split(/\s+/);
  t.truthy(command, 'the command runs as a child of the wrapper');
  t.regex(readFileSync(`/proc/${command}/cmdline`, 'utf8'), /node_modules\/node\/bin\/node/);
  proc.child.kill('SIGTERM');
  await proc.exited;
  // Gone with the wrapper, not left running: /proc/<pid> disappears once it is reaped.
  await waitFor(() => !existsSync(`/proc/${command}`), { what: `command ${command} to exit with the wrapper`, timeoutMs: 10_000 });
  t.false(existsSync(`/proc/${command}`), `command ${command} outlived the wrapper`);
});
