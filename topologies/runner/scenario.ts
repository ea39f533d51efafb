import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { formatPath } from '../../mesh/index.js';
import type { LoadReport } from '../demo-app/load-client.js';
import { parseComposeDurationMs } from './compose-file.js';
import { TopologyErrorCodes, TopologyFileError } from './errors.js';
import type { RunningTopology } from './running-topology.js';

const duration = z.string().refine((v) => parseComposeDurationMs(v) !== undefined, 'must be a duration such as 500ms, 2s or 1m').transform((v) => parseComposeDurationMs(v)!);
const serviceName = z.string().min(1);
const command = z.array(z.string()).min(1, 'needs at least the program');

/** What a batch of requests must show; shared by `call` and `await`. */
const requirements = {
  minSuccesses: z.number().int().min(0).optional(),
  maxSuccesses: z.number().int().min(0).optional(),
  maxFailures: z.number().int().min(0).optional(),
  /** Every successful reply came from one of these clusters. */
  onlyClusters: z.array(z.string()).optional(),
  /** Each of these clusters answered at least once. */
  seenClusters: z.array(z.string()).optional(),
  /** Every successful reply saw this caller identity (as the sidecar reported it). */
  peerIdentity: z.string().optional(),
};
const requestShape = {
  from: serviceName,
  url: z.string().url(),
  rps: z.number().positive().default(20),
  timeout: duration.default(2000),
  /** Fields every reply's JSON must have to count as a success, e.g. `{ service: echo-a }`. */
  expect: z.record(z.string(), z.string()).optional(),
};

/** A compose network (its subnet) or a service (its addresses), for `partition` and `heal`. */
const partitionPair = z
  .tuple([z.string().min(1, 'names a network or a service'), z.string().min(1, 'names a network or a service')], { error: 'must be a list of two names, each a network or a service' })
  .refine(([a, b]) => a !== b, { message: 'names the same side twice', path: [1] });

/**
 * `heal` with no value (or `all`) removes every fault in force; `{ between }` one
 * partition; `{ on }` the delay and loss on one service.
 */
const healSpec = z.preprocess(
  (v) => (v === null || v === undefined || v === 'all' ? {} : v),
  z
    .strictObject({ between: partitionPair.optional(), on: serviceName.optional() }, { error: 'must be empty or `all` (every fault), { between: [a, b] } or { on: <service> }' })
    .refine((h) => h.between === undefined || h.on === undefined, 'give between or on, not both')
    .transform((h): { between: [string, string] } | { on: string } | 'all' => (h.between ? { between: h.between } : h.on !== undefined ? { on: h.on } : 'all')),
);

const stepSchemas = {
  call: z.strictObject({ ...requestShape, requests: z.number().int().min(1).default(10), ...requirements }),
  load: z.strictObject({
    ...requestShape,
    id: z.string().min(1),
    duration,
    /** The step returns once this many requests succeeded (the load is really flowing), then the load goes on in the background. */
    startedAfter: z.number().int().min(0).default(1),
    startTimeout: duration.default(60_000),
  }),
  await: z.strictObject({ id: z.string().min(1), ...requirements }),
  stop: z.union([serviceName, z.array(serviceName).min(1)]),
  start: z.union([serviceName, z.array(serviceName).min(1)]),
  wait: z
    .strictObject({
      in: serviceName.optional(),
      http: z.string().url().optional(),
      command: command.optional(),
      healthy: serviceName.optional(),
      /** With `command`: keep trying until it exits 0 and its output matches this regular expression. */
      outputMatches: z.string().optional(),
      timeout: duration.default(30_000),
      interval: duration.default(250),
    })
    .refine((w) => [w.http, w.command, w.healthy].filter((x) => x !== undefined).length === 1, 'give exactly one of http, command or healthy')
    .refine((w) => w.healthy !== undefined || w.in !== undefined, '`in` names the service to run the check from')
    .refine((w) => w.outputMatches === undefined || w.command !== undefined, 'outputMatches goes with command'),
  exec: z.strictObject({
    in: serviceName,
    command,
    exitCode: z.number().int().default(0),
    /** A regular expression the combined output must match. */
    outputMatches: z.string().optional(),
    timeout: duration.default(30_000),
    /** Keep the (picked) output under this name, for a later step's `sameAs`. */
    remember: z.string().min(1).optional(),
    /** The (picked) output must equal what an earlier step remembered under this name: a before/after comparison. */
    sameAs: z.string().min(1).optional(),
    /**
     * A regular expression (flags `gm`): `remember` and `sameAs` keep and compare its matches,
     * one per line, instead of the whole output — the parts that must not change.
     */
    pick: z.string().optional(),
  }).refine((e) => e.pick === undefined || e.remember !== undefined || e.sameAs !== undefined, 'pick goes with remember or sameAs'),
  sleep: duration,
  /** Silently drops every packet between two sides (topologies/README.md "Network faults"). */
  partition: z.strictObject({ between: partitionPair }),
  heal: healSpec,
  delay: z.strictObject({ on: serviceName, ms: z.number().int().min(1).max(60_000), jitterMs: z.number().int().min(0).max(60_000).optional() }),
  loss: z.strictObject({ on: serviceName, percent: z.number().gt(0, 'must be above 0').max(100) }),
} as const;

type StepKind = keyof typeof stepSchemas;
export type ScenarioStep = { [K in StepKind]: { kind: K; name: string; spec: z.output<(typeof stepSchemas)[K]> } }[StepKind];

export interface Scenario {
  readonly file: string;
  readonly name: string;
  readonly steps: readonly ScenarioStep[];
  readonly continueOnFailure: boolean;
}

export interface StepResult {
  readonly index: number;
  readonly name: string;
  readonly kind: StepKind;
  readonly status: 'passed' | 'failed' | 'skipped';
  readonly durationMs: number;
  readonly detail: string;
  readonly report?: LoadReport;
}

export interface ScenarioReport {
  readonly scenario: string;
  readonly passed: number;
  readonly failed: number;
  readonly skipped: number;
  readonly steps: readonly StepResult[];
}

export function loadScenarioFile(file: string): Scenario {
  let raw: unknown;
  try {
    raw = parseYaml(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new TopologyFileError(TopologyErrorCodes.scenarioInvalid, file, '', `cannot read: ${(error as Error).message.split('\n')[0]}`);
  }
  return parseScenario(raw, file);
}

export function parseScenario(raw: unknown, file: string): Scenario {
  const fail = (path: string, reason: string): never => {
    throw new TopologyFileError(TopologyErrorCodes.scenarioInvalid, file, path, reason);
  };
  const top = z.strictObject({ name: z.string().optional(), description: z.string().optional(), continueOnFailure: z.boolean().default(false), steps: z.array(z.unknown()).min(1) }).safeParse(raw);
  if (!top.success) {
    const issue = top.error.issues[0]!;
    return fail(formatPath(issue.path), issue.message);
  }
  const steps = top.data.steps.map((entry, i): ScenarioStep => {
    const path = `steps[${i}]`;
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return fail(path, `must be a mapping with one of the keys ${Object.keys(stepSchemas).join(', ')} (and an optional name)`);
    const { name, ...rest } = entry as Record<string, unknown>;
    const kinds = Object.keys(rest);
    if (kinds.length !== 1 || !(kinds[0]! in stepSchemas)) return fail(path, `needs exactly one of ${Object.keys(stepSchemas).join(', ')} (got ${kinds.join(', ') || 'none'})`);
    const kind = kinds[0] as StepKind;
    const parsed = stepSchemas[kind].safeParse(rest[kind]);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      return fail(formatPath(['steps', i, kind, ...issue.path]), issue.message);
    }
    return { kind, name: typeof name === 'string' ? name : describe(kind, parsed.data), spec: parsed.data } as ScenarioStep;
  });
  return { file, name: top.data.name ?? file, steps, continueOnFailure: top.data.continueOnFailure };
}

function describe(kind: StepKind, spec: unknown): string {
  const s = spec as Record<string, unknown>;
  switch (kind) {
    case 'call':
      return `call ${s.url} from ${s.from} ${s.requests}x`;
    case 'load':
      return `start load "${s.id}" on ${s.url} from ${s.from}`;
    case 'await':
      return `await load "${s.id}"`;
    case 'stop':
    case 'start':
      return `${kind} ${[spec].flat().join(', ')}`;
    case 'wait':
      return `wait until ${s.healthy ? `${s.healthy} is healthy` : s.http ? `${s.http} answers from ${s.in}` : `\`${(s.command as string[]).join(' ')}\` succeeds in ${s.in}`}`;
    case 'exec':
      return `exec \`${(s.command as string[]).join(' ')}\` in ${s.in}`;
    case 'sleep':
      return `sleep ${spec} ms`;
    case 'partition': {
      const [a, b] = s.between as [string, string];
      return `partition ${a} from ${b} (silent drops)`;
    }
    case 'heal': {
      const h = spec as z.output<typeof healSpec>;
      return h === 'all' ? 'heal every network fault' : 'between' in h ? `heal the partition between ${h.between[0]} and ${h.between[1]}` : `heal the delay and loss on ${h.on}`;
    }
    case 'delay':
      return `delay ${s.on}'s packets by ${s.ms} ms${s.jitterMs ? ` ± ${s.jitterMs} ms` : ''}`;
    case 'loss':
      return `drop ${s.percent}% of ${s.on}'s packets`;
  }
}

/** The load client, run inside a service: the engine's Causeway CLI (netns: this checkout's under this Node; Docker: the image's). */
function loadClientArgv(run: RunningTopology, spec: { url: string; rps: number; timeout: number; expect?: Record<string, string> | undefined }, amount: string[]): string[] {
  const argv = [...run.cliArgv, 'app', 'load', '--url', spec.url, '--rps', String(spec.rps), '--timeout', `${spec.timeout}ms`, ...amount];
  for (const [k, v] of Object.entries(spec.expect ?? {})) argv.push('--expect', `${k}=${v}`);
  return argv;
}

function parseLoadReport(stdout: string): LoadReport | undefined {
  const line = stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  if (!line) return undefined;
  try {
    return JSON.parse(line) as LoadReport;
  } catch {
    return undefined;
  }
}

/** Checks a load report against the step's requirements; returns the broken ones. */
export function unmetRequirements(report: LoadReport, req: { minSuccesses?: number | undefined; maxSuccesses?: number | undefined; maxFailures?: number | undefined; onlyClusters?: string[] | undefined; seenClusters?: string[] | undefined; peerIdentity?: string | undefined }): string[] {
  const problems: string[] = [];
  if (req.minSuccesses !== undefined && report.successes < req.minSuccesses) problems.push(`${report.successes} successes < required ${req.minSuccesses}`);
  if (req.maxSuccesses !== undefined && report.successes > req.maxSuccesses) problems.push(`${report.successes} successes > allowed ${req.maxSuccesses}`);
  if (req.maxFailures !== undefined && report.failures > req.maxFailures) problems.push(`${report.failures} failures > allowed ${req.maxFailures} (${JSON.stringify(report.failuresBy)})`);
  if (req.onlyClusters) {
    const others = Object.keys(report.byCluster).filter((c) => !req.onlyClusters!.includes(c));
    if (others.length > 0) problems.push(`answers from clusters ${others.join(', ')} (only ${req.onlyClusters.join(', ')} allowed)`);
  }
  for (const c of req.seenClusters ?? []) if (!report.byCluster[c]) problems.push(`no answer from cluster ${c}`);
  if (req.peerIdentity !== undefined) {
    const others = Object.keys(report.byPeerIdentity).filter((p) => p !== req.peerIdentity);
    if (others.length > 0) problems.push(`peer identities ${others.join(', ')} seen (expected ${req.peerIdentity})`);
  }
  return problems;
}

function summary(report: LoadReport): string {
  const failures = report.failures > 0 ? ` (${Object.entries(report.failuresBy).map(([k, v]) => `${k}: ${v}`).join(', ')})` : '';
  const clusters = Object.keys(report.byCluster).length > 0 ? `, by cluster ${JSON.stringify(report.byCluster)}` : '';
  return `${report.successes}/${report.requests} ok, ${report.failures} failed${failures}${clusters}, p99 ${report.latencyMs.p99} ms`;
}

/**
 * Runs each step against a running topology and reports. A failed step stops the
 * scenario (later steps are `skipped`) unless `continueOnFailure` is set.
 */
export async function runScenario(run: RunningTopology, scenario: Scenario, options: { onStep?: (result: StepResult) => void } = {}): Promise<ScenarioReport> {
  const results: StepResult[] = [];
  const background = new Map<string, Promise<{ report?: LoadReport; error?: string }>>();
  const remembered = new Map<string, string>();
  let stopped = false;
  for (const [index, step] of scenario.steps.entries()) {
    if (stopped) {
      const result: StepResult = { index, name: step.name, kind: step.kind, status: 'skipped', durationMs: 0, detail: 'an earlier step failed' };
      results.push(result);
      options.onStep?.(result);
      continue;
    }
    const t0 = Date.now();
    let outcome: { ok: boolean; detail: string; report?: LoadReport };
    try {
      outcome = await runStep(run, step, background, remembered);
    } catch (error) {
      outcome = { ok: false, detail: (error as Error).message };
    }
    const result: StepResult = { index, name: step.name, kind: step.kind, status: outcome.ok ? 'passed' : 'failed', durationMs: Date.now() - t0, detail: outcome.detail, ...(outcome.report ? { report: outcome.report } : {}) };
    results.push(result);
    options.onStep?.(result);
    if (!outcome.ok && !scenario.continueOnFailure) stopped = true;
  }
  await Promise.allSettled(background.values());
  return {
    scenario: scenario.name,
    passed: results.filter((r) => r.status === 'passed').length,
    failed: results.filter((r) => r.status === 'failed').length,
    skipped: results.filter((r) => r.status === 'skipped').length,
    steps: results,
  };
}

/** What `remember` and `sameAs` compare: the matches of `pick`, one per line, or the whole trimmed output. */
function picked(output: string, pick: string | undefined): string {
  if (pick === undefined) return output.trim();
  return [...output.matchAll(new RegExp(pick, 'gm'))].map((m) => m[0].trim()).join('\n');
}

/** The lines one side has and the other lacks, for a failed `sameAs`. */
function lineDifference(before: string, after: string): string {
  const [a, b] = [before.split('\n'), after.split('\n')];
  const gone = a.filter((line) => !b.includes(line));
  const added = b.filter((line) => !a.includes(line));
  return [...gone.map((l) => `- ${l}`), ...added.map((l) => `+ ${l}`)].join('; ').slice(0, 600) || 'the same lines in another order';
}

async function runStep(
  run: RunningTopology,
  step: ScenarioStep,
  background: Map<string, Promise<{ report?: LoadReport; error?: string }>>,
  remembered: Map<string, string>,
): Promise<{ ok: boolean; detail: string; report?: LoadReport }> {
  switch (step.kind) {
    case 'call': {
      const s = step.spec;
      const result = await run.exec(s.from, loadClientArgv(run, s, ['--requests', String(s.requests)]), { timeoutMs: 30_000 + (s.requests / s.rps) * 1000 + s.timeout });
      const report = parseLoadReport(result.stdout);
      if (!report) return { ok: false, detail: `load client failed (exit ${result.exitCode}): ${(result.stderr || result.stdout).trim().slice(-500)}` };
      const problems = unmetRequirements(report, s);
      return { ok: problems.length === 0, detail: problems.length === 0 ? summary(report) : `${problems.join('; ')} — ${summary(report)}`, report };
    }
    case 'load': {
      const s = step.spec;
      if (background.has(s.id)) return { ok: false, detail: `a load named "${s.id}" is already running` };
      // The client's start can take seconds on a loaded machine: wait for its progress
      // lines to show real successes before the next step (e.g. a kill) runs.
      let seen = 0;
      let finished = false;
      let output = '';
      let onSeen: (() => void) | undefined;
      const pending = run
        .exec(s.from, loadClientArgv(run, s, ['--duration', `${s.duration}ms`, '--progress']), {
          timeoutMs: s.duration + s.timeout + s.startTimeout + 30_000,
          onOutput: (chunk) => {
            output = (output + chunk).slice(-4096);
            for (const m of output.matchAll(/^progress \{.*"successes":(\d+).*\}$/gm)) seen = Math.max(seen, Number(m[1]));
            if (seen >= s.startedAfter) onSeen?.();
          },
        })
        .then((result) => {
          finished = true;
          onSeen?.();
          const report = parseLoadReport(result.stdout);
          return report ? { report } : { error: `load client failed (exit ${result.exitCode}): ${result.stderr.replace(/^progress .*\n/gm, '').trim().slice(-500) || result.stdout.slice(-500)}` };
        });
      background.set(s.id, pending);
      if (s.startedAfter > 0) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, s.startTimeout);
          onSeen = () => {
            clearTimeout(timer);
            resolve();
          };
          if (seen >= s.startedAfter) onSeen();
        });
        if (seen < s.startedAfter) return { ok: false, detail: `${finished ? 'the load ended' : `no ${s.startedAfter} successes within ${s.startTimeout} ms`} (${seen} so far): ${output.replace(/^progress .*\n/gm, '').trim().slice(-300)}` };
      }
      return { ok: true, detail: `flowing (${seen} successes so far); runs in the background for ${s.duration} ms` };
    }
    case 'await': {
      const s = step.spec;
      const pending = background.get(s.id);
      if (!pending) return { ok: false, detail: `no load named "${s.id}" was started` };
      const { report, error } = await pending;
      background.delete(s.id);
      if (!report) return { ok: false, detail: error ?? 'no report' };
      const problems = unmetRequirements(report, s);
      return { ok: problems.length === 0, detail: problems.length === 0 ? summary(report) : `${problems.join('; ')} — ${summary(report)}`, report };
    }
    case 'stop': {
      for (const name of [step.spec].flat()) await run.stopService(name);
      return { ok: true, detail: 'stopped' };
    }
    case 'start': {
      for (const name of [step.spec].flat()) await run.startService(name);
      return { ok: true, detail: 'started' };
    }
    case 'wait': {
      const s = step.spec;
      if (s.healthy !== undefined) {
        await run.waitHealthy(s.healthy, s.timeout);
        return { ok: true, detail: 'healthy' };
      }
      const argv = s.http !== undefined ? [...run.cliArgv, 'app', 'probe', '--url', s.http, '--wait', `${s.timeout}ms`] : s.command!;
      const deadline = Date.now() + s.timeout;
      let last = '';
      for (;;) {
        const result = await run.exec(s.in!, argv, { timeoutMs: Math.max(1000, deadline - Date.now() + 2000) });
        const output = `${result.stdout}${result.stderr}`;
        const matches = s.outputMatches === undefined || new RegExp(s.outputMatches).test(output);
        if (result.exitCode === 0 && matches) return { ok: true, detail: 'succeeded' };
        last = result.exitCode === 0 ? `output does not match /${s.outputMatches}/: ${output.trim().slice(-300)}` : `exit ${result.exitCode}: ${output.trim().slice(-300)}`;
        if (Date.now() + s.interval >= deadline) return { ok: false, detail: `still failing after ${s.timeout} ms (${last})` };
        await new Promise((r) => setTimeout(r, s.interval));
      }
    }
    case 'exec': {
      const s = step.spec;
      const result = await run.exec(s.in, s.command, { timeoutMs: s.timeout });
      const output = `${result.stdout}${result.stderr}`;
      if (result.timedOut) return { ok: false, detail: `timed out after ${s.timeout} ms` };
      if (result.exitCode !== s.exitCode) return { ok: false, detail: `exit code ${result.exitCode}, expected ${s.exitCode}: ${output.trim().slice(-300)}` };
      if (s.outputMatches !== undefined && !new RegExp(s.outputMatches).test(output)) return { ok: false, detail: `output does not match /${s.outputMatches}/: ${output.trim().slice(-300)}` };
      const kept = picked(output, s.pick);
      if (s.sameAs !== undefined) {
        const before = remembered.get(s.sameAs);
        if (before === undefined) return { ok: false, detail: `no earlier step remembered "${s.sameAs}"` };
        if (kept !== before) return { ok: false, detail: `differs from "${s.sameAs}": ${lineDifference(before, kept)}` };
      }
      if (s.remember !== undefined) remembered.set(s.remember, kept);
      const lines = kept === '' ? 0 : kept.split('\n').length;
      const compared = s.sameAs !== undefined ? `, the same ${lines} lines as "${s.sameAs}"` : s.remember !== undefined ? `, ${lines} lines remembered as "${s.remember}"` : '';
      return { ok: true, detail: `exit ${result.exitCode}${compared}` };
    }
    case 'sleep': {
      await new Promise((r) => setTimeout(r, step.spec));
      return { ok: true, detail: '' };
    }
    case 'partition':
      return { ok: true, detail: await run.injectFault({ kind: 'partition', between: step.spec.between }) };
    case 'delay':
      return { ok: true, detail: await run.injectFault({ kind: 'delay', ...step.spec }) };
    case 'loss':
      return { ok: true, detail: await run.injectFault({ kind: 'loss', ...step.spec }) };
    case 'heal':
      return { ok: true, detail: await run.healFaults(step.spec) };
  }
}

/** The report as a table, ending with the plain `N passed, N failed, N skipped` line. */
export function formatScenarioReport(report: ScenarioReport): string {
  const lines = [`scenario: ${report.scenario}`];
  for (const r of report.steps) {
    const mark = r.status === 'passed' ? 'ok  ' : r.status === 'failed' ? 'FAIL' : 'skip';
    lines.push(`  ${mark} ${String(r.index + 1).padStart(2)}. ${r.name} (${r.durationMs} ms)${r.detail ? ` — ${r.detail}` : ''}`);
  }
  lines.push(`${report.passed} passed, ${report.failed} failed, ${report.skipped} skipped`);
  return `${lines.join('\n')}\n`;
}
