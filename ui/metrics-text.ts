import { UiError, UiErrorCodes } from './errors.js';

/** One sample of the Prometheus text exposition format (what every component's /metrics serves). */
export interface MetricSample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*/;

function parseValue(text: string, where: string): number {
  if (text === '+Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  const value = Number(text);
  if (text === '' || Number.isNaN(value)) throw new UiError(UiErrorCodes.metricsText, `${where}: "${text}" is not a sample value`);
  return value;
}

function parseLine(line: string, where: string): MetricSample {
  const name = NAME.exec(line)?.[0];
  if (!name) throw new UiError(UiErrorCodes.metricsText, `${where}: no metric name`);
  let rest = line.slice(name.length);
  const labels: Record<string, string> = {};
  if (rest.startsWith('{')) {
    rest = rest.slice(1);
    for (;;) {
      rest = rest.trimStart();
      if (rest.startsWith('}')) {
        rest = rest.slice(1);
        break;
      }
      const label = LABEL.exec(rest)?.[0];
      if (!label || !rest.slice(label.length).startsWith('="')) throw new UiError(UiErrorCodes.metricsText, `${where}: bad label at "${rest.slice(0, 40)}"`);
      rest = rest.slice(label.length + 2);
      let value = '';
      for (let i = 0; ; i++) {
        const c = rest[i];
        if (c === undefined) throw new UiError(UiErrorCodes.metricsText, `${where}: unterminated value of label ${label}`);
        if (c === '"') {
          rest = rest.slice(i + 1);
          break;
        }
        if (c === '\\') {
          const next = rest[++i];
          value += next === 'n' ? '\n' : (next ?? '');
        } else value += c;
      }
      labels[label] = value;
      rest = rest.trimStart();
      if (rest.startsWith(',')) rest = rest.slice(1);
      else if (!rest.startsWith('}')) throw new UiError(UiErrorCodes.metricsText, `${where}: expected , or } after label ${label}`);
    }
  }
  const [value, timestamp, extra] = rest.trim().split(/\s+/);
  if (extra !== undefined || (timestamp !== undefined && !/^-?\d+$/.test(timestamp))) throw new UiError(UiErrorCodes.metricsText, `${where}: unexpected "${rest.trim()}" after the labels`);
  return { name, labels, value: parseValue(value ?? '', where) };
}

/**
 * Parses the text format (version 0.0.4) into samples; `# HELP`/`# TYPE` and blank lines
 * are skipped. A malformed line fails the whole parse, naming the line: a target that
 * serves something else is reported, not half-read.
 */
export function parseMetricsText(text: string, source = 'metrics'): MetricSample[] {
  const samples: MetricSample[] = [];
  const lines = text.split('\n');
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    samples.push(parseLine(line, `${source} line ${i + 1}`));
  }
  return samples;
}
