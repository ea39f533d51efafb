import { z } from 'zod';
import { ValidationError, type ValidationIssue } from './errors.js';
import { clusterNameProblem, dnsLabelProblem, dnsNameProblem } from './labels.js';
import { parseSpiffeId } from './spiffe-id.js';

/**
 * Formats a value path as `links[1].etcd.endpoints[0]`: the one path format of every
 * error about a config file, manifest, policy, routes file or catalog value.
 */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out.length === 0 ? String(part) : `.${String(part)}`;
  }
  return out;
}

/** The issues of a zod error, each path formatted by {@link formatPath} (under `prefix`, when given). */
export function issuesOf(error: z.ZodError, prefix: readonly PropertyKey[] = []): ValidationIssue[] {
  return error.issues.map((issue) => ({ path: formatPath([...prefix, ...issue.path]), message: issue.message }));
}

/** Parses `value` with `schema`, throwing a {@link ValidationError} whose message names each bad path. */
export function validate<S extends z.ZodType>(schema: S, value: unknown, source: string, code: string): z.output<S> {
  const result = schema.safeParse(value);
  if (!result.success) throw new ValidationError(code, source, issuesOf(result.error));
  return result.data;
}

// Reusable field schemas. Each refusal message says what a good value looks like.
export const dnsLabel = z.string().superRefine((v, ctx) => {
  const problem = dnsLabelProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});
export const clusterName = z.string().superRefine((v, ctx) => {
  const problem = clusterNameProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});
export const dnsName = z.string().superRefine((v, ctx) => {
  const problem = dnsNameProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});
export const spiffeIdText = z.string().superRefine((v, ctx) => {
  try {
    parseSpiffeId(v);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
  }
});
export const port = z.number({ error: 'not a port number' }).int('port must be an integer').min(1, 'port must be 1-65535').max(65535, 'port must be 1-65535');
export const portOrZero = z.number().int().min(0, 'port must be 0-65535').max(65535, 'port must be 0-65535');
/** A host name or IP address (no port, no scheme). */
export const host = z.string().min(1, 'empty host').max(253).regex(/^[A-Za-z0-9.:_-]+$/, 'not a host name or IP address');
export const url = z.string().superRefine((v, ctx) => {
  try {
    const parsed = new URL(v);
    if (!['http:', 'https:'].includes(parsed.protocol)) ctx.addIssue({ code: 'custom', message: 'not an http(s) URL' });
  } catch {
    ctx.addIssue({ code: 'custom', message: 'not a URL' });
  }
});

const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `500ms`, `15s`, `5m`, `24h`, `30d` into milliseconds; throws on anything else. */
export function parseDurationMs(text: string): number {
  const match = DURATION.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not a duration; use a number with ms, s, m, h or d (e.g. 15s)`);
  return Math.round(Number(match[1]) * (UNIT_MS[match[2] ?? 's'] ?? 1000));
}

/** A duration written as `15s` / `5m` or as a number of milliseconds; always yields milliseconds. */
export const durationMs = z
  .union([z.number().int().nonnegative(), z.string()])
  .transform((v, ctx) => {
    if (typeof v === 'number') return v;
    try {
      return parseDurationMs(v);
    } catch (error) {
      ctx.addIssue({ code: 'custom', message: (error as Error).message });
      return z.NEVER;
    }
  });
