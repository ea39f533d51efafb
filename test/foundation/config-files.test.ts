import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { fileKindJsonSchema } from '../../mesh/index.js';
import { FILE_KIND_NAMES, loadFileKinds } from '../../cli/file-kinds.js';

/**
 * Every kind of file a command reads, through the real `causeway` (bin/causeway.js):
 * `config check` takes each kind and tells it from its keys, and a bad services manifest,
 * policy file or workload group is a bad input file — exit 2, paths written `a[0].b`.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const bin = join(ROOT, 'bin/causeway.js');

function causeway(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { cwd: ROOT, timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'cw-config-files-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

const example = (path: string) => join(ROOT, 'topologies', path);

// A cluster whose etcd nothing listens on: the commands below must refuse the file before they dial it.
const cluster = file('cluster.yaml', 'cluster: { name: east, locality: { region: eu, zone: eu-1 } }\netcd: { endpoints: [http://127.0.0.1:1], dialTimeoutMs: 500 }\n');

const workload = readFileSync(example('two-clusters/config/reviews-west.yaml'), 'utf8');

test('a workload file with a sidecar: section passes config check, with --kind workload and without', async (t) => {
  t.regex(workload, /^sidecar:/m, 'the example carries sidecar tuning');
  const path = file('reviews-sidecar.yaml', `${workload}  outlier: { consecutiveFailures: 5 }\n`);
  const asked = await causeway(['config', 'check', '--kind', 'workload', path]);
  t.is(asked.code, 0, asked.stderr);
  t.is(asked.stdout, `${path}: ok (workload)\n`);
  const told = await causeway(['config', 'check', path]);
  t.is(told.code, 0, told.stderr);
  t.is(told.stdout, `${path}: ok (workload, told from its keys)\n`);
  const printed = await causeway(['config', 'check', '--print', path]);
  t.is((JSON.parse(printed.stdout) as { sidecar: { outlier: { consecutiveFailures: number; baseEjectionMs: number } } }).sidecar.outlier.consecutiveFailures, 5);
});

test('config check tells every kind of file from its keys', async (t) => {
  const routes = file('routes.yaml', 'cluster: east\nroutes:\n  - service: echo.default\n    endpoints: [127.0.0.1:9000]\n');
  const policy = file('policies.yaml', 'kind: AuthorizationPolicy\nname: allow-web\nnamespace: default\naction: allow\n---\nkind: TrafficPolicy\nname: reviews\nnamespace: default\nservice: reviews\nretries: 2\n');
  const cases: [string, string][] = [
    [example('two-clusters/config/east.yaml'), 'cluster'],
    [example('two-clusters/config/productpage-east.yaml'), 'workload'],
    [example('two-clusters/config/east-services.yaml'), 'service'],
    [example('vm-onboarding/config/web-group.yaml'), 'workload-group'],
    [routes, 'routes'],
    [policy, 'policy'],
  ];
  for (const [path, kind] of cases) {
    const { code, stdout, stderr } = await causeway(['config', 'check', path]);
    t.is(code, 0, stderr);
    t.is(stdout, `${path}: ok (${kind}, told from its keys)\n`);
  }
});

test('a workload file with a typo is checked as a workload, not buried under cluster errors', async (t) => {
  const path = file('typo.yaml', workload.replace(/^sidecar:/m, 'sidecr:'));
  const { code, stderr } = await causeway(['config', 'check', path]);
  t.is(code, 2);
  t.regex(stderr, /not clearly one kind of file \(no kind has the key sidecr\); checked as the closest, workload \(/);
  t.regex(stderr, /Unrecognized key: "sidecr"/);
  t.regex(stderr, /say which with --kind \(kinds: cluster, workload, service, policy, routes, workload-group\)/);
  t.notRegex(stderr, /etcd/, 'no errors of the cluster kind');
});

test('a file no kind knows lists the kinds; one that two kinds fit names both --kind choices', async (t) => {
  const unknown = await causeway(['config', 'check', file('unknown.yaml', 'colour: blue\n')]);
  t.is(unknown.code, 2);
  t.regex(unknown.stderr, /no kind has any of its top-level keys \(colour\); the kinds are cluster \(.*\), workload \(.*causeway sidecar --config\), service \(.*\), policy \(.*\), routes \(.*\), workload-group \(.*\)/);
  const both = await causeway(['config', 'check', file('ambiguous.yaml', 'trustDomain: causeway.internal\n')]);
  t.is(both.code, 2);
  t.regex(both.stderr, /could be routes or cluster or workload \(each has all its top-level keys\); checked as the closest, routes .*; say which with --kind routes or --kind cluster or --kind workload /);
  const bad = await causeway(['config', 'check', '--kind', 'sidecars', cluster]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--kind must be one of cluster, workload, service, policy, routes, workload-group \(got "sidecars"\)/);
});

test('an empty file is called empty and a null one null, each saying what belongs in it', async (t) => {
  const empty = file('empty.yaml', '# nothing yet\n');
  const nothing = await causeway(['config', 'check', '--kind', 'workload', empty]);
  t.is(nothing.code, 2);
  t.is(nothing.stderr, `causeway: error: ${empty}: the file is empty; it should hold a workload config (a YAML mapping; \`causeway config schema --kind workload\` lists its keys) [CW_CONFIG_INVALID]\n`);
  const nul = file('null.yaml', 'null\n');
  const held = await causeway(['config', 'check', '--kind', 'cluster', nul]);
  t.is(held.code, 2);
  t.is(held.stderr, `causeway: error: ${nul}: the file holds null (\`null\` or \`~\`), not a YAML mapping; it should hold a cluster config (a YAML mapping; \`causeway config schema --kind cluster\` lists its keys) [CW_CONFIG_INVALID]\n`);
  const told = await causeway(['config', 'check', nul]);
  t.is(told.code, 2);
  t.regex(told.stderr, /the file holds null \(`null` or `~`\), not a YAML mapping; it should hold one of the kinds of file .*: cluster, workload, service, policy, routes, workload-group/);
  const services = await causeway(['service', 'apply', '-f', file('null-services.yaml', '---\n~\n'), '--config', cluster]);
  t.is(services.code, 2);
  t.regex(services.stderr, /the file holds null \(`null` or `~`\), not a YAML mapping; it should hold a services manifest/);
});

test('a bad services manifest exits 2 before etcd is dialled, its paths written ports[0].port', async (t) => {
  const path = file('services.yaml', 'name: reviews\nnamespace: default\nports: [{ name: http, port: 0 }]\nserviceAccounts: [spiffe://causeway.internal/ns/default/sa/reviews]\n');
  const { code, stderr } = await causeway(['service', 'apply', '-f', path, '--config', cluster]);
  t.is(code, 2);
  t.is(stderr, `causeway: error: ${path}: ports[0].port: port must be 1-65535 [CW_CONFIG_INVALID]\n`);
  const second = file('services-2.yaml', `${readFileSync(path, 'utf8').replace('port: 0', 'port: 9080')}---\nname: ratings\nnamespace: default\nports: [{ name: http, port: 9080 }]\nserviceAccounts: [spiffe://causeway.internal/ns/default/sa/ratings, "nope"]\n`);
  const later = await causeway(['service', 'apply', '-f', second, '--config', cluster]);
  t.is(later.code, 2);
  t.regex(later.stderr, new RegExp(`${second}#1: serviceAccounts\\[1\\]: `));
  const checked = await causeway(['config', 'check', path]);
  t.is(checked.code, 2);
  t.regex(checked.stderr, /ports\[0\]\.port: port must be 1-65535/);
});

test('a bad policy file exits 2 with a[0].b paths', async (t) => {
  const path = file('policy.yaml', 'kind: AuthorizationPolicy\nname: allow-web\nnamespace: default\naction: allow\nfrom: [{ identities: [spiffe://causeway.internal/ns/default/sa/web, "web"] }]\n');
  const { code, stderr } = await causeway(['policy', 'apply', '-f', path, '--config', cluster]);
  t.is(code, 2);
  t.regex(stderr, new RegExp(`^causeway: error: ${path}: from\\[0\\]\\.identities\\[1\\]: `));
  const split = file('split.yaml', 'kind: TrafficPolicy\nname: canary\nnamespace: default\nservice: reviews\nsplit: [{ subset: v1, weight: 90 }, { subset: v2, weight: -1 }]\n');
  const weights = await causeway(['policy', 'apply', '-f', split, '--config', cluster]);
  t.is(weights.code, 2);
  t.regex(weights.stderr, /split\[1\]\.weight: /);
});

test('a bad workload group file exits 2 with a[0].b paths', async (t) => {
  const path = file('group.yaml', 'kind: WorkloadGroup\nname: web\nnamespace: default\nservice: web\nserviceAccount: web\nports: [{ name: http, port: 8080 }, { name: admin, port: 70000 }]\n');
  const { code, stderr } = await causeway(['workload', 'group', 'apply', '-f', path, '--config', cluster]);
  t.is(code, 2);
  t.is(stderr, `causeway: error: ${path}: ports[1].port: port must be 1-65535 [CW_CONFIG_INVALID]\n`);
});

/** Paths of the properties in a JSON Schema that carry no description (`routes[].endpoints[].address`). */
function undescribed(schema: unknown, path = ''): string[] {
  if (typeof schema !== 'object' || schema === null) return [];
  const node = schema as Record<string, unknown>;
  const out: string[] = [];
  for (const [key, child] of Object.entries((node.properties as Record<string, unknown> | undefined) ?? {})) {
    const at = path ? `${path}.${key}` : key;
    if (typeof (child as { description?: unknown }).description !== 'string' || (child as { description: string }).description.trim() === '') out.push(at);
    out.push(...undescribed(child, at));
  }
  for (const list of ['anyOf', 'oneOf', 'allOf', 'prefixItems'] as const) for (const option of (node[list] as unknown[] | undefined) ?? []) out.push(...undescribed(option, path));
  if (node.items) out.push(...undescribed(node.items, `${path}[]`));
  if (typeof node.additionalProperties === 'object') out.push(...undescribed(node.additionalProperties, `${path}.*`));
  for (const def of Object.values((node.$defs as Record<string, unknown> | undefined) ?? {})) out.push(...undescribed(def, path));
  return [...new Set(out)];
}

test('every key of every kind of file has a description in its JSON Schema', async (t) => {
  const kinds = await loadFileKinds();
  t.deepEqual(kinds.map((k) => k.name), FILE_KIND_NAMES);
  for (const kind of kinds) {
    const schema = fileKindJsonSchema(kind);
    t.true(Object.keys((schema.properties as object | undefined) ?? {}).length > 0 || Array.isArray(schema.anyOf), `${kind.name} has keys`);
    t.deepEqual(undescribed(schema), [], `${kind.name}: keys without a description`);
  }
});

test('config schema --kind workload prints the sidecar: section with all its keys, described', async (t) => {
  const { code, stdout, stderr } = await causeway(['config', 'schema', '--kind', 'workload']);
  t.is(code, 0, stderr);
  type Node = { description?: string; properties: Record<string, Node> };
  const schema = JSON.parse(stdout) as Node;
  const sidecar = schema.properties.sidecar!;
  t.truthy(sidecar.description);
  for (const key of ['outboundRange', 'dns', 'connectTimeoutMs', 'maxAttempts', 'outlier', 'circuit', 'accessLog']) t.truthy(sidecar.properties[key]?.description, key);
  t.truthy(sidecar.properties.outlier!.properties.consecutiveFailures!.description);
  t.truthy(sidecar.properties.dns!.properties.outside!.description);
  t.truthy(schema.properties.serviceAccount!.description);
  for (const kind of FILE_KIND_NAMES.filter((k) => k !== 'workload')) {
    const other = await causeway(['config', 'schema', '--kind', kind]);
    t.is(other.code, 0, other.stderr);
    t.truthy(JSON.parse(other.stdout), kind);
  }
});
