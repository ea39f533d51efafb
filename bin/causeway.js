#!/usr/bin/env node
// Entry point of the `causeway` command. Causeway needs Node >= 22.12; when started by an
// older system Node, re-run under the Node 24 that `npm ci` installed into node_modules.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  const local = join(root, 'node_modules', 'node', 'bin', 'node');
  if (!existsSync(local)) {
    process.stderr.write(`causeway: error: Node ${process.versions.node} is too old (need >= 22.12); run npm ci in ${root} or install Node 24\n`);
    process.exit(1);
  }
  const result = spawnSync(local, process.argv.slice(1), { stdio: 'inherit' });
  process.exit(result.status ?? 1);
}
const { register } = await import('tsx/esm/api');
register();
const { run } = await import('../cli/main.ts');
const code = await run(process.argv.slice(2));
if (code !== 0) process.exit(code);
