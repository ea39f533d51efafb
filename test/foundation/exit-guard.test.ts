// The exit guard (testkit/exit-guard.ts) on a real AVA run: a file that leaks a
// child process and a server fails within the grace, names both, and its child is killed.
import test from 'ava';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const AVA = join(ROOT, 'node_modules', 'ava', 'entrypoints', 'cli.js');

test('a file whose worker outlives its tests fails, naming the leaked child and server, and the child is killed', async (t) => {
  const started = Date.now();
  const child = spawn(process.execPath, [AVA, '--config', 'testkit/exit-guard-check/ava.config.mjs'], {
    cwd: ROOT,
    env: { ...process.env, CAUSEWAY_TEST_EXIT_GRACE_MS: '1500' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  t.log(`ava exited ${code} after ${Date.now() - started} ms`);
  t.not(code, 0, output);
  t.regex(output, /✔ .*passes, and leaks/);
  t.regex(output, /exit guard: .*leaks-a-child-and-a-server\.ts finished its tests 1500 ms ago, but its worker is still running/);
  t.regex(output, /handle: Server listening \{"address":"127\.0\.0\.1"/);
  const pid = Number(/leaked child pid (\d+)/.exec(output)?.[1]);
  t.regex(output, new RegExp(`child process ${pid}: sleep 600`));
  t.regex(output, /leaks-a-child-and-a-server\.ts exited with a non-zero exit code: 1/);
  let alive = true;
  try {
    process.kill(pid, 0);
  } catch {
    alive = false;
  }
  // A zombie still answers kill(pid, 0); its state in /proc says it is gone.
  if (alive) {
    const { readFileSync } = await import('node:fs');
    alive = !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  }
  t.false(alive, `leaked child ${pid} still running`);
});
