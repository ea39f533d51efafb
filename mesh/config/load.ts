import { readFileSync } from 'node:fs';
import { isScalar, parseAllDocuments, parseDocument, YAMLParseError, type Document } from 'yaml';
import { z } from 'zod';
import { recordConfigOrigin } from '../config-origin.js';
import { CausewayError, ErrorCodes, ValidationError, type ValidationIssue } from '../errors.js';
import { issuesOf } from '../validation.js';
import { ConfigSchemas, type ConfigKind } from './schemas.js';

/** Deep-freezes a plain value so config cannot be changed after validation. */
export function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** Validates a parsed value with any schema; errors name each bad path; the result is frozen. */
export function parseWithSchema<S extends z.ZodType>(schema: S, value: unknown, source: string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new ValidationError(ErrorCodes.configInvalid, source, issuesOf(result.error));
  return deepFreeze(result.data);
}

/**
 * What a file should hold, for the message about a file that holds nothing: `what` names
 * it ("a cluster config"), `kind` is its `causeway config schema --kind` name.
 */
export interface FileContent {
  readonly what: string;
  readonly kind?: string;
}

const A_MAPPING: FileContent = { what: 'a YAML mapping' };

/** A kind's {@link FileContent}: "a <kind> config", whose keys `causeway config schema --kind <kind>` lists. */
export function configFileContent(kind: string, what = `a ${kind} config`): FileContent {
  return { what, kind };
}

function shouldHold(expected: FileContent): string {
  const keys = expected.kind === undefined ? '' : `; \`causeway config schema --kind ${expected.kind}\` lists its keys`;
  return expected === A_MAPPING ? 'it should hold a YAML mapping' : `it should hold ${expected.what} (a YAML mapping${keys})`;
}

/** The issue of a file with no content: `empty` (nothing, or comments only) or `null` (`null`, `~`). */
export function nothingInFileIssue(found: 'empty' | 'null', expected: FileContent = A_MAPPING): ValidationIssue {
  const message = found === 'empty' ? `the file is empty; ${shouldHold(expected)}` : `the file holds null (\`null\` or \`~\`), not a YAML mapping; ${shouldHold(expected)}`;
  return { path: '', message };
}

function syntaxError(document: Document.Parsed, source: string): ValidationError {
  const error = document.errors[0]!;
  const where = error instanceof YAMLParseError && error.linePos ? `:${error.linePos[0].line}:${error.linePos[0].col}` : '';
  return new ValidationError(ErrorCodes.configInvalid, `${source}${where}`, [{ path: '', message: `not valid YAML (${error.message.split('\n')[0]})` }]);
}

const YAML_OPTIONS = { prettyErrors: true, uniqueKeys: true } as const;

/** Nothing written: no node at all, or the empty node a bare `---` or comments leave. */
function isEmptyDocument(document: Document.Parsed): boolean {
  const contents = document.contents;
  return contents === null || (isScalar(contents) && contents.range !== undefined && contents.range !== null && contents.range[0] === contents.range[1]);
}

/**
 * Parses the one YAML document of a file. A syntax error names its line and column; a file
 * that is empty, or holds null, says so and what it should hold instead.
 */
export function parseYamlValue(text: string, source: string, expected: FileContent = A_MAPPING): unknown {
  const document = parseDocument(text, YAML_OPTIONS);
  if (document.errors.length > 0) throw syntaxError(document, source);
  if (isEmptyDocument(document)) throw new ValidationError(ErrorCodes.configInvalid, source, [nothingInFileIssue('empty', expected)]);
  const value: unknown = document.toJS();
  if (value === null || value === undefined) throw new ValidationError(ErrorCodes.configInvalid, source, [nothingInFileIssue('null', expected)]);
  return value;
}

/** One document of a multi-document YAML file; `source` is `file#index` when the file has several. */
export interface YamlDocumentValue {
  readonly value: unknown;
  readonly source: string;
}

/**
 * Parses a file of `---`-separated YAML documents (manifests), skipping empty and null
 * ones; a file with nothing else is refused as {@link parseYamlValue} refuses it.
 */
export function parseYamlDocuments(text: string, file: string, expected: FileContent = A_MAPPING): YamlDocumentValue[] {
  const documents = parseAllDocuments(text, YAML_OPTIONS);
  const list = Array.isArray(documents) ? documents : [];
  const out: YamlDocumentValue[] = [];
  let nulls = 0;
  list.forEach((document, index) => {
    const source = list.length > 1 ? `${file}#${index}` : file;
    if (document.errors.length > 0) throw syntaxError(document, source);
    if (isEmptyDocument(document)) return;
    const value: unknown = document.toJS();
    if (value === null || value === undefined) nulls += 1;
    else out.push({ value, source });
  });
  if (out.length === 0) throw new ValidationError(ErrorCodes.configInvalid, file, [nothingInFileIssue(nulls > 0 ? 'null' : 'empty', expected)]);
  return out;
}

/** Parses YAML text with any schema; a syntax error names its line and column. */
export function parseYamlWithSchema<S extends z.ZodType>(schema: S, text: string, source: string, expected: FileContent = A_MAPPING): z.output<S> {
  return parseWithSchema(schema, parseYamlValue(text, source, expected), source);
}

/** Reads a file for a loader; a missing or unreadable file is a config error that says so. */
export function readConfigText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    throw new CausewayError(ErrorCodes.configUnreadable, `cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; check the path`, {
      cause: error,
    });
  }
}

/** Reads, parses and validates a YAML file with any schema (service specs, policies, routes…). */
export function loadYamlWithSchema<S extends z.ZodType>(schema: S, file: string, expected: FileContent = A_MAPPING): z.output<S> {
  const value = parseYamlWithSchema(schema, readConfigText(file), file, expected);
  recordConfigOrigin(value, file); // errors met later can name the setting and the file
  return value;
}

/** Validates an already-parsed config object; errors name each bad path. */
export function parseConfig<K extends ConfigKind>(kind: K, value: unknown, source = `${kind} config`): z.output<(typeof ConfigSchemas)[K]> {
  return parseWithSchema(ConfigSchemas[kind], value, source) as z.output<(typeof ConfigSchemas)[K]>;
}

/** Parses YAML text of a config kind. */
export function parseConfigText<K extends ConfigKind>(kind: K, text: string, source: string): z.output<(typeof ConfigSchemas)[K]> {
  return parseYamlWithSchema(ConfigSchemas[kind], text, source, configFileContent(kind)) as z.output<(typeof ConfigSchemas)[K]>;
}

/** Reads, parses and validates a YAML config file. */
export function loadConfigFile<K extends ConfigKind>(kind: K, file: string): z.output<(typeof ConfigSchemas)[K]> {
  return loadYamlWithSchema(ConfigSchemas[kind], file, configFileContent(kind)) as z.output<(typeof ConfigSchemas)[K]>;
}

/** The JSON Schema of a config kind, generated from the zod schema (never hand-kept). */
export function configJsonSchema(kind: ConfigKind): object {
  return z.toJSONSchema(ConfigSchemas[kind], { io: 'input', unrepresentable: 'any' });
}
