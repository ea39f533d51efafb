// End to end: the runner brings real topologies up in network namespaces (root only; CI
// is root), runs scenarios through the real CLI, and leaves nothing behind.
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKOUT_ROOT, listNamespaces, readRunState, type RunState } from '../../topologies/index.js';

import { FAULT_STEPS_REPORT, FAULT_STEPS_SCENARIO } from '../../testkit/fault-steps-scenario.js';
import { assertRoot, isRoot } from '../../testkit/root.js';

const CLI = join(CHECKOUT_ROOT, 'bin', 'causeway.js');

/** Serial (the runs share /etc/netns and the run-state folder), and failing loudly without root. */
function rootTest(title: string, fn: (t: ExecutionContext) => unknown): void {
  test.serial(title, (t) => (assertRoot(t) ? fn(t) : undefined));
}

interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function cli(args: readonly string[], options: { timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: options.cwd ?? CHECKOUT_ROOT });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    // Past the deadline the runner is interrupted (it tears down); if it has not gone a
    // minute later, killed — the test never waits on it without end.
    let killer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      child.kill('SIGINT');
      killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    }, options.timeoutMs ?? 150_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

const projectName = (base: string) => `${base}${randomBytes(3).toString('hex')}`;
const runIdOf = (output: string) => /is up \(run ([a-z0-9]+)/.exec(output)?.[1];

/** Everything a run could leave behind: namespaces, /etc/netns folders, links, processes, files. */
async function leftovers(project: string, runId: string): Promise<string[]> {
  const problems: string[] = [];
  const prefix = `cw-${runId}`;
  const namespaces = (await listNamespaces()).filter((n) => n === prefix || n.startsWith(`${prefix}-`));
  if (namespaces.length > 0) problems.push(`namespaces: ${namespaces.join(', ')}`);
  const etc = existsSync('/etc/netns') ? readdirSync('/etc/netns').filter((n) => n.startsWith(prefix)) : [];
  if (etc.length > 0) problems.push(`/etc/netns: ${etc.join(', ')}`);
  // The runner never creates links in the host's namespace; any of its names there is a leak.
  const links = spawnSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '');
  const ours = links.filter((l) => /^v\d+n\d+$/.test(l) || /^br\d+$/.test(l));
  if (ours.length > 0) problems.push(`links: ${ours.join(', ')}`);
  const runDir = join(tmpdir(), `causeway-topology-${project}-${runId}`);
  if (existsSync(runDir)) problems.push(`run folder ${runDir}`);
  if (readRunState(project)) problems.push('state file');
  // Every process of the run carries the run folder in its environment (HOME, PATH).
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
      if (environ.includes(runDir)) problems.push(`process ${pid}: ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')}`);
    } catch {
      // exited meanwhile
    }
  }
  return problems;
}

async function assertClean(t: ExecutionContext, project: string, runId: string | undefined): Promise<void> {
  t.truthy(runId, 'the run printed its id');
  if (!runId) return;
  t.deepEqual(await leftovers(project, runId), [], 'nothing of the run remains');
}

/** A two-service topology in a temp folder: an echo app with a healthcheck, and a client. */
function tinyTopology(t: ExecutionContext, extra = '', scenario?: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cw-tiny-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(
    join(dir, 'compose.yaml'),
    `services:
  web:
    image: causeway:dev
    command: app echo --port 8080 --name web --cluster tiny --version v3
    healthcheck: { test: [CMD, causeway, app, probe, --url, "http://127.0.0.1:8080/healthz"], interval: 1s, timeout: 10s, retries: 30 }
  client:
    image: causeway:dev
    entrypoint: [sleep, infinity]
    depends_on: { web: { condition: service_healthy } }
${extra}`,
  );
  if (scenario) writeFileSync(join(dir, 'scenario.yaml'), scenario);
  return dir;
}

/** Runs `causeway topology test <topology>` and checks its report and that nothing of the run remains. */
async function scenarioPasses(t: ExecutionContext, topology: string, options: { minutes: number; steps: number; lines?: RegExp[]; scenario?: string }): Promise<void> {
  const project = projectName(topology.replace(/-/g, '').slice(0, 16));
  const scenario = options.scenario ? ['--scenario', join(CHECKOUT_ROOT, 'topologies', topology, options.scenario)] : [];
  const result = await cli(['topology', 'test', topology, '-p', project, '--timeout', `${options.minutes}m`, ...scenario], { timeoutMs: options.minutes * 115_000 });
  t.is(result.code, 0, `${result.stdout}\n${result.stderr}`);
  t.regex(result.stdout, new RegExp(`^${options.steps} passed, 0 failed, 0 skipped$`, 'm'));
  for (const line of options.lines ?? []) t.regex(result.stdout, line);
  await assertClean(t, project, runIdOf(result.stdout));
}

rootTest('smoke: names resolve, networks are isolated, pods share loopback, volumes mount; nothing remains', (t) =>
  scenarioPasses(t, 'smoke', { minutes: 2, steps: 15, lines: [/echo-b cannot reach echo-a's address.*ENETUNREACH/] }));

// The whole mesh in network namespaces: CA one-shot, etcds, controllers with federation
// links, gateways and sidecars, as topologies/*/compose.yaml describe them.
rootTest("two-clusters: east calls a service only in west through west's gateway, with its SPIFFE ID; nothing remains", (t) =>
  scenarioPasses(t, 'two-clusters', { minutes: 5, steps: 11, lines: [/every answer comes from west .* 20\/20 ok/] }));

rootTest('chained-gateways: workloads that reach only their own gateway call west through gateway-to-gateway passthrough', (t) =>
  scenarioPasses(t, 'chained-gateways', { minutes: 5, steps: 9 }));

// A real Prometheus (Debian's, as the prom/prometheus image) in east's networks, with
// deploy/prometheus/causeway-rules.yaml unchanged: stopping west's controller stops west's
// heartbeats, and CausewayLinkStale goes from inactive to pending to firing, then resolves.
rootTest("chained-gateways with Prometheus: recording rules see the live components; CausewayLinkStale fires when west's heartbeats stop", (t) =>
  scenarioPasses(t, 'chained-gateways', {
    minutes: 5,
    steps: 17,
    scenario: 'prometheus.scenario.yaml',
    lines: [
      /ok +\d+\. recording rule causeway:federation_heartbeat_age_seconds:max has the link to west/,
      /ok +\d+\. recording rule causeway:sidecar_http_requests:rate5m has productpage's calls/,
      /ok +\d+\. while west is healthy, CausewayLinkStale is evaluated and inactive/,
      /ok +\d+\. CausewayLinkStale goes pending for west/,
      /ok +\d+\. a minute later \(for 1m\) it fires/,
      /ok +\d+\. the link is synced again and CausewayLinkStale resolves/,
    ],
  }));

rootTest('three-regions-failover: killing local instances, then a region, moves traffic with zero failed requests, and it comes back', (t) =>
  scenarioPasses(t, 'three-regions-failover', { minutes: 8, steps: 20, lines: [/zero failed requests while region west went away .* 0 failed/, /traffic comes back to west within 5 s of its gateway serving/] }));

rootTest("ha-etcd: each cluster's etcd loses a follower, then its leader, under load: zero failed requests, nothing lost, everything reconnects", (t) =>
  scenarioPasses(t, 'ha-etcd', {
    minutes: 8,
    steps: 32,
    lines: [
      /zero failed requests through both kills, every answer from west .* 0 failed/,
      /after: west's endpoints are the ones before .* the same \d+ lines as "west-endpoints"/,
      /after: west's exports are the ones before .* the same \d+ lines as "west-exports"/,
      /after: east's imports are the ones before .* the same \d+ lines as "east-imports"/,
      /east imports it/,
    ],
  }));

rootTest('three-regions-failover, silent partition: west\'s gateway cut off the WAN by dropped packets under load — zero failed requests, south alone serves within 2 s; healed, west serves again', (t) =>
  scenarioPasses(t, 'three-regions-failover', {
    minutes: 8,
    steps: 15,
    scenario: 'partition.scenario.yaml',
    lines: [/zero failed requests while west's gateway was cut off .* 0 failed/, /2 s into the partition, only south serves .* 20\/20 ok/, /traffic comes back to west/],
  }));

rootTest('two-clusters, root rotation: under load east→west and inside west, a new root replaces the old one without a restart — zero failed requests, only the new root served and trusted', (t) =>
  scenarioPasses(t, 'two-clusters', {
    minutes: 8,
    steps: 33,
    scenario: 'root-rotation.scenario.yaml',
    lines: [
      /zero failed cross-cluster requests through the rotation, every answer from west .* 0 failed/,
      /zero failed in-cluster requests through the rotation .* 0 failed/,
      /reviews refuses a handshake with an old-root certificate .* exit 1/,
      /productpage's certificate does not chain to the old root .* exit 1/,
    ],
  }));

// The fault steps on a two-service topology (the same steps as the Docker tier's): a
// partition and 100 % loss make the other side silent, heal brings it back, and nothing remains.
rootTest('fault steps: partition and loss drop packets silently, heal removes exactly them', async (t) => {
  const dir = tinyTopology(t, '', FAULT_STEPS_SCENARIO);
  const project = projectName('faults');
  const result = await cli(['topology', 'test', dir, '-p', project]);
  t.is(result.code, 0, `${result.stdout}\n${result.stderr}`);
  for (const line of FAULT_STEPS_REPORT) t.regex(result.stdout, line);
  await assertClean(t, project, runIdOf(result.stdout));
});

rootTest('a failed step fails `topology test` with a report, skips the rest, and still tears down', async (t) => {
  const scenario = `steps:
  - call: { from: client, url: "http://web:8080/", requests: 3, minSuccesses: 3, expect: { version: v3 } }
  - name: wrong cluster on purpose
    call: { from: client, url: "http://web:8080/", requests: 2, minSuccesses: 2, expect: { cluster: elsewhere } }
  - sleep: 1s
`;
  const dir = tinyTopology(t, '', scenario);
  const project = projectName('tiny');
  const result = await cli(['topology', 'test', dir, '-p', project]);
  t.is(result.code, 1, `${result.stdout}\n${result.stderr}`);
  t.regex(result.stdout, /FAIL\s+2\. wrong cluster on purpose .*0 successes < required 2/);
  t.regex(result.stdout, /skip\s+3\./);
  t.regex(result.stdout, /^1 passed, 1 failed, 1 skipped$/m);
  t.regex(result.stderr, /CW_TOPOLOGY_SCENARIO_FAILED/);
  await assertClean(t, project, runIdOf(result.stdout));
});

/** Starts a foreground `up` and resolves once it printed its run id (the topology is up). */
async function foregroundUp(t: ExecutionContext, dir: string, project: string) {
  const child = spawn(process.execPath, [CLI, 'topology', 'up', dir, '-p', project], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.teardown(() => child.kill('SIGKILL'));
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  const deadline = Date.now() + 90_000;
  while (!runIdOf(output) && Date.now() < deadline && child.exitCode === null) await new Promise((r) => setTimeout(r, 100));
  const runId = runIdOf(output);
  t.truthy(runId, output);
  t.true((await listNamespaces()).includes(`cw-${runId}-web`));
  return { child, exited, runId, output: () => output };
}

rootTest('SIGTERM to a foreground `up` removes every namespace and process', async (t) => {
  const dir = tinyTopology(t);
  const project = projectName('tiny');
  const { child, exited, runId, output } = await foregroundUp(t, dir, project);
  const state = readRunState(project) as RunState;
  const pids = Object.values(state.services).map((s) => s.pid).filter((p): p is number => p !== undefined);
  t.is(pids.length, 2);
  child.kill('SIGTERM');
  t.is(await exited, 143, output());
  for (const pid of pids) t.throws(() => process.kill(pid, 0), undefined, `pid ${pid} still alive`);
  await assertClean(t, project, runId);
});

rootTest('after the runner is SIGKILLed, `down` still removes everything it made', async (t) => {
  const dir = tinyTopology(t);
  const project = projectName('tiny');
  const { child, exited, runId } = await foregroundUp(t, dir, project);
  child.kill('SIGKILL');
  await exited;
  t.true((await listNamespaces()).includes(`cw-${runId}-web`), 'a killed runner cannot clean up by itself');
  const down = await cli(['topology', 'down', dir, '-p', project]);
  t.is(down.code, 0, down.stderr);
  await assertClean(t, project, runId);
});

rootTest('up --detach, then exec, ps, logs and down from other processes', async (t) => {
  const dir = tinyTopology(t);
  const project = projectName('tiny');
  const up = await cli(['topology', 'up', dir, '-p', project, '--detach']);
  t.is(up.code, 0, `${up.stdout}\n${up.stderr}`);
  const runId = runIdOf(up.stdout);
  try {
    const exec = await cli(['topology', 'exec', dir, 'client', '-p', project, '--', 'cat', '/etc/hosts']);
    t.is(exec.code, 0, exec.stderr);
    t.regex(exec.stdout, /\tweb$/m);
    const ps = await cli(['topology', 'ps', dir, '-p', project]);
    t.regex(ps.stdout, /web\s+running/);
    const logs = await cli(['topology', 'logs', dir, 'web', '-p', project]);
    t.regex(logs.stdout, /web\s+\| echo web \(cluster tiny, version v3\) listening on 0\.0\.0\.0:8080/);
  } finally {
    const down = await cli(['topology', 'down', dir, '-p', project]);
    t.is(down.code, 0, down.stderr);
  }
  await assertClean(t, project, runId);
  const again = await cli(['topology', 'down', dir, '-p', project]);
  t.regex(again.stdout, /not up; nothing to do/);
});

rootTest('a Prometheus service (prom/prometheus) runs the local prometheus; `up` prints how to reach it, and its data goes with the run', async (t) => {
  const dir = tinyTopology(
    t,
    `  prom:
    image: prom/prometheus:v2.42.0
    command: [--config.file=/config/prometheus.yaml, --storage.tsdb.path=/prometheus, --web.listen-address=0.0.0.0:9191]
    volumes: [".:/config:ro", "prom-data:/prometheus"]
    healthcheck: { test: [CMD, promtool, query, instant, "http://127.0.0.1:9191", "vector(1)"], interval: 1s, timeout: 5s, retries: 30 }
volumes:
  prom-data: {}
`,
  );
  writeFileSync(join(dir, 'prometheus.yaml'), 'global: { scrape_interval: 1s }\nscrape_configs:\n  - job_name: self\n    static_configs: [{ targets: ["127.0.0.1:9191"] }]\n');
  const project = projectName('tinyprom');
  const up = await cli(['topology', 'up', dir, '-p', project, '--detach']);
  t.is(up.code, 0, `${up.stdout}\n${up.stderr}`);
  const runId = runIdOf(up.stdout);
  try {
    t.regex(up.stdout, /^prom: Prometheus at http:\/\/10\.77\.\d+\.\d+:9191\/ inside the run's networks; from this host:$/m);
    const printed = new RegExp(`^  causeway topology exec ${dir.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} -p ${project} prom -- promtool query instant http://127\\.0\\.0\\.1:9191 'ALERTS'$`, 'm');
    t.regex(up.stdout, printed);
    // The printed command, asking for Prometheus's own scrape of itself.
    let answer = '';
    for (let attempt = 0; attempt < 60 && !/=> 1 @/.test(answer); attempt++) {
      answer = (await cli(['topology', 'exec', dir, 'prom', '-p', project, '--', 'promtool', 'query', 'instant', 'http://127.0.0.1:9191', 'up{job="self"}'])).stdout;
      if (!/=> 1 @/.test(answer)) await new Promise((r) => setTimeout(r, 1000));
    }
    t.regex(answer, /up\{instance="127\.0\.0\.1:9191", job="self"\} => 1 @/);
  } finally {
    const down = await cli(['topology', 'down', dir, '-p', project]);
    t.is(down.code, 0, down.stderr);
  }
  await assertClean(t, project, runId);
});

rootTest('an unhealthy service fails `up` with its log, and nothing remains', async (t) => {
  const dir = tinyTopology(t, `  sick:
    image: causeway:dev
    entrypoint: [sh, -c, "echo about to be sick; exec sleep infinity"]
    healthcheck: { test: [CMD-SHELL, "exit 1"], interval: 200ms, retries: 2 }
`);
  const project = projectName('tiny');
  const result = await cli(['topology', 'up', dir, '-p', project, '--detach']);
  t.is(result.code, 1, result.stdout);
  t.regex(result.stderr, /service "sick" is unhealthy .*about to be sick.*CW_TOPOLOGY_SERVICE_FAILED/s);
  const dirs = readdirSync(tmpdir()).filter((d) => d.startsWith(`causeway-topology-${project}-`));
  t.deepEqual(dirs, []);
  // Its run id was never printed; the service names are unique to this file's serial tests.
  t.deepEqual((await listNamespaces()).filter((n) => n.startsWith('cw-') && n.endsWith('-sick')), []);
  t.is(readRunState(project), undefined);
});

test('without root the runner says so and exits 2', (t) => {
  // As root, drop to nobody with setpriv (util-linux); as anyone else, just run it.
  const argv = [process.execPath, CLI, 'topology', 'up', 'smoke'];
  const [command, ...args] = isRoot ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...argv] : argv;
  const result = spawnSync(command!, args, {
    encoding: 'utf8',
    cwd: '/',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp' },
  });
  t.is(result.status, 2, `${result.error?.message ?? ''} ${result.stderr}`);
  t.regex(result.stderr, /causeway topology up needs root.*CW_TOPOLOGY_NEEDS_ROOT/);
});
