import type { Command } from 'commander';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CausewayError, UsageError } from '../../mesh/index.js';
import {
  DockerComposeRun,
  TOPOLOGY_ADDRESS_BLOCK,
  TopologyErrorCodes,
  TopologyRun,
  TopologyRuntimeError,
  cleanUpRunState,
  dockerEngineAvailable,
  execIn,
  formatScenarioReport,
  imageMappingFor,
  isProcessAlive,
  loadComposeFile,
  loadScenarioFile,
  parseAddressBlock,
  parseComposeDurationMs,
  planAddresses,
  projectNameOf,
  readRunState,
  relocateTopology,
  requireRoot,
  resolveTopology,
  runScenario,
  type ComposeProject,
  type RunState,
  type RunningTopology,
  type Scenario,
  type TopologyEngineName,
} from '../../topologies/index.js';

interface ProjectOptions {
  projectName?: string;
}

function load(topology: string, options: ProjectOptions): { project: ComposeProject; scenarioFile?: string | undefined } {
  const { composeFile, scenarioFile } = resolveTopology(topology);
  const project = loadComposeFile(composeFile, options.projectName ? { projectName: options.projectName } : {});
  return { project, scenarioFile };
}

function durationOption(name: string) {
  return (text: string): number => {
    const ms = parseComposeDurationMs(text);
    if (ms === undefined) throw new UsageError(`${name} must be a duration such as 90s or 2m (got "${text}")`);
    return ms;
  };
}

/**
 * Tears the run down on SIGINT, SIGTERM and SIGHUP (exit 130/143/129), also while it is
 * still coming up. Returns a function that removes the handlers.
 */
function tearDownOnSignals(getRun: () => RunningTopology | undefined): () => void {
  const codes: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };
  const handlers = new Map<NodeJS.Signals, () => void>();
  for (const [signal, code] of Object.entries(codes) as [NodeJS.Signals, number][]) {
    const handler = () => {
      process.stderr.write(`causeway topology: ${signal}, tearing down\n`);
      const run = getRun();
      void (run ? run.down() : Promise.resolve([])).finally(() => process.exit(code));
    };
    handlers.set(signal, handler);
    process.on(signal, handler);
  }
  return () => {
    for (const [signal, handler] of handlers) process.off(signal, handler);
  };
}

function printServices(run: TopologyRun): void {
  const rows = run.view().map((s) => `  ${s.name.padEnd(20)} ${s.status.padEnd(8)} ${s.health.padEnd(9)} ${Object.entries(s.addresses).map(([n, a]) => `${n}=${a}`).join(' ') || `(shares ${s.namespace})`}`);
  process.stdout.write(`topology ${run.project.name} is up (run ${run.plan.runId}, logs in ${join(run.runDir, 'logs')})\n${rows.join('\n')}\n`);
}

/**
 * A Prometheus in the topology (image prom/prometheus) answers inside the run's networks
 * only (nothing is published on the host): its URL there, and two ways to ask it from here.
 */
function printPrometheusUrls(run: TopologyRun, topology: string, projectName: string | undefined): void {
  const project = projectName ? ` -p ${projectName}` : '';
  for (const view of run.view()) {
    const spec = run.project.services.get(view.name);
    if (!spec || imageMappingFor(spec.image)?.kind !== 'prometheus') continue;
    const listen = [...(spec.entrypoint ?? []), ...(spec.command ?? [])].find((a) => a.startsWith('--web.listen-address='));
    const port = listen ? listen.slice(listen.lastIndexOf(':') + 1) : '9090';
    const address = Object.values(view.addresses)[0];
    process.stdout.write(
      `${view.name}: Prometheus at http://${address ?? '127.0.0.1'}:${port}/ inside the run's networks; from this host:\n` +
        `  causeway topology exec ${topology}${project} ${view.name} -- promtool query instant http://127.0.0.1:${port} 'ALERTS'\n` +
        `  ip netns exec ${view.namespace} curl -s http://127.0.0.1:${port}/api/v1/alerts\n`,
    );
  }
}

/** Prints new lines of every log file in `dir`, prefixed by service, until stopped. */
function followLogs(dir: string, services: readonly string[] | undefined, fromStart: boolean): () => void {
  const offsets = new Map<string, number>();
  const tick = () => {
    if (!existsSync(dir)) return;
    for (const file of readdirSync(dir).sort()) {
      const service = file.replace(/\.log$/, '');
      if (services && services.length > 0 && !services.includes(service)) continue;
      const path = join(dir, file);
      const size = statSync(path).size;
      const from = offsets.get(file) ?? (fromStart ? 0 : size);
      if (size > from) {
        const text = readFileSync(path).subarray(from, size).toString('utf8');
        const complete = text.lastIndexOf('\n') + 1;
        if (complete > 0) {
          for (const line of text.slice(0, complete).split('\n').slice(0, -1)) process.stdout.write(`${service.padEnd(16)} | ${line}\n`);
          offsets.set(file, from + Buffer.byteLength(text.slice(0, complete)));
        } else offsets.set(file, from);
      } else offsets.set(file, from);
    }
  };
  tick();
  const timer = setInterval(tick, 250);
  return () => {
    tick();
    clearInterval(timer);
  };
}

function requireState(project: ComposeProject): RunState {
  const state = readRunState(project.name);
  if (!state) throw new TopologyRuntimeError(TopologyErrorCodes.notUp, `topology "${project.name}" is not up`);
  return state;
}

export function registerTopologyCommands(program: Command): void {
  const topology = program
    .command('topology')
    .description('run docker-compose topologies without Docker (network namespaces, bridges, local processes; needs root) and their scenarios, there or under Docker (`test --engine docker`)');
  const projectOption = ['-p, --project-name <name>', 'project name (default: the folder name), as docker-compose -p'] as const;

  topology
    .command('up')
    .description('bring a topology up; stays in the foreground showing logs and tears everything down on Ctrl-C, unless --detach')
    .argument('<topology>', 'a name under topologies/, a folder with compose.yaml, or a compose file')
    .option(...projectOption)
    .option('-d, --detach', 'leave it running and exit (stop it with `causeway topology down`)')
    .option('--timeout <d>', 'give up if not up and healthy within this long', durationOption('--timeout'), 120_000)
    .action(async (name: string, options: ProjectOptions & { detach?: boolean; timeout: number }) => {
      const { project } = load(name, options);
      requireRoot('up');
      let run: TopologyRun | undefined;
      const removeHandlers = tearDownOnSignals(() => run);
      run = await TopologyRun.up(project, { timeoutMs: options.timeout, onCreated: (r) => (run = r) });
      printServices(run);
      printPrometheusUrls(run, name, options.projectName);
      if (options.detach) {
        run.detach();
        removeHandlers();
        process.stdout.write(`detached; stop it with: causeway topology down ${name}${options.projectName ? ` -p ${options.projectName}` : ''}\n`);
        process.exit(0);
      }
      followLogs(join(run.runDir, 'logs'), undefined, true);
      // Runs until a signal arrives; the handlers tear down and exit.
      await new Promise<never>(() => {});
    });

  topology
    .command('down')
    .description('stop a topology brought up by `up` (in the foreground elsewhere, detached, or left over after a crash) and remove all it made')
    .argument('<topology>', 'a name under topologies/, a folder with compose.yaml, or a compose file')
    .option(...projectOption)
    .action(async (name: string, options: ProjectOptions) => {
      const { project } = load(name, options);
      requireRoot('down');
      const state = readRunState(project.name);
      if (!state) {
        process.stdout.write(`topology ${project.name} is not up; nothing to do\n`);
        return;
      }
      if (state.ownerPid !== undefined && state.ownerPid !== process.pid && isProcessAlive(state.ownerPid)) {
        // The foreground `up` tears down itself; give it the chance, then clean whatever is left.
        process.kill(state.ownerPid, 'SIGTERM');
        const deadline = Date.now() + 30_000;
        while (isProcessAlive(state.ownerPid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      }
      const problems = await cleanUpRunState(state);
      if (problems.length > 0) throw new TopologyRuntimeError(TopologyErrorCodes.network, `teardown of ${project.name} left: ${problems.join('; ')}`);
      process.stdout.write(`topology ${project.name} is down (run ${state.runId})\n`);
    });

  topology
    .command('logs')
    .description("print the services' logs of a running topology")
    .argument('<topology>', 'a name under topologies/, a folder with compose.yaml, or a compose file')
    .argument('[services...]', 'only these services')
    .option(...projectOption)
    .option('-f, --follow', 'keep printing new lines')
    .action(async (name: string, services: string[], options: ProjectOptions & { follow?: boolean }) => {
      const { project } = load(name, options);
      const state = requireState(project);
      const stop = followLogs(join(state.runDir, 'logs'), services, true);
      if (!options.follow) {
        stop();
        return;
      }
      await new Promise<void>((resolve) => {
        const end = () => {
          stop();
          resolve();
        };
        process.once('SIGINT', end);
        process.once('SIGTERM', end);
      });
    });

  topology
    .command('exec')
    .description('run a command inside a service of a running topology (its network, mounts and environment), like docker-compose exec')
    .argument('<topology>', 'a name under topologies/, a folder with compose.yaml, or a compose file')
    .argument('<service>', 'service name')
    .argument('<command...>', 'command and arguments (put -- before options of the command)')
    .option(...projectOption)
    .action(async (name: string, service: string, command: string[], options: ProjectOptions) => {
      const { project } = load(name, options);
      requireRoot('exec');
      const state = requireState(project);
      const target = state.services[service];
      if (!target) throw new UsageError(`no service named "${service}" in ${project.name} (services: ${Object.keys(state.services).join(', ')})`);
      const pid = target.pid !== undefined && isProcessAlive(target.pid) ? target.pid : undefined;
      const result = await execIn({ pid, namespace: target.namespace }, command, {
        env: Object.keys(target.env).length > 0 ? target.env : { PATH: process.env.PATH ?? '/usr/bin:/bin' },
        timeoutMs: 24 * 3600_000,
        onOutput: (chunk) => process.stdout.write(chunk),
      });
      if (result.exitCode !== 0) process.exit(result.exitCode ?? 1);
    });

  topology
    .command('ps')
    .description('list the services of a running topology')
    .argument('<topology>', 'a name under topologies/, a folder with compose.yaml, or a compose file')
    .option(...projectOption)
    .action((name: string, options: ProjectOptions) => {
      const { project } = load(name, options);
      const state = requireState(project);
      const rows = Object.entries(state.services).map(([svc, s]) => `  ${svc.padEnd(20)} ${s.pid !== undefined && isProcessAlive(s.pid) ? `running (pid ${s.pid})` : 'not running'}  ${s.namespace}`);
      process.stdout.write(`topology ${project.name} (run ${state.runId}${state.ownerPid ? `, owned by pid ${state.ownerPid}` : ', detached'})\n${rows.join('\n')}\n`);
    });

  topology
    .command('config')
    .description('validate a compose file against the supported subset and print the networks and addresses the runner would use (no root needed)')
    .argument('<topology>', 'a name under topologies/, a folder with compose.yaml, or a compose file')
    .option(...projectOption)
    .action((name: string, options: ProjectOptions) => {
      const { project, scenarioFile } = load(name, options);
      const plan = planAddresses(project, 'plan');
      if (scenarioFile) loadScenarioFile(scenarioFile);
      const lines = [`project ${project.name}: ${project.file}${scenarioFile ? ` (scenario ${scenarioFile})` : ''}`];
      for (const n of plan.networks) lines.push(`  network ${n.name}: ${n.subnet}`);
      for (const svc of project.services.values()) {
        const ns = plan.namespaceOf.get(svc.name)!;
        const where = svc.sharesNetworkOf ? `shares ${svc.sharesNetworkOf}'s namespace` : ns.interfaces.map((i) => `${i.network}=${i.address}`).join(' ');
        lines.push(`  service ${svc.name} (${svc.image}): ${where}`);
      }
      process.stdout.write(`${lines.join('\n')}\n`);
    });

  topology
    .command('test')
    .description("bring a topology up, run its scenario (scenario.yaml beside the compose file), print a report and tear down; exits 1 when any step fails")
    .argument('<topology>', 'a name under topologies/, a folder with compose.yaml, or a compose file')
    .option(...projectOption)
    .option('-s, --scenario <file>', 'scenario file (default: scenario.yaml beside the compose file)')
    .option('--report <file>', 'also write the report as JSON to this file')
    .option('--timeout <d>', 'give up if not up and healthy within this long', durationOption('--timeout'), 120_000)
    .option('--engine <engine>', 'netns: network namespaces and local processes (root); docker: docker-compose against the Docker engine at $DOCKER_HOST (images causeway:dev and etcd must exist); auto: docker when an engine answers, else netns', 'netns')
    .option('--subnet-base <a.b>', `run a copy of the topology with its ${TOPOLOGY_ADDRESS_BLOCK}.x.y addresses moved to a.b.x.y (Docker's networks live in the host's routing table: keeps parallel runs apart)`)
    .action(async (name: string, options: ProjectOptions & { scenario?: string; report?: string; timeout: number; engine: string; subnetBase?: string }) => {
      if (!['netns', 'docker', 'auto'].includes(options.engine)) throw new UsageError(`--engine must be netns, docker or auto (got "${options.engine}")`);
      const resolved = resolveTopology(name);
      const relocated = options.subnetBase === undefined ? undefined : relocateTopology(resolved.composeFile, options.scenario ?? resolved.scenarioFile, parseAddressBlock(options.subnetBase));
      // Also when a signal ends the process (its handler tears down, then exits).
      const removeCopy = () => relocated?.remove();
      process.once('exit', removeCopy);
      try {
        const composeFile = relocated?.composeFile ?? resolved.composeFile;
        // A relocated copy keeps the original folder's project name.
        const project = loadComposeFile(composeFile, { projectName: options.projectName ?? projectNameOf(dirname(resolved.composeFile)) });
        const file = relocated ? relocated.scenarioFile : (options.scenario ?? resolved.scenarioFile);
        if (!file) throw new UsageError(`no scenario for ${project.name}: put a scenario.yaml beside ${project.file} or pass --scenario`);
        const scenario = loadScenarioFile(file);
        const engine: TopologyEngineName = options.engine === 'auto' ? ((await dockerEngineAvailable()) ? 'docker' : 'netns') : (options.engine as TopologyEngineName);
        if (engine === 'netns') requireRoot('test');
        await testScenario(project, scenario, engine, options);
      } finally {
        removeCopy();
        process.off('exit', removeCopy);
      }
    });
}

/** `topology test`: up with the chosen engine, the scenario, its report, and down — also on failure or a signal. */
async function testScenario(project: ComposeProject, scenario: Scenario, engine: TopologyEngineName, options: { timeout: number; report?: string }): Promise<void> {
  let run: RunningTopology | undefined;
  const removeHandlers = tearDownOnSignals(() => run);
  let problems: string[] = [];
  let failed = 0;
  try {
    if (engine === 'netns') {
      const netns = await TopologyRun.up(project, { timeoutMs: options.timeout, onCreated: (r) => (run = r) });
      printServices(netns);
    } else {
      await DockerComposeRun.up(project, { timeoutMs: options.timeout, onCreated: (r) => (run = r) });
      process.stdout.write(`topology ${project.name} is up (docker-compose project ${project.name}, engine at ${process.env.DOCKER_HOST ?? 'the default socket'})\n`);
    }
    const report = await runScenario(run!, scenario, {
      onStep: (r) => process.stdout.write(`${r.status === 'passed' ? 'ok  ' : r.status === 'failed' ? 'FAIL' : 'skip'} ${r.name}${r.detail ? ` — ${r.detail}` : ''}\n`),
    });
    failed = report.failed;
    if (failed > 0) {
      for (const svc of project.services.keys()) {
        const tail = (await run!.logsOf(svc)).trimEnd().split('\n').slice(-8).join('\n');
        process.stdout.write(`--- last lines of ${svc}:\n${tail}\n`);
      }
    }
    process.stdout.write(`\n${formatScenarioReport(report)}`);
    if (options.report) writeFileSync(options.report, `${JSON.stringify(report, null, 2)}\n`);
  } finally {
    if (run) problems = await run.down();
    removeHandlers();
  }
  if (problems.length > 0) throw new TopologyRuntimeError(TopologyErrorCodes.network, `teardown left: ${problems.join('; ')}`);
  if (failed > 0) throw new CausewayError(TopologyErrorCodes.scenarioFailed, `scenario ${scenario.name}: ${failed} step(s) failed`);
}
