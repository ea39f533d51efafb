import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { CausewayError, ErrorCodes, ValidationError, configJsonSchema, formatPath, loadConfigFile, parseConfigText, parseYamlDocuments } from '../../mesh/index.js';

const good = `
cluster:
  name: east
  locality: {region: us-east, zone: a}
etcd:
  endpoints: [http://127.0.0.1:2379]
links:
  - peer: west
    etcd: {endpoints: [https://10.0.0.2:2379], tls: {ca: ca.pem, cert: c.pem, key: k.pem}}
federation:
  staleAfterMs: 20s
`;

test('a good file yields a frozen config with defaults from one place', (t) => {
  const config = parseConfigText('cluster', good, 'cluster.yaml');
  t.is(config.trustDomain, 'causeway.internal');
  t.is(config.gateway.port, 15443);
  t.is(config.controller.grpcPort, 15012);
  t.is(config.federation.staleAfterMs, 20_000);
  t.is(config.federation.expireAfterMs, 300_000);
  t.is(config.observability.readyPort, 15021);
  t.true(Object.isFrozen(config));
  t.true(Object.isFrozen(config.links[0]?.etcd?.endpoints));
});

test('errors name the exact path', (t) => {
  const bad = good.replace('https://10.0.0.2:2379', 'not a url');
  const error = t.throws(() => parseConfigText('cluster', bad, 'cluster.yaml'), { instanceOf: ValidationError });
  t.is(error.message, 'cluster.yaml: links[0].etcd.endpoints[0]: not a URL');
});

test('unknown keys are refused (typos do not pass silently)', (t) => {
  const error = t.throws(() => parseConfigText('cluster', `${good}gatewy: {port: 1}\n`, 'c.yaml'), { instanceOf: ValidationError });
  t.regex(error.message, /gatewy/);
});

test('bad durations, YAML syntax and empty files are explained', (t) => {
  t.regex(t.throws(() => parseConfigText('cluster', good.replace('20s', 'soon'), 'c.yaml'))!.message, /federation\.staleAfterMs: "soon" is not a duration/);
  t.regex(t.throws(() => parseConfigText('cluster', 'cluster: [\n', 'c.yaml'))!.message, /c\.yaml:\d+:\d+: not valid YAML/);
  t.regex(t.throws(() => parseConfigText('cluster', 'a: 1\na: 2\n', 'c.yaml'))!.message, /not valid YAML/);
});

test('an empty file is named empty, a null one null, each with what it should hold', (t) => {
  const holds = 'it should hold a cluster config (a YAML mapping; `causeway config schema --kind cluster` lists its keys)';
  for (const text of ['', '\n\n', '# only a comment\n', '---\n']) {
    t.is(t.throws(() => parseConfigText('cluster', text, 'c.yaml'), { instanceOf: ValidationError }).message, `c.yaml: the file is empty; ${holds}`, JSON.stringify(text));
  }
  for (const text of ['null\n', '~\n', '--- null\n']) {
    t.is(t.throws(() => parseConfigText('cluster', text, 'c.yaml'), { instanceOf: ValidationError }).message, `c.yaml: the file holds null (\`null\` or \`~\`), not a YAML mapping; ${holds}`, JSON.stringify(text));
  }
});

test('manifests of several documents skip empty ones, and say so when there is nothing else', (t) => {
  t.deepEqual(
    parseYamlDocuments('a: 1\n---\n---\nnull\n---\nb: 2\n', 'm.yaml'),
    [
      { value: { a: 1 }, source: 'm.yaml#0' },
      { value: { b: 2 }, source: 'm.yaml#3' },
    ],
  );
  t.regex(t.throws(() => parseYamlDocuments('---\n---\n', 'm.yaml'))!.message, /^m\.yaml: the file is empty; it should hold a YAML mapping$/);
  t.regex(t.throws(() => parseYamlDocuments('---\nnull\n---\n~\n', 'm.yaml'))!.message, /^m\.yaml: the file holds null/);
  t.regex(t.throws(() => parseYamlDocuments('a: 1\n---\nb: [\n', 'm.yaml'))!.message, /^m\.yaml#1:\d+:\d+: not valid YAML/);
});

test('one path format: list indexes in brackets, keys after dots', (t) => {
  t.is(formatPath(['links', 1, 'etcd', 'endpoints', 0]), 'links[1].etcd.endpoints[0]');
  t.is(formatPath([0, 'port']), '[0].port');
  t.is(formatPath(['ports', 0, 'port']), 'ports[0].port');
  t.is(formatPath([]), '');
});

test('an unreadable file is a config error with its own code', (t) => {
  const error = t.throws(() => loadConfigFile('cluster', '/nonexistent/cluster.yaml'), { instanceOf: CausewayError });
  t.is(error.code, ErrorCodes.configUnreadable);
});

test('loads from a file', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-config-'));
  writeFileSync(join(dir, 'c.yaml'), good);
  t.is(loadConfigFile('cluster', join(dir, 'c.yaml')).cluster.name, 'east');
});

test('the JSON Schema is generated from the validators', (t) => {
  const schema = configJsonSchema('cluster') as { properties: Record<string, unknown>; required: string[] };
  t.truthy(schema.properties.links);
  t.truthy(schema.properties.federation);
  t.true(schema.required.includes('etcd'));
  const workload = configJsonSchema('workload') as { properties: Record<string, unknown> };
  t.truthy(workload.properties.serviceAccount);
});
