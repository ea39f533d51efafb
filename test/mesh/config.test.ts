import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { CausewayError, ErrorCodes, ValidationError, configJsonSchema, loadConfigFile, parseConfigText } from '../../mesh/index.js';

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
  t.true(Object.isFrozen(config.links[0]?.etcd.endpoints));
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
  t.regex(t.throws(() => parseConfigText('cluster', '', 'c.yaml'))!.message, /empty/);
  t.regex(t.throws(() => parseConfigText('cluster', 'a: 1\na: 2\n', 'c.yaml'))!.message, /not valid YAML/);
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
