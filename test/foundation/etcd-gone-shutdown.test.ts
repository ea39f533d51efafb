import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test, { type ExecutionContext } from 'ava';
import { exitWithin, freePorts, startEtcd, startProcess } from '../../testkit/index.js';

/**
 * The controller's case ("still running 18 s after SIGTERM when its etcd had died") is in
 * test/controller/shutdown.test.ts; the gateway and the federation talk to etcd too, and
 * get the same check: etcd SIGKILLed under them, then SIGTERM → out within the drain timeout.
 */

const bin = fileURLToPath(new URL('../../bin/causeway.js', import.meta.url));

async function clusterConfig(t: ExecutionContext, lines: string[]): Promise<{ file: string; kill: () => Promise<void> }> {
  const etcd = await startEtcd({ name: 'east' });
  t.teardown(() => etcd.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'cw-etcd-gone-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [readyPort, metricsPort] = (await freePorts(2)) as [number, number];
  const file = join(dir, 'cluster.yaml');
  writeFileSync(
    file,
    [
      'cluster: { name: east, locality: { region: eu, zone: eu-1 } }',
      `etcd: { endpoints: [${etcd.clientUrl}], dialTimeoutMs: 2000 }`,
      `observability: { host: 127.0.0.1, readyPort: ${readyPort}, metricsPort: ${metricsPort} }`,
      ...lines,
    ].join('\n'),
  );
  return { file, kill: () => etcd.kill() };
}

async function sigtermWithEtcdGone(t: ExecutionContext, args: string[], ready: RegExp, kill: () => Promise<void>, drainTimeoutMs: number): Promise<void> {
  const proc = startProcess(process.execPath, [bin, ...args], { name: `causeway ${args[0]}`, env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' } });
  t.teardown(() => proc.kill());
  await proc.waitForOutput(ready, 90_000);
  await kill();
  await new Promise((resolve) => setTimeout(resolve, 1500));
  const asked = Date.now();
  proc.child.kill('SIGTERM');
  const { code, timedOut } = await exitWithin(proc, drainTimeoutMs + 3000, 1000);
  const tookMs = Date.now() - asked;
  t.false(timedOut, `still running ${tookMs} ms after SIGTERM; output:\n${proc.output().slice(-3000)}`);
  t.true(code === 0 || code === 1, `exit code ${String(code)}: 0 (stopped) or 1 (forced out at the drain deadline)`);
  t.true(tookMs <= drainTimeoutMs + 1500, `took ${tookMs} ms (drain timeout ${drainTimeoutMs} ms)`);
  t.log(`exited ${String(code)} after ${tookMs} ms`);
}

test('SIGTERM to a gateway whose etcd died: it exits within its drain timeout (gateway.drainTimeoutMs + 5 s)', async (t) => {
  const { file, kill } = await clusterConfig(t, ['gateway: { host: 127.0.0.1, port: 0, drainTimeoutMs: 2000 }']);
  await sigtermWithEtcdGone(t, ['gateway', '--config', file, '--workers', '1'], /gateway listening on port \d+/, kill, 7000);
});

test('SIGTERM to a federation whose etcd died: it exits within its drain timeout', async (t) => {
  const { file, kill } = await clusterConfig(t, ['federation: { heartbeatIntervalMs: 500 }']);
  await sigtermWithEtcdGone(t, ['federation', '--config', file, '--heartbeat', '--drain-timeout', '5000'], /"msg":"federation running"/, kill, 5000);
});
