import { setFlagsFromString } from 'node:v8';

/**
 * Regular expressions written by users (traffic policy header matches) run on every
 * request, so they must not backtrack: V8's linear-time engine (the `l` flag) runs a
 * pattern in time linear in the input or refuses to compile it. The flag is a V8 option;
 * setting it only enables the `l` flag and changes no other regular expression.
 */
setFlagsFromString('--enable-experimental-regexp-engine');

/** Longest pattern accepted: long enough for any header match, short enough to keep compile cost trivial. */
export const MAX_PATTERN_LENGTH = 256;

/** Why a pattern cannot be used (undefined when it can). */
export function boundedRegexProblem(pattern: string): string | undefined {
  if (pattern.length === 0) return 'empty pattern; omit regex or write one';
  if (pattern.length > MAX_PATTERN_LENGTH) return `pattern is ${pattern.length} characters; at most ${MAX_PATTERN_LENGTH}`;
  try {
    new RegExp(pattern, 'l');
    return undefined;
  } catch (error) {
    const reason = (error as Error).message;
    if (/linear time/i.test(reason)) return 'pattern needs backtracking (back-references or lookahead), which the linear-time engine refuses; rewrite it without them';
    return `not a valid regular expression (${reason})`;
  }
}

/**
 * Compiles a pattern with the linear-time engine, anchored to the whole value (as
 * Envoy's safe_regex does). Throws with {@link boundedRegexProblem}'s reason.
 */
export function compileBoundedRegex(pattern: string): RegExp {
  const problem = boundedRegexProblem(pattern);
  if (problem) throw new Error(`regex ${JSON.stringify(pattern)}: ${problem}`);
  return new RegExp(`^(?:${pattern})$`, 'l');
}
