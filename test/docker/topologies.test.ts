// The Docker tier: the documented Docker path, end to end, with a real engine. A private
// dockerd (testkit/docker-engine.ts), the base images (scripts/offline-base-images.sh:
// pulled, or local stand-ins where no registry answers, as on our machines), the image
// from the Dockerfile, then the topologies' scenarios through `causeway topology test
// --engine docker`. Never skipped: without root or without a daemon that starts, the
// tests fail and say why. The engine is stopped and its folder removed at the end, also
// after a failure.
import test, { type ExecutionContext } from 'ava';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHECKOUT_ROOT, loadComposeFile, TOPOLOGIES_DIR } from '../../topologies/index.js';
import { DOCKER_CLIENT, removeStaleEngines, startDockerEngine, type DockerEngine } from '../../testkit/docker-engine.js';
import { FAULT_STEPS_REPORT, FAULT_STEPS_SCENARIO } from '../../testkit/fault-steps-scenario.js';
import { assertRoot } from '../../testkit/root.js';

const CLI = join(CHECKOUT_ROOT, 'bin', 'causeway.js');

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a program against the engine, never longer than `timeoutMs` (SIGINT, then SIGKILL a minute later). */
function run(argv: readonly string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<RunResult> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { cwd: CHECKOUT_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    let killer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      child.kill('SIGINT');
      killer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    }, timeoutMs);
    child.on('error', (error) => (stderr += error.message));
    child.on('close', (code) => {
      clearTimeout(timer);
      clearTimeout(killer);
      resolve({ code, stdout, stderr, ms: Date.now() - t0 });
    });
  });
}

const tail = (text: string, lines = 40) => text.trimEnd().split('\n').slice(-lines).join('\n');

/**
 * A 10.x /16 for a topology's networks that nothing on this host routes or holds: Docker's
 * bridges live in the host's routing table, unlike the netns runner's (whose 10.77.x.y
 * exist only inside its namespaces), so each run gets a block of its own.
 */
function freeAddressBlock(taken: Set<string>): string {
  const used = spawnSync('ip', ['-4', '-o', 'route', 'show', 'table', 'all'], { encoding: 'utf8' }).stdout + spawnSync('ip', ['-4', '-o', 'addr'], { encoding: 'utf8' }).stdout;
  for (let i = 0; i < 200; i++) {
    const block = `10.${150 + Math.floor(Math.random() * 100)}`;
    if (!taken.has(block) && !used.includes(`${block}.`)) {
      taken.add(block);
      return block;
    }
  }
  throw new Error('no free 10.x.0.0/16 block on this host for the Docker networks');
}

// Each step needs the one before it; a failed step makes the later ones fail with its reason.
let engine: DockerEngine | undefined;
let ready: Promise<DockerEngine> | undefined;
let imagesBuilt: Promise<void> | undefined;
const blocks = new Set<string>();
const timings: string[] = [];

test.after.always('stop the private dockerd and remove its folder', async (t) => {
  if (!engine) return;
  const problems = await engine.stop();
  if (problems.length > 0) t.log(`docker engine teardown: ${problems.join('; ')}`);
  if (timings.length > 0) t.log(`Docker tier: ${timings.join(', ')}`);
});

async function engineOrFail(t: ExecutionContext): Promise<DockerEngine | undefined> {
  if (!assertRoot(t)) return undefined;
  try {
    return await ready!;
  } catch (error) {
    t.fail(`the private Docker engine did not start: ${(error as Error).message}`);
    return undefined;
  }
}

test.serial('a private dockerd starts (own data root, socket and pidfile)', async (t) => {
  if (!assertRoot(t)) return;
  ready = (async () => {
    await removeStaleEngines();
    const t0 = Date.now();
    engine = await startDockerEngine({ timeoutMs: 90_000, addressPool: `${freeAddressBlock(blocks)}.0.0/16` });
    timings.push(`dockerd up in ${Date.now() - t0} ms`);
    return engine;
  })();
  const docker = await engineOrFail(t);
  if (!docker) return;
  const info = docker.docker(['info', '--format', '{{.ServerVersion}} {{.DockerRootDir}}']);
  t.is(info.code, 0, info.stderr);
  t.true(info.stdout.includes(docker.dir), `the engine keeps its data under ${docker.dir}: ${info.stdout}`);
});

test.serial('base images (pulled or stand-ins) and causeway:dev build; the image runs --help as a non-root user', async (t) => {
  const docker = await engineOrFail(t);
  if (!docker) return;
  imagesBuilt = (async () => {
    const base = await run(['bash', join(CHECKOUT_ROOT, 'scripts', 'offline-base-images.sh')], docker.env, 15 * 60_000);
    timings.push(`base images in ${base.ms} ms`);
    if (base.code !== 0) throw new Error(`scripts/offline-base-images.sh exited ${base.code}:\n${tail(base.stderr + base.stdout)}`);
    // Builds use the host's network: this engine has no default bridge, and npm ci needs the registry.
    const build = await run([DOCKER_CLIENT, 'build', '--network', 'host', '-t', 'causeway:dev', '.'], docker.env, 20 * 60_000);
    timings.push(`docker build in ${build.ms} ms`);
    if (build.code !== 0) throw new Error(`docker build exited ${build.code}:\n${tail(build.stdout + build.stderr)}`);
  })();
  try {
    await imagesBuilt;
  } catch (error) {
    t.fail((error as Error).message);
    return;
  }
  const size = docker.docker(['image', 'inspect', '--format', '{{.Size}}', 'causeway:dev']);
  const baseSize = docker.docker(['image', 'inspect', '--format', '{{.Size}}', 'node:24-slim']);
  t.log(`causeway:dev ${Math.round(Number(size.stdout) / 1e6)} MB on node:24-slim ${Math.round(Number(baseSize.stdout) / 1e6)} MB`);
  const help = docker.docker(['run', '--rm', '--network', 'none', 'causeway:dev', '--help']);
  t.is(help.code, 0, help.stderr);
  t.regex(help.stdout, /Usage: causeway/);
  const user = docker.docker(['run', '--rm', '--network', 'none', '--entrypoint', 'id', 'causeway:dev', '-u']);
  t.is(user.code, 0, user.stderr);
  t.not(user.stdout.trim(), '0', 'the image runs as a non-root user');
});

async function imagesOrFail(t: ExecutionContext): Promise<DockerEngine | undefined> {
  const docker = await engineOrFail(t);
  if (!docker) return undefined;
  try {
    if (!imagesBuilt) throw new Error('the build test did not run');
    await imagesBuilt;
    return docker;
  } catch (error) {
    t.fail(`the images were not built: ${(error as Error).message.split('\n')[0]}`);
    return undefined;
  }
}

test.serial("the image's user can write every named volume that a topology mounts writable", async (t) => {
  const docker = await imagesOrFail(t);
  if (!docker) return;
  // Every (image, target) of a writable named volume, from every topology's compose file.
  const targets = new Map<string, string[]>();
  for (const name of readdirSync(TOPOLOGIES_DIR)) {
    let project;
    try {
      project = loadComposeFile(join(TOPOLOGIES_DIR, name, 'compose.yaml'));
    } catch {
      continue; // not a topology folder (runner, demo-app)
    }
    for (const service of project.services.values()) {
      if (!service.image.startsWith('causeway')) continue;
      for (const volume of service.volumes) {
        if (volume.kind !== 'volume' || volume.readOnly) continue;
        targets.set(volume.target, [...(targets.get(volume.target) ?? []), `${name}/${service.name}`]);
      }
    }
  }
  t.true(targets.size >= 4, `found the topologies' volume targets: ${[...targets.keys()].join(', ')}`);
  for (const [target, users] of targets) {
    // A fresh named volume, as compose gives each run: Docker fills it from the image's folder.
    const volume = `cw-volume-check-${randomBytes(4).toString('hex')}`;
    const result = docker.docker(['run', '--rm', '--network', 'none', '-v', `${volume}:${target}`, '--entrypoint', 'sh', 'causeway:dev', '-c', `touch ${target}/.written && mkdir ${target}/sub && id -un`]);
    docker.docker(['volume', 'rm', '-f', volume]);
    t.is(result.code, 0, `${target} (mounted by ${users.join(', ')}) is not writable by the image's user: ${result.stderr.trim()}`);
  }
});

/** Runs `causeway topology test <name> --engine docker` in an address block of its own; checks the report. */
async function scenarioPassesUnderDocker(t: ExecutionContext, topology: string, options: { minutes: number; steps: number; lines?: RegExp[] }): Promise<void> {
  const docker = await imagesOrFail(t);
  if (!docker) return;
  const project = `${topology.replace(/-/g, '').slice(0, 12)}${randomBytes(2).toString('hex')}`;
  const block = freeAddressBlock(blocks);
  const result = await run(
    [process.execPath, CLI, 'topology', 'test', topology, '--engine', 'docker', '--subnet-base', block, '-p', project, '--timeout', `${options.minutes}m`],
    docker.env,
    options.minutes * 2 * 60_000,
  );
  timings.push(`${topology} in ${result.ms} ms`);
  const report = result.stdout.slice(result.stdout.indexOf('scenario:'));
  t.log(`${topology} under Docker (networks in ${block}.0.0/16):\n${report.trimEnd()}`);
  t.is(result.code, 0, `${tail(result.stdout, 80)}\n${tail(result.stderr)}`);
  t.regex(result.stdout, new RegExp(`^${options.steps} passed, 0 failed, 0 skipped$`, 'm'));
  for (const line of options.lines ?? []) t.regex(result.stdout, line);
  // down -v took everything of the project with it.
  assertProjectRemoved(t, docker, project);
}

/** The two-service topology of the netns tier's tiny tests, with a named volume; its default network takes a subnet from the engine's own pool (a free 10.x block). */
function tinyTopology(t: ExecutionContext, scenario: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'cw-docker-tiny-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(
    join(dir, 'compose.yaml'),
    `services:
  web:
    image: causeway:dev
    command: app echo --port 8080 --name web --cluster tiny --version v3
    volumes: ["scratch:/state"]
    healthcheck: { test: [CMD, causeway, app, probe, --url, "http://127.0.0.1:8080/healthz"], interval: 1s, timeout: 10s, retries: 30 }
  client:
    image: causeway:dev
    entrypoint: [sleep, infinity]
    init: true
    depends_on: { web: { condition: service_healthy } }
volumes:
  scratch: {}
`,
  );
  writeFileSync(join(dir, 'scenario.yaml'), scenario);
  return dir;
}

function assertProjectRemoved(t: ExecutionContext, docker: DockerEngine, project: string): void {
  for (const what of [['ps', '-aq'], ['network', 'ls', '-q'], ['volume', 'ls', '-q']]) {
    const left = docker.docker([...what, '--filter', `label=com.docker.compose.project=${project}`]);
    t.is(left.stdout.trim(), '', `${what.join(' ')} after the run`);
  }
}

test.serial('a failed step under Docker: the same report (FAIL, then skip), exit 1, and down -v still removes everything', async (t) => {
  const docker = await imagesOrFail(t);
  if (!docker) return;
  const dir = tinyTopology(
    t,
    `steps:
  - call: { from: client, url: "http://web:8080/", requests: 3, minSuccesses: 3, expect: { version: v3 } }
  - name: wrong cluster on purpose
    call: { from: client, url: "http://web:8080/", requests: 2, minSuccesses: 2, expect: { cluster: elsewhere } }
  - sleep: 1s
`,
  );
  const project = `tiny${randomBytes(3).toString('hex')}`;
  const result = await run([process.execPath, CLI, 'topology', 'test', dir, '--engine', 'docker', '-p', project], docker.env, 5 * 60_000);
  timings.push(`failing scenario in ${result.ms} ms`);
  t.is(result.code, 1, `${result.stdout}\n${result.stderr}`);
  t.regex(result.stdout, /FAIL\s+2\. wrong cluster on purpose .*0 successes < required 2/);
  t.regex(result.stdout, /skip\s+3\./);
  t.regex(result.stdout, /^1 passed, 1 failed, 1 skipped$/m);
  t.regex(result.stderr, /CW_TOPOLOGY_SCENARIO_FAILED/);
  assertProjectRemoved(t, docker, project);
});

// The netns tier's fault steps, unchanged: the runner (root) enters each container's
// network namespace from the host with nsenter and loads the rules with the host's nft.
test.serial("fault steps under Docker: partition and loss drop packets silently inside the containers' namespaces, heal removes exactly them", async (t) => {
  const docker = await imagesOrFail(t);
  if (!docker) return;
  const dir = tinyTopology(t, FAULT_STEPS_SCENARIO);
  const project = `faults${randomBytes(3).toString('hex')}`;
  const result = await run([process.execPath, CLI, 'topology', 'test', dir, '--engine', 'docker', '-p', project], docker.env, 5 * 60_000);
  timings.push(`fault steps in ${result.ms} ms`);
  t.log(result.stdout.slice(result.stdout.indexOf('scenario:')).trimEnd());
  t.is(result.code, 0, `${tail(result.stdout, 80)}\n${tail(result.stderr)}`);
  for (const line of FAULT_STEPS_REPORT) t.regex(result.stdout, line);
  // Nothing of the faults is left in the host's own ruleset.
  const hostTables = spawnSync('/usr/sbin/nft', ['list', 'tables'], { encoding: 'utf8' }).stdout;
  t.notRegex(hostTables, /causeway_(partition|loss)/);
  assertProjectRemoved(t, docker, project);
});

test.serial("two-clusters under Docker: east calls a service only in west through west's gateway, with its SPIFFE ID", (t) =>
  scenarioPassesUnderDocker(t, 'two-clusters', { minutes: 5, steps: 11, lines: [/every answer comes from west .* 20\/20 ok/] }));

test.serial('three-regions-failover under Docker: killing local instances, then a region, moves traffic with zero failed requests', (t) =>
  scenarioPassesUnderDocker(t, 'three-regions-failover', { minutes: 8, steps: 20, lines: [/zero failed requests while region west went away .* 0 failed/, /traffic comes back to west within 5 s of its gateway serving/] }));
