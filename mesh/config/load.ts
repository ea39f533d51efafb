import { readFileSync } from 'node:fs';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { z } from 'zod';
import { recordConfigOrigin } from '../config-origin.js';
import { CausewayError, ErrorCodes, ValidationError } from '../errors.js';
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

/** Parses YAML text with any schema; a syntax error names its line and column. */
export function parseYamlWithSchema<S extends z.ZodType>(schema: S, text: string, source: string): z.output<S> {
  let value: unknown;
  try {
    value = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (error) {
    const where = error instanceof YAMLParseError && error.linePos ? `:${error.linePos[0].line}:${error.linePos[0].col}` : '';
    const first = (error as Error).message.split('\n')[0];
    throw new ValidationError(ErrorCodes.configInvalid, `${source}${where}`, [{ path: '', message: `not valid YAML (${first})` }]);
  }
  if (value === null || value === undefined) {
    throw new ValidationError(ErrorCodes.configInvalid, source, [{ path: '', message: 'the file is empty' }]);
  }
  return parseWithSchema(schema, value, source);
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
export function loadYamlWithSchema<S extends z.ZodType>(schema: S, file: string): z.output<S> {
  const value = parseYamlWithSchema(schema, readConfigText(file), file);
  recordConfigOrigin(value, file); // errors met later can name the setting and the file
  return value;
}

/** Validates an already-parsed config object; errors name each bad path. */
export function parseConfig<K extends ConfigKind>(kind: K, value: unknown, source = `${kind} config`): z.output<(typeof ConfigSchemas)[K]> {
  return parseWithSchema(ConfigSchemas[kind], value, source) as z.output<(typeof ConfigSchemas)[K]>;
}

/** Parses YAML text of a config kind. */
export function parseConfigText<K extends ConfigKind>(kind: K, text: string, source: string): z.output<(typeof ConfigSchemas)[K]> {
  return parseYamlWithSchema(ConfigSchemas[kind], text, source) as z.output<(typeof ConfigSchemas)[K]>;
}

/** Reads, parses and validates a YAML config file. */
export function loadConfigFile<K extends ConfigKind>(kind: K, file: string): z.output<(typeof ConfigSchemas)[K]> {
  return loadYamlWithSchema(ConfigSchemas[kind], file) as z.output<(typeof ConfigSchemas)[K]>;
}

/** The JSON Schema of a config kind, generated from the zod schema (never hand-kept). */
export function configJsonSchema(kind: ConfigKind): object {
  return z.toJSONSchema(ConfigSchemas[kind], { io: 'input', unrepresentable: 'any' });
}
