// End to end (root only; CI is root): topologies/vm-onboarding in network namespaces with
// the topology runner — a host on a network it shares only with the gateway, onboarded from
// a bundle, calls into the cluster and is called from it; lease expiry; restart without token.
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readRunState } from '../../topologies/index.js';
import { CAUSEWAY } from './helpers.js';
import { exitWithin, startProcess } from '../../testkit/processes.js';
import { assertRoot } from '../../testkit/root.js';

test('vm-onboarding: onboarding from the bundle, calls both ways through the gateway, lease expiry, restart without a token; nothing remains', async (t) => {
  if (!assertRoot(t)) return;
  const project = `vmonboard${randomBytes(3).toString('hex')}`;
  const run = startProcess(process.execPath, [CAUSEWAY, 'topology', 'test', 'vm-onboarding', '-p', project, '--timeout', '8m'], { name: 'topology test vm-onboarding' });
  // The runner's own --timeout is 8 min; past 10 the test stops it rather than wait on.
  const { code, timedOut } = await exitWithin(run, 10 * 60_000);
  const output = run.output();
  t.false(timedOut, `topology test still running after 10 min; stopped it. Output:\n${output.slice(-4000)}`);
  t.is(code, 0, output);
  t.regex(output, /^14 passed, 0 failed, 0 skipped$/m);
  t.regex(output, /the host's app calls reviews by mesh name .* 20\/20 ok/);
  t.regex(output, /frontend in east calls the host's service by mesh name.* 20\/20 ok/);
  const runId = /is up \(run ([a-z0-9]+)/.exec(output)?.[1];
  t.truthy(runId);
  const prefix = `cw-${runId}`;
  const namespaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith(prefix));
  t.deepEqual(namespaces, [], 'no namespace of the run remains');
  t.deepEqual(existsSync('/etc/netns') ? readdirSync('/etc/netns').filter((n) => n.startsWith(prefix)) : [], []);
  t.false(existsSync(join(tmpdir(), `causeway-topology-${project}-${runId}`)), 'the run folder is gone');
  t.is(readRunState(project), undefined, 'no state file');
});
