import { z } from 'zod';
import { ErrorCodes, ValidationError, type ValidationIssue } from '../errors.js';
import { configFileContent, parseYamlDocuments, parseYamlWithSchema } from './load.js';
import { ClusterConfig } from './schemas.js';

/**
 * A kind of file a command reads (cluster config, workload config, services manifest…):
 * how `causeway config check` validates it and `causeway config schema` describes it.
 * The parts that own the kinds define them; the CLI lists them all (mesh knows only its own).
 */
export interface FileKind {
  /** The `--kind` name: `cluster`, `workload`, `service`… */
  readonly name: string;
  /** What it is and which command reads it, e.g. "workload config (causeway sidecar --config)". */
  readonly summary: string;
  /** The schema of one document of the file; `causeway config schema` prints it as JSON Schema. */
  readonly schema: z.ZodType;
  /** Values of a top-level `kind:` key (any case) that name this kind, for manifests that carry one. */
  readonly kindValues?: readonly string[];
  /** Validates the file's text as this kind exactly as the command that reads it does; throws {@link ValidationError}. */
  check(text: string, source: string): unknown;
}

/** The JSON Schema of a file kind, generated from its zod schema (never hand-kept). */
export function fileKindJsonSchema(kind: FileKind): Record<string, unknown> {
  return z.toJSONSchema(kind.schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
}

/** The keys a file kind accepts at the top level (of any alternative, for a union of document shapes). */
export function topLevelKeys(kind: FileKind): ReadonlySet<string> {
  const keys = new Set<string>();
  const visit = (schema: Record<string, unknown>) => {
    for (const key of Object.keys((schema.properties as object | undefined) ?? {})) keys.add(key);
    for (const option of [...((schema.anyOf as object[] | undefined) ?? []), ...((schema.oneOf as object[] | undefined) ?? [])]) visit(option as Record<string, unknown>);
  };
  visit(fileKindJsonSchema(kind));
  return keys;
}

/** How a file was checked: as the kind asked for, or as the kind its keys show. */
export interface FileCheck {
  readonly kind: FileKind;
  readonly detected: boolean;
  readonly value: unknown;
}

interface Fit {
  readonly kind: FileKind;
  /** Top-level keys of the file this kind does not accept. */
  readonly unknownKeys: readonly string[];
  readonly issues: readonly ValidationIssue[];
  readonly value?: unknown;
}

function fitOf(kind: FileKind, keys: readonly string[], text: string, source: string): Fit {
  const accepted = topLevelKeys(kind);
  const unknownKeys = keys.filter((key) => !accepted.has(key));
  try {
    return { kind, unknownKeys, issues: [], value: kind.check(text, source) };
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    return { kind, unknownKeys, issues: error.issues };
  }
}

function kindList(kinds: readonly FileKind[]): string {
  return kinds.map((k) => `${k.name} (${k.summary})`).join(', ');
}

/**
 * Checks a file as `kindName`, or, without it, as the one kind its top-level keys show: a
 * `kind:` key naming one, else the only kind that has every key (of several, the only one
 * the file is valid as). A file that fits no kind, or several, is refused with the kinds
 * listed, which `--kind` to try, and the errors of the closest kind (fewest keys it does
 * not have, then fewest errors) — not the errors of every kind.
 */
export function checkFileKind(kinds: readonly FileKind[], text: string, source: string, kindName?: string): FileCheck {
  if (kindName !== undefined) {
    const kind = kinds.find((k) => k.name === kindName);
    if (!kind) throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: '', message: `there is no kind "${kindName}"; the kinds are ${kindList(kinds)}` }]);
    return { kind, detected: false, value: kind.check(text, source) };
  }
  // The first document decides (manifests may hold several); empty, null and bad YAML are refused here as every kind refuses them.
  const first = parseYamlDocuments(text, source, { what: `one of the kinds of file \`causeway config check --kind\` takes: ${kinds.map((k) => k.name).join(', ')}` })[0]!.value;
  if (typeof first !== 'object' || first === null || Array.isArray(first)) {
    throw new ValidationError(ErrorCodes.configInvalid, source, [
      { path: '', message: `the file holds ${Array.isArray(first) ? 'a list' : `a ${typeof first}`}, not a mapping; every kind of file is a YAML mapping: ${kindList(kinds)}` },
    ]);
  }
  const record = first as Record<string, unknown>;
  if (typeof record.kind === 'string') {
    const named = kinds.find((k) => k.kindValues?.includes((record.kind as string).toLowerCase()));
    if (named) return { kind: named, detected: true, value: named.check(text, source) };
  }
  const keys = Object.keys(record);
  const fits = kinds
    .map((kind) => fitOf(kind, keys, text, source))
    .sort((a, b) => a.unknownKeys.length - b.unknownKeys.length || a.issues.length - b.issues.length);
  const best = fits[0]!;
  const candidates = fits.filter((f) => f.unknownKeys.length === 0);
  const valid = candidates.filter((f) => f.issues.length === 0);
  if (valid.length === 1) return { kind: valid[0]!.kind, detected: true, value: valid[0]!.value };
  // The one kind with every key the file has: its errors are the file's, as its command would report them.
  if (candidates.length === 1) throw new ValidationError(ErrorCodes.configInvalid, source, best.issues);
  const tied = candidates.length > 1 ? candidates : fits.filter((f) => f.unknownKeys.length === best.unknownKeys.length && f.issues.length === best.issues.length);
  const everyKindsKeys = new Set(kinds.flatMap((k) => [...topLevelKeys(k)]));
  const strangers = keys.filter((key) => !everyKindsKeys.has(key));
  if (best.unknownKeys.length === keys.length) {
    throw new ValidationError(ErrorCodes.configInvalid, source, [
      { path: '', message: `not a kind of file causeway reads: no kind has any of its top-level keys (${keys.join(', ')}); the kinds are ${kindList(kinds)}; \`causeway config schema --kind <kind>\` lists a kind's keys` },
    ]);
  }
  const lead =
    best.unknownKeys.length === 0
      ? `could be ${tied.map((f) => f.kind.name).join(' or ')} (each has all its top-level keys${best.issues.length === 0 ? ' and accepts it' : `); checked as the closest, ${best.kind.name} (${best.kind.summary}`})`
      : `not clearly one kind of file (${strangers.length > 0 ? `no kind has the key${strangers.length > 1 ? 's' : ''} ${strangers.join(', ')}` : 'no kind has all its top-level keys'}); checked as the closest, ${best.kind.name} (${best.kind.summary})`;
  const issues = best.issues.length > 0 ? best.issues : best.unknownKeys.map((key) => ({ path: key, message: `not a key of a ${best.kind.name} file` }));
  const choose = tied.length > 1 ? `say which with ${tied.map((f) => `--kind ${f.kind.name}`).join(' or ')}` : 'if it is another kind, say which with --kind';
  throw new ValidationError(ErrorCodes.configInvalid, source, [
    { path: '', message: lead },
    ...issues,
    { path: '', message: `${choose} (kinds: ${kinds.map((k) => k.name).join(', ')})` },
  ]);
}

/** The cluster config: `causeway controller`, `gateway`, `federation`, `service apply`… `--config`. */
export const ClusterFileKind: FileKind = {
  name: 'cluster',
  summary: 'cluster config: --config of causeway controller, gateway, federation, service, policy, workload',
  schema: ClusterConfig,
  check: (text, source) => parseYamlWithSchema(ClusterConfig, text, source, configFileContent('cluster')),
};
