import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, relative } from 'node:path';
import { UsageError } from '../../mesh/index.js';

/** The /16 that every topology's address plan (subnets, fixed addresses, configs, scenarios) uses. */
export const TOPOLOGY_ADDRESS_BLOCK = '10.77';
const ADDRESS = /\b10\.77\.(\d{1,3})\.(\d{1,3})\b/g;
/** The same inside a regular expression of a scenario (`outputMatches: "10\\.77\\.50\\.20"`). */
const ESCAPED_PREFIX = /\b10(\\+\.)77\1/g;
const TEXT_FILES = new Set(['.yaml', '.yml', '.json', '.env', '.txt', '']);

/** Checks an `a.b` block (the first two octets of a private 10.x /16). */
export function parseAddressBlock(text: string): string {
  const m = /^10\.(\d{1,3})$/.exec(text);
  if (!m || Number(m[1]) > 255) throw new UsageError(`--subnet-base must be the first two octets of a 10.x.0.0/16 block, such as 10.178 (got "${text}")`);
  return text;
}

export interface RelocatedTopology {
  readonly composeFile: string;
  readonly scenarioFile?: string;
  /** Removes the copy. */
  remove(): void;
}

/**
 * Copies a topology's folder (compose file, scenario, config) to a temporary one with every
 * 10.77.x.y address moved to `<block>.x.y`. Docker's networks are bridges in the host's
 * own routing table, so two runs at once — two engines, two checkouts — need their
 * networks in different blocks; in network namespaces (netns) nothing reaches the host's
 * table and the copy is never needed.
 */
export function relocateTopology(composeFile: string, scenarioFile: string | undefined, block: string): RelocatedTopology {
  const source = dirname(composeFile);
  const copy = mkdtempSync(join(tmpdir(), `causeway-topology-${basename(source)}-`));
  const target = join(copy, basename(source));
  cpSync(source, target, { recursive: true });
  const rewrite = (file: string) => {
    if (!TEXT_FILES.has(extname(file))) return;
    const text = readFileSync(file, 'utf8');
    const second = block.split('.')[1]!;
    const moved = text.replace(ADDRESS, (_all, c: string, d: string) => `${block}.${c}.${d}`).replace(ESCAPED_PREFIX, (_all, dot: string) => `10${dot}${second}${dot}`);
    if (moved !== text) writeFileSync(file, moved);
  };
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else rewrite(path);
    }
  };
  walk(target);
  let scenario: string | undefined;
  if (scenarioFile !== undefined) {
    const inside = relative(source, scenarioFile);
    if (!inside.startsWith('..')) scenario = join(target, inside);
    else {
      scenario = join(copy, basename(scenarioFile));
      cpSync(scenarioFile, scenario);
      rewrite(scenario);
    }
  }
  return {
    composeFile: join(target, relative(source, composeFile)),
    ...(scenario !== undefined ? { scenarioFile: scenario } : {}),
    remove: () => rmSync(copy, { recursive: true, force: true }),
  };
}
