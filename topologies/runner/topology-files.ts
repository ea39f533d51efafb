import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { TopologyErrorCodes, TopologyFileError } from './errors.js';
import { CHECKOUT_ROOT } from './image-map.js';

const COMPOSE_NAMES = ['compose.yaml', 'compose.yml', 'docker-compose.yaml', 'docker-compose.yml'];

/** The folder holding this checkout's topologies (`topologies/<name>/compose.yaml`). */
export const TOPOLOGIES_DIR = join(CHECKOUT_ROOT, 'topologies');

/**
 * A topology argument: a compose file, a folder holding one, or the name of a folder
 * under topologies/. Returns the compose file and its scenario file (if any).
 */
export function resolveTopology(nameOrPath: string): { composeFile: string; scenarioFile?: string } {
  const candidates = [resolve(nameOrPath), ...(/^[a-z0-9][a-z0-9_-]*$/.test(nameOrPath) ? [join(TOPOLOGIES_DIR, nameOrPath)] : [])];
  for (const candidate of candidates) {
    if (!existsSync(candidate)) continue;
    const isDir = statSync(candidate).isDirectory();
    const composeFile = isDir ? COMPOSE_NAMES.map((n) => join(candidate, n)).find((f) => existsSync(f)) : candidate;
    if (!composeFile) continue;
    const dir = isDir ? candidate : resolve(composeFile, '..');
    const scenario = ['scenario.yaml', 'scenario.yml'].map((n) => join(dir, n)).find((f) => existsSync(f));
    return scenario ? { composeFile, scenarioFile: scenario } : { composeFile };
  }
  throw new TopologyFileError(TopologyErrorCodes.notFound, nameOrPath, '', `no compose file found (looked for a file, a folder with compose.yaml, and ${join(TOPOLOGIES_DIR, nameOrPath)})`);
}
