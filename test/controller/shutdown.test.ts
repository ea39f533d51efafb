import test from 'ava';
import { startEtcd } from '../../testkit/etcd.js';
import { exitWithin } from '../../testkit/processes.js';
import { controllerConfig, startController } from './processes.js';

test('regression "controller still running 18 s after SIGTERM when its etcd had died": it exits within its drain timeout', async (t) => {
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const { file } = await controllerConfig(t, etcd);
  const drainTimeoutMs = 6000;
  const proc = startController(t, file, ['--drain-timeout', String(drainTimeoutMs)]);
  await proc.waitForOutput(/serving gRPC on port \d+/, 60_000);

  await etcd.kill();
  // Let the etcd client notice: its channels are broken and retrying, as in the report.
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const asked = Date.now();
  proc.child.kill('SIGTERM');
  const { code, timedOut } = await exitWithin(proc, drainTimeoutMs + 3000, 1000);
  const tookMs = Date.now() - asked;
  t.false(timedOut, `still running ${tookMs} ms after SIGTERM; output:\n${proc.output().slice(-3000)}`);
  t.true(code === 0 || code === 1, `exit code ${String(code)}: 0 (stopped) or 1 (forced out at the drain deadline)`);
  t.true(tookMs <= drainTimeoutMs + 1500, `took ${tookMs} ms (drain timeout ${drainTimeoutMs} ms)`);
  if (code === 1) t.regex(proc.output(), /did not stop within 6000 ms; exiting with .+ still open/);
  t.log(`exited ${String(code)} after ${tookMs} ms`);
});
