// The alert and recording rules in deploy/prometheus/ and the dashboard in deploy/grafana/:
// checked and unit-tested by Prometheus' own promtool (Debian's `prometheus` package,
// installed by scripts/ensure-system-packages.mjs test), every alert documented in
// docs/runbooks.md, and every metric they name defined by the code.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { parse } from 'yaml';
import { ObservabilityConfig } from '../../mesh/index.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const rulesDir = join(root, 'deploy/prometheus');
const rulesFile = join(rulesDir, 'causeway-rules.yaml');
const rulesTestFile = join(rulesDir, 'causeway-rules.test.yaml');
const sampleConfigFile = join(rulesDir, 'prometheus.yaml');
/** The live copy of the sample: east's Prometheus in topologies/chained-gateways (prometheus.scenario.yaml). */
const topologyConfigFile = join(root, 'topologies/chained-gateways/config/prometheus.yaml');
const dashboardFile = join(root, 'deploy/grafana/causeway-dashboard.json');
const runbooksFile = join(root, 'docs/runbooks.md');
const runbookBase = 'https://github.com/causeway-mesh/causeway/blob/main/docs/runbooks.md';
/** The folders whose prom-client metrics Prometheus scrapes. */
const sourceFolders = ['api-client', 'ca', 'cli', 'controller', 'federation', 'gateway', 'mesh', 'proxy', 'store'];

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface AlertRuleTest {
  alertname: string;
  exp_alerts?: unknown[] | null;
}

async function rules(): Promise<Rule[]> {
  const doc = parse(await readFile(rulesFile, 'utf8')) as { groups: Array<{ rules: Rule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

/** Runs promtool; a missing promtool fails the test naming the package (never a skip). */
async function promtool(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    execFile('promtool', args, { cwd: rulesDir, timeout: 120_000 }, (error, stdout, stderr) => {
      if ((error as NodeJS.ErrnoException | null)?.code === 'ENOENT') {
        reject(new Error("promtool is not installed: it comes with Debian's prometheus package (apt-get install -y prometheus; `npm test` installs it through scripts/ensure-system-packages.mjs test, as root)"));
        return;
      }
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, output: `${stdout}${stderr}` });
    });
  });
}

/** Every metric and recording-rule name a PromQL expression reads. */
function namesIn(expr: string): string[] {
  return [...expr.matchAll(/\bcauseway[_:][a-z0-9_:]*/g)].map((m) => m[0]);
}

/** The metric names prom-client is asked to register anywhere in the product's sources. */
async function definedMetrics(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const folder of sourceFolders) {
    for (const file of await readdir(join(root, folder), { recursive: true })) {
      if (!file.endsWith('.ts')) continue;
      const text = await readFile(join(root, folder, file), 'utf8');
      for (const m of text.matchAll(/name: '(causeway_[a-z0-9_]+)'/g)) names.add(m[1]!);
    }
  }
  return names;
}

/** `x_bucket`, `x_sum` and `x_count` are series of the histogram `x`. */
function isDefined(name: string, defined: Set<string>, recorded: Set<string>): boolean {
  if (name.includes(':')) return recorded.has(name);
  return defined.has(name) || defined.has(name.replace(/_(bucket|sum|count)$/, ''));
}

/** GitHub's anchor for a Markdown heading. */
function anchorOf(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^a-z0-9 _-]/g, '').replace(/ /g, '-');
}

test('promtool check rules accepts the rules file', async (t) => {
  const { code, output } = await promtool(['check', 'rules', rulesFile]);
  t.is(code, 0, output);
  t.regex(output, /SUCCESS: \d+ rules found/);
});

interface ScrapeConfig {
  job_name: string;
  static_configs?: Array<{ targets: string[]; labels?: Record<string, string> }>;
}

async function scrapeConfigs(file: string): Promise<ScrapeConfig[]> {
  return (parse(await readFile(file, 'utf8')) as { scrape_configs: ScrapeConfig[] }).scrape_configs;
}

test('the sample prometheus.yaml is valid, loads the rules, and scrapes the port the components serve /metrics on', async (t) => {
  const { code, output } = await promtool(['check', 'config', sampleConfigFile]);
  t.is(code, 0, output);
  t.regex(output, /SUCCESS: \d+ rules found/);
  const metricsPort = ObservabilityConfig.parse({}).metricsPort;
  const sample = await scrapeConfigs(sampleConfigFile);
  const live = await scrapeConfigs(topologyConfigFile);
  for (const config of [...sample, ...live]) {
    for (const group of config.static_configs ?? []) {
      t.true(group.targets.every((target) => target.endsWith(`:${metricsPort}`)), `${config.job_name}: ${group.targets.join(', ')}`);
      t.truthy(group.labels?.cluster, `${config.job_name}: every target needs a cluster label`);
    }
  }
  // The topology's Prometheus is the sample with its targets: the same jobs.
  t.deepEqual(live.map((c) => c.job_name), sample.map((c) => c.job_name));
});

test('promtool test rules: every unit test of the rules passes', async (t) => {
  const { code, output } = await promtool(['test', 'rules', rulesTestFile]);
  t.is(code, 0, output);
  t.regex(output, /SUCCESS/);
});

test('every alert has a CamelCase name, a severity, a summary, a description and a runbook section of its own', async (t) => {
  const alerts = (await rules()).filter((r) => r.alert);
  t.true(alerts.length >= 12, `${alerts.length} alerts`);
  const anchors = new Set([...(await readFile(runbooksFile, 'utf8')).matchAll(/^#{2,3} (.+)$/gm)].map((m) => anchorOf(m[1]!)));
  for (const rule of alerts) {
    const name = rule.alert!;
    t.regex(name, /^Causeway(?:[A-Z][a-z0-9]*)+$/, 'CamelCase, Causeway first');
    t.true(['warning', 'critical'].includes(rule.labels?.severity ?? ''), `${name}: severity is warning or critical`);
    t.truthy(rule.annotations?.summary, `${name}: summary`);
    t.truthy(rule.annotations?.description, `${name}: description`);
    t.regex(rule.annotations?.description ?? '', /\{\{ \$labels\.\w+ \}\}/, `${name}: the description names what is affected`);
    t.is(rule.annotations?.runbook_url, `${runbookBase}#${name.toLowerCase()}`, `${name}: runbook_url`);
    t.true(anchors.has(name.toLowerCase()), `${name}: docs/runbooks.md has a "## ${name}" section`);
  }
});

test('every alert is unit-tested firing, and not firing', async (t) => {
  const alerts = (await rules()).filter((r) => r.alert).map((r) => r.alert!);
  const doc = parse(await readFile(rulesTestFile, 'utf8')) as { tests: Array<{ alert_rule_test?: AlertRuleTest[] }> };
  const cases = doc.tests.flatMap((c) => c.alert_rule_test ?? []);
  for (const alert of alerts) {
    const mine = cases.filter((c) => c.alertname === alert);
    t.true(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${alert}: a case where it fires`);
    t.true(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${alert}: a case where it does not`);
  }
});

test('every metric the rules and the dashboard read is defined in the code, every recording rule they read is in the rules', async (t) => {
  const all = await rules();
  const defined = await definedMetrics();
  const recorded = new Set(all.flatMap((r) => (r.record ? [r.record] : [])));
  const dashboard = JSON.parse(await readFile(dashboardFile, 'utf8')) as { panels: Array<{ targets?: Array<{ expr: string }> }> };
  const exprs = [...all.map((r) => ({ where: r.alert ?? r.record!, expr: r.expr })), ...dashboard.panels.flatMap((p) => (p.targets ?? []).map((x) => ({ where: 'dashboard', expr: x.expr })))];
  let checked = 0;
  for (const { where, expr } of exprs) {
    for (const name of namesIn(expr)) {
      checked += 1;
      t.true(isDefined(name, defined, recorded), `${where}: ${name} is defined nowhere in ${sourceFolders.join(', ')}`);
    }
  }
  t.true(checked > 40, `${checked} names checked`);
});

test('the dashboard is well-formed Grafana JSON whose every query promtool parses', async (t) => {
  const dashboard = JSON.parse(await readFile(dashboardFile, 'utf8')) as {
    schemaVersion: number;
    uid: string;
    panels: Array<{ id: number; type: string; title: string; targets?: Array<{ expr: string; refId: string }> }>;
  };
  t.true(dashboard.schemaVersion >= 36);
  t.truthy(dashboard.uid);
  const ids = dashboard.panels.map((p) => p.id);
  t.is(new Set(ids).size, ids.length, 'panel ids are unique');
  const queries = dashboard.panels.flatMap((p) => p.targets ?? []);
  t.true(queries.length > 20);
  // promtool parses PromQL only inside rules: each query becomes a recording rule, with
  // Grafana's $__rate_interval replaced by a duration.
  const dir = await mkdtemp(join(tmpdir(), 'causeway-dashboard-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'dashboard-queries.yaml');
  const asRules = queries.map((q, i) => `      - record: dashboard_query_${i}\n        expr: ${JSON.stringify(q.expr.replaceAll('$__rate_interval', '5m'))}`);
  await writeFile(file, `groups:\n  - name: dashboard\n    rules:\n${asRules.join('\n')}\n`);
  const { code, output } = await promtool(['check', 'rules', file]);
  t.is(code, 0, output);
});
