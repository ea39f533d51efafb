import test from 'ava';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  TOPOLOGIES_DIR,
  TopologyErrorCodes,
  TopologyFileError,
  argvFor,
  imageMappingFor,
  loadComposeFile,
  loadScenarioFile,
  parseCompose,
  parseComposeDurationMs,
  parseScenario,
  planAddresses,
  runScenario,
  shellWords,
} from '../../topologies/index.js';

const execFileAsync = promisify(execFile);
const context = { file: '/virtual/compose.yaml', dir: '/virtual/demo', env: { TAG: 'v2', EMPTY: '' } };
const parse = (text: string) => parseCompose(text, context);

function refused(t: import('ava').ExecutionContext, text: string, path: string, code: string = TopologyErrorCodes.unsupported): TopologyFileError {
  const error = t.throws(() => parse(text), { instanceOf: TopologyFileError })!;
  t.is(error.code, code);
  t.is(error.path, path);
  t.true(error.message.includes(path), error.message);
  return error;
}

const minimal = (service: string) => `services:\n  app:\n    image: causeway:dev\n${service}`;

test('every compose file under topologies/ passes docker-compose config -q and the runner', async (t) => {
  const dirs = readdirSync(TOPOLOGIES_DIR).filter((d) => existsSync(join(TOPOLOGIES_DIR, d, 'compose.yaml')));
  t.true(dirs.includes('smoke'));
  await Promise.all(
    dirs.map(async (dir) => {
      const file = join(TOPOLOGIES_DIR, dir, 'compose.yaml');
      await t.notThrowsAsync(execFileAsync('docker-compose', ['-f', file, 'config', '-q']), `docker-compose rejects ${file}`);
    }),
  );
  for (const dir of dirs) {
    const file = join(TOPOLOGIES_DIR, dir, 'compose.yaml');
    const project = loadComposeFile(file);
    planAddresses(project, 'check');
    for (const scenario of readdirSync(join(TOPOLOGIES_DIR, dir)).filter((f) => f === 'scenario.yaml' || f.endsWith('.scenario.yaml'))) {
      loadScenarioFile(join(TOPOLOGIES_DIR, dir, scenario));
    }
  }
});

test("prom/prometheus runs the host's prometheus; the image's in-image paths are rewritten", (t) => {
  const project = parse(`
services:
  server:
    image: prom/prometheus:v2.42.0
    command: [--config.file=/config/prometheus.yaml]
  check:
    image: quay.io/prometheus/prometheus
    entrypoint: [/bin/promtool, check, config, /config/prometheus.yaml]
  defaults:
    image: prom/prometheus
`);
  const mapping = imageMappingFor('prom/prometheus:v2.42.0')!;
  t.is(mapping.kind, 'prometheus');
  t.deepEqual(Object.keys(mapping.programs).sort(), ['prometheus', 'promtool']);
  t.deepEqual(argvFor(project.services.get('server')!, mapping), ['prometheus', '--config.file=/config/prometheus.yaml']);
  t.deepEqual(argvFor(project.services.get('check')!, mapping), ['promtool', 'check', 'config', '/config/prometheus.yaml']);
  // As the image: /bin/prometheus with its CMD.
  t.deepEqual(argvFor(project.services.get('defaults')!, mapping), ['prometheus', '--config.file=/etc/prometheus/prometheus.yml', '--storage.tsdb.path=/prometheus']);
  t.is(imageMappingFor('example.com/someone/prometheus:v2'), undefined);
});

test('refuses keys outside the subset, naming the key', (t) => {
  refused(t, minimal('    ports: ["8080:8080"]\n'), 'services.app.ports');
  refused(t, minimal('    build: .\n'), 'services.app.build');
  refused(t, minimal('    restart: always\n'), 'services.app.restart');
  refused(t, minimal('    network_mode: host\n'), 'services.app.network_mode');
  refused(t, minimal('    healthcheck: { test: ["CMD", "true"], start_interval: 1s }\n'), 'services.app.healthcheck.start_interval');
  refused(t, `${minimal('')}configs: {}\n`, 'configs');
  refused(t, `${minimal('    networks: [n]\n')}networks:\n  n: { driver: overlay }\n`, 'networks.n.driver');
  refused(t, `${minimal('    volumes: ["/data"]\n')}`, 'services.app.volumes[0]');
  const error = refused(t, minimal('    cap_add: [NET_ADMIN]\n'), 'services.app.cap_add');
  t.regex(error.message, /not supported by the causeway topology runner/);
});

test('refuses references to undeclared things and cycles', (t) => {
  refused(t, minimal('    networks: [missing]\n'), 'services.app.networks.missing', TopologyErrorCodes.fileInvalid);
  refused(t, minimal('    depends_on: [ghost]\n'), 'services.app.depends_on.ghost', TopologyErrorCodes.fileInvalid);
  refused(t, minimal('    volumes: ["data:/data"]\n'), 'services.app.volumes[0]', TopologyErrorCodes.fileInvalid);
  refused(
    t,
    'services:\n  a: { image: causeway, depends_on: [b] }\n  b: { image: causeway, depends_on: [a] }\n',
    'services.a.depends_on',
    TopologyErrorCodes.fileInvalid,
  );
  refused(
    t,
    'services:\n  a: { image: causeway }\n  b: { image: causeway, depends_on: { a: { condition: service_healthy } } }\n',
    'services.b.depends_on.a.condition',
    TopologyErrorCodes.fileInvalid,
  );
});

test('interpolates ${VAR}, defaults, and $$', (t) => {
  const project = parse(minimal('    command: ["echo", "${TAG}", "${MISSING:-fallback}", "${EMPTY:-e}", "${EMPTY-kept}", "$$HOME"]\n'));
  t.deepEqual(project.services.get('app')!.command, ['echo', 'v2', 'fallback', 'e', '', '$HOME']);
  const error = t.throws(() => parse(minimal('    command: "${NEEDED:?set NEEDED}"\n')), { instanceOf: TopologyFileError })!;
  t.regex(error.message, /NEEDED is required: set NEEDED/);
});

test('normalizes the supported keys', (t) => {
  const project = parse(`
services:
  db:
    image: quay.io/coreos/etcd:v3.5.17
    healthcheck: { test: "etcdctl endpoint health", interval: 1m30s, retries: 5 }
    networks: [back]
  app:
    image: causeway:dev
    command: app echo --port 8080 --name "my app"
    environment: [A=1, B=x=y]
    depends_on: { db: { condition: service_healthy } }
    networks:
      back: { ipv4_address: 10.9.0.50, aliases: [api] }
    volumes: ["data:/data:ro", { type: bind, source: /tmp, target: /host-tmp }]
  side:
    image: causeway:dev
    network_mode: "service:app"
networks:
  back:
    ipam: { config: [{ subnet: 10.9.0.0/24 }] }
volumes:
  data: {}
`);
  t.is(project.name, 'demo');
  const app = project.services.get('app')!;
  t.deepEqual(app.command, ['app', 'echo', '--port', '8080', '--name', 'my app']);
  t.deepEqual(app.environment, { A: '1', B: 'x=y' });
  t.is(app.dependsOn.get('db'), 'service_healthy');
  t.deepEqual(app.volumes, [
    { kind: 'volume', source: 'data', target: '/data', readOnly: true },
    { kind: 'bind', source: '/tmp', target: '/host-tmp', readOnly: false },
  ]);
  t.deepEqual(project.services.get('db')!.healthcheck, { argv: ['sh', '-c', 'etcdctl endpoint health'], intervalMs: 90_000, timeoutMs: 30_000, retries: 5, startPeriodMs: 0 });
  const side = project.services.get('side')!;
  t.is(side.sharesNetworkOf, 'app');
  t.is(side.dependsOn.get('app'), 'service_started');
});

test('plans addresses as compose would: ipam honoured, .1 kept free, names only on shared networks', (t) => {
  const project = parse(`
services:
  a: { image: causeway, networks: { left: { ipv4_address: 10.9.0.50 } } }
  b: { image: causeway, networks: [right] }
  both: { image: causeway, networks: [left, right] }
  pod: { image: causeway, network_mode: "service:a" }
  lone: { image: causeway }
networks:
  left: { ipam: { config: [{ subnet: 10.9.0.0/24 }] } }
  right: {}
`);
  const plan = planAddresses(project, 'abc123');
  t.is(plan.routerNamespace, 'cw-abc123');
  t.deepEqual(plan.networks.map((n) => [n.name, n.subnet]), [['left', '10.9.0.0/24'], ['right', '10.77.1.0/24'], ['default', '10.77.2.0/24']]);
  const ns = (s: string) => plan.namespaceOf.get(s)!;
  t.is(ns('pod'), ns('a'));
  t.deepEqual(ns('a').services, ['a', 'pod']);
  t.is(ns('a').interfaces[0]!.address, '10.9.0.50');
  t.deepEqual(ns('both').interfaces.map((i) => [i.name, i.network, i.address]), [['eth0', 'left', '10.9.0.2'], ['eth1', 'right', '10.77.1.3']]);
  t.is(ns('b').interfaces[0]!.address, '10.77.1.2');
  t.true(ns('a').hosts.includes('10.9.0.2\tboth'));
  t.false(/\sb$/m.test(ns('a').hosts), 'a shares no network with b, so b does not resolve there');
  t.true(/^10\.77\.1\.2\tb$/m.test(ns('both').hosts));
  t.true(plan.namespaces.every((n) => n.interfaces.every((i) => i.peer.length <= 15 && i.name.length <= 15)));
  const clash = `services:\n  a: { image: causeway, networks: { n: { ipv4_address: 10.9.0.1 } } }\nnetworks:\n  n: { ipam: { config: [{ subnet: 10.9.0.0/24 }] } }\n`;
  t.throws(() => planAddresses(parse(clash), 'x'), { message: /not a host address/ });
});

test('shell words and durations follow compose', (t) => {
  t.deepEqual(shellWords(`sh -c 'echo "$X" && exit 1' "a b" c\\ d`), ['sh', '-c', 'echo "$X" && exit 1', 'a b', 'c d']);
  t.throws(() => shellWords('"open'));
  t.is(parseComposeDurationMs('1m30s'), 90_000);
  t.is(parseComposeDurationMs('500ms'), 500);
  t.is(parseComposeDurationMs('1.5s'), 1500);
  t.is(parseComposeDurationMs('10'), undefined);
});

test('scenario files: steps are checked and a bad one names its path', (t) => {
  const scenario = parseScenario({ steps: [{ call: { from: 'a', url: 'http://b:80/', requests: 3, minSuccesses: 3 } }, { stop: 'b' }, { sleep: '1s' }] }, 's.yaml');
  t.is(scenario.steps.length, 3);
  t.is(scenario.steps[0]!.name, 'call http://b:80/ from a 3x');
  const sleep = scenario.steps[2]!;
  t.is(sleep.kind === 'sleep' ? sleep.spec : 0, 1000);
  const bad = t.throws(() => parseScenario({ steps: [{ stop: 'b' }, { call: { from: 'a', url: 'not a url' } }] }, 's.yaml'), { instanceOf: TopologyFileError })!;
  t.is(bad.code, TopologyErrorCodes.scenarioInvalid);
  t.regex(bad.message, /steps\[1\]\.call\.url/);
  t.throws(() => parseScenario({ steps: [{ dance: {} }] }, 's.yaml'), { message: /steps\[0\]: needs exactly one of/ });
  t.throws(() => parseScenario({ steps: [{ wait: { in: 'a' } }] }, 's.yaml'), { message: /exactly one of http, command or healthy/ });
  t.throws(() => parseScenario({ steps: [{ sleep: '1s' }, { stop: ['a', ''] }] }, 's.yaml'), { message: /^s\.yaml: steps\[1\]\.stop\[1\]: / });
});

// The comparison logic alone, so a topology that only answers exec (scripted outputs) stands
// in for a running one; the ha-etcd scenario runs it against real etcds (runner.test.ts).
test('scenario exec: remember keeps the picked output, sameAs compares with it and names what changed', async (t) => {
  const outputs = [
    '"Revision" : 7\n"Key" : "/k/a"\n"CreateRevision" : 3\n"Lease" : 0\n',
    '"Revision" : 9\n"Key" : "/k/a"\n"CreateRevision" : 3\n"Lease" : 0\n',
    '"Revision" : 12\n"Key" : "/k/a"\n"CreateRevision" : 11\n"Lease" : 0\n',
  ];
  const run = {
    engine: 'netns',
    cliArgv: [],
    exec: async () => ({ exitCode: 0, stdout: outputs.shift() ?? '', stderr: '', timedOut: false }),
  } as unknown as Parameters<typeof runScenario>[0];
  const pick = '^"(Key|CreateRevision|Lease)" : .*$';
  const scenario = parseScenario(
    {
      continueOnFailure: true,
      steps: [
        { exec: { in: 'etcd', command: ['etcdctl', 'get'], pick, remember: 'keys' } },
        { exec: { in: 'etcd', command: ['etcdctl', 'get'], pick, sameAs: 'keys' } },
        { exec: { in: 'etcd', command: ['etcdctl', 'get'], pick, sameAs: 'keys' } },
        { exec: { in: 'etcd', command: ['etcdctl', 'get'], sameAs: 'never-remembered' } },
      ],
    },
    's.yaml',
  );
  const report = await runScenario(run, scenario);
  t.deepEqual(report.steps.map((s) => s.status), ['passed', 'passed', 'failed', 'failed']);
  t.regex(report.steps[0]!.detail, /3 lines remembered as "keys"/);
  t.regex(report.steps[1]!.detail, /the same 3 lines as "keys"/);
  t.regex(report.steps[2]!.detail, /differs from "keys": - "CreateRevision" : 3; \+ "CreateRevision" : 11/);
  t.regex(report.steps[3]!.detail, /no earlier step remembered "never-remembered"/);
  t.throws(() => parseScenario({ steps: [{ exec: { in: 'a', command: ['true'], pick: 'x' } }] }, 's.yaml'), { message: /pick goes with remember or sameAs/ });
});

test('fault steps: partition, heal, delay and loss parse, and a bad one names its path', (t) => {
  const scenario = parseScenario(
    {
      steps: [
        { partition: { between: ['gateway-west', 'wan'] } },
        { heal: { between: ['wan', 'gateway-west'] } },
        { delay: { on: 'gateway-west', ms: 200, jitterMs: 20 } },
        { loss: { on: 'gateway-west', percent: 5 } },
        { heal: { on: 'gateway-west' } },
        { heal: null },
        { heal: 'all' },
      ],
    },
    's.yaml',
  );
  t.deepEqual(
    scenario.steps.map((s) => s.name),
    [
      'partition gateway-west from wan (silent drops)',
      'heal the partition between wan and gateway-west',
      "delay gateway-west's packets by 200 ms ± 20 ms",
      "drop 5% of gateway-west's packets",
      'heal the delay and loss on gateway-west',
      'heal every network fault',
      'heal every network fault',
    ],
  );
  t.deepEqual(scenario.steps[1]!.spec, { between: ['wan', 'gateway-west'] });
  t.is(scenario.steps[5]!.spec, 'all', '`heal:` with no value heals everything');
  const refusedStep = (step: unknown, message: RegExp) => {
    const error = t.throws(() => parseScenario({ steps: [{ sleep: '1s' }, step] }, 's.yaml'), { instanceOf: TopologyFileError })!;
    t.is(error.code, TopologyErrorCodes.scenarioInvalid);
    t.regex(error.message, message);
  };
  refusedStep({ partition: { between: ['wan'] } }, /^s\.yaml: steps\[1\]\.partition\.between: must be a list of two names/);
  refusedStep({ partition: { between: 'wan' } }, /^s\.yaml: steps\[1\]\.partition\.between: must be a list of two names/);
  refusedStep({ partition: { between: ['wan', 'wan'] } }, /^s\.yaml: steps\[1\]\.partition\.between\[1\]: names the same side twice/);
  refusedStep({ partition: { between: ['wan', ''] } }, /^s\.yaml: steps\[1\]\.partition\.between\[1\]: names a network or a service/);
  refusedStep({ partition: { between: ['a', 'b'], mode: 'reject' } }, /^s\.yaml: steps\[1\]\.partition: Unrecognized key: "mode"/);
  refusedStep({ heal: 'some' }, /^s\.yaml: steps\[1\]\.heal: must be empty or `all`/);
  refusedStep({ heal: { between: ['a', 'b'], on: 'a' } }, /^s\.yaml: steps\[1\]\.heal: give between or on, not both/);
  refusedStep({ heal: { between: ['a', 'a'] } }, /^s\.yaml: steps\[1\]\.heal\.between\[1\]: names the same side twice/);
  refusedStep({ loss: { on: 'a', percent: 0 } }, /^s\.yaml: steps\[1\]\.loss\.percent: must be above 0/);
  refusedStep({ loss: { on: 'a', percent: 101 } }, /^s\.yaml: steps\[1\]\.loss\.percent: /);
  refusedStep({ loss: { percent: 5 } }, /^s\.yaml: steps\[1\]\.loss\.on: /);
  refusedStep({ delay: { on: 'a', ms: 0 } }, /^s\.yaml: steps\[1\]\.delay\.ms: /);
  refusedStep({ delay: { on: 'a', ms: 10, jitter: 2 } }, /^s\.yaml: steps\[1\]\.delay: Unrecognized key: "jitter"/);
});
