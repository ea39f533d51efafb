import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { startProcess } from '../../testkit/index.js';

/**
 * cli/lifecycle.ts in a real process, signalled for real: a command whose stop hangs is
 * forced out at its drain deadline, with a log line naming what did not close; a stop that
 * finishes exits 0, and a second signal during it changes nothing.
 */

const lifecycleModule = fileURLToPath(new URL('../../cli/lifecycle.ts', import.meta.url));

function script(body: string): { file: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'cw-lifecycle-'));
  const file = join(dir, 'command.ts');
  writeFileSync(
    file,
    [
      `import { CommandLifecycle } from ${JSON.stringify(lifecycleModule)};`,
      body,
      // Stays up like a command would, until the lifecycle exits the process.
      'setInterval(() => undefined, 1000);',
      "process.stdout.write('running\\n');",
    ].join('\n'),
  );
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

test('a stop that hangs is forced out at the drain deadline: exit 1, the log line names the step still open', async (t) => {
  const { file, remove } = script(`
const lifecycle = new CommandLifecycle({ component: 'stuck-component', drainTimeoutMs: 700 });
lifecycle.onStop(async (steps) => {
  await steps.run('quick step', async () => undefined);
  await steps.run('etcd cluster record', () => new Promise(() => undefined));
});`);
  t.teardown(remove);
  const proc = startProcess(process.execPath, ['--import=tsx', file], { name: 'stuck command', env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' } });
  t.teardown(() => proc.kill());
  await proc.waitForOutput('running', 30_000);
  const asked = Date.now();
  proc.child.kill('SIGTERM');
  t.is(await proc.exited, 1);
  const tookMs = Date.now() - asked;
  t.true(tookMs >= 650 && tookMs < 3000, `forced out after ${tookMs} ms (deadline 700 ms)`);
  t.regex(proc.output(), /"notClosed":\["etcd cluster record"\].*stuck-component did not stop within 700 ms; exiting with etcd cluster record still open/);
});

test('a stop that finishes exits 0 at once; a second signal during it is the same request', async (t) => {
  const { file, remove } = script(`
const lifecycle = new CommandLifecycle({ component: 'quick-component', drainTimeoutMs: 10_000 });
lifecycle.onStop((steps) => steps.run('drain', () => new Promise((resolve) => setTimeout(resolve, 400))));`);
  t.teardown(remove);
  const proc = startProcess(process.execPath, ['--import=tsx', file], { name: 'quick command', env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'debug' } });
  t.teardown(() => proc.kill());
  await proc.waitForOutput('running', 30_000);
  proc.child.kill('SIGINT');
  await new Promise((resolve) => setTimeout(resolve, 100));
  proc.child.kill('SIGHUP');
  t.is(await proc.exited, 0);
  t.regex(proc.output(), /"signal":"SIGINT".*"msg":"stopping quick-component"/);
  t.regex(proc.output(), /"signal":"SIGHUP".*"msg":"stop already under way"/);
  t.notRegex(proc.output(), /did not stop within/);
});
