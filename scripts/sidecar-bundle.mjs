#!/usr/bin/env node
// Builds the sidecar's single-file bundle, dist/sidecar.mjs, from cli/sidecar-main.ts:
// esbuild, every dependency inlined, minified (names kept: errors name themselves by
// their class). A sidecar runs from it instead of through tsx: no TypeScript loader, no
// module graph of a few hundred files, only the code the sidecar imports.
//
//   node scripts/sidecar-bundle.mjs            build now
//   node scripts/sidecar-bundle.mjs --check    build only when missing or stale
//
// bin/causeway.js (`causeway sidecar`) and bench/mesh.ts call ensureSidecarBundle(), so a
// fresh checkout builds it on first use and an edited source rebuilds it; the Dockerfile
// builds it in its build stage. The bundle sits one folder below the checkout root, like
// the sources, so `new URL('../api/', import.meta.url)` (the .proto files) and
// `../package.json` resolve the same from it.
import { mkdirSync, readFileSync, renameSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
export const SIDECAR_ENTRY = join(ROOT, 'cli', 'sidecar-main.ts');
export const SIDECAR_BUNDLE = join(ROOT, 'dist', 'sidecar.mjs');
const SELF = fileURLToPath(import.meta.url);

/** Lists the bundle's inputs (relative to ROOT) next to it, for the staleness check. */
function inputsFileOf(outfile) {
  return outfile.replace(/\.mjs$/, '.inputs.json');
}

/** SIDECAR_NODE_FLAGS, one line, next to the bundle: for a shell wrapper (the Dockerfile's). */
function flagsFileOf(outfile) {
  return outfile.replace(/\.mjs$/, '.node-flags');
}

/**
 * Node's built-in modules reach the bundle through `require`, not `import`: an ESM import
 * of a built-in builds its namespace from every export, which runs the lazy getters —
 * `import … from 'node:http'` alone loads undici (for `http.WebSocket`) and web streams,
 * which a sidecar never uses (12 MB of RSS on bare Node, ~2 MB measured in a started
 * sidecar). Each `import … from 'node:x'` becomes a tiny CommonJS module of the bundle,
 * `module.exports = require('node:x')` (the banner's `require`).
 */
const requireBuiltins = {
  name: 'require-builtins',
  setup(build) {
    build.onResolve({ filter: /^[a-z_/:]+$/ }, async (args) => {
      if (args.namespace === 'builtin' || args.kind === 'require-call' || args.kind === 'require-resolve') return undefined;
      const name = args.path.replace(/^node:/, '');
      if (!builtinModules.includes(name)) return undefined;
      return { path: `node:${name}`, namespace: 'builtin' };
    });
    build.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};

/**
 * Builds `entry` into `outfile` (written to a temporary name and renamed, so a process
 * starting meanwhile sees the old or the new bundle, never half of one).
 */
export async function buildBundle({ entry = SIDECAR_ENTRY, outfile = SIDECAR_BUNDLE } = {}) {
  const { build, stop } = await import('esbuild');
  // An input edited while this runs must leave the bundle stale: date it from the start.
  const started = new Date();
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node22.12',
    minify: true,
    // mesh/errors.ts names each error by `new.target.name`; log lines name classes too.
    keepNames: true,
    // Only read with --enable-source-maps; without it Node ignores the comment.
    sourcemap: 'linked',
    // CommonJS dependencies (grpc-js, protobufjs, pino…) require() Node's built-ins.
    banner: { js: "import { createRequire as __causewayCreateRequire } from 'node:module'; const require = __causewayCreateRequire(import.meta.url);" },
    plugins: [requireBuiltins],
    metafile: true,
    write: false,
    logLevel: 'warning',
  });
  // esbuild's service process would otherwise outlive the build (and a launcher's execve).
  await stop();
  mkdirSync(dirname(outfile), { recursive: true });
  const tmp = `.${process.pid}.tmp`;
  for (const file of result.outputFiles) writeFileSync(file.path + tmp, file.contents);
  const inputs = [...Object.keys(result.metafile.inputs), relative(ROOT, SELF)];
  writeFileSync(inputsFileOf(outfile) + tmp, JSON.stringify(inputs));
  writeFileSync(flagsFileOf(outfile) + tmp, `${SIDECAR_NODE_FLAGS.join(' ')}\n`);
  utimesSync(outfile + tmp, started, started);
  // The bundle last, so that it never pairs with an older inputs list.
  for (const file of result.outputFiles.filter((f) => f.path !== outfile)) renameSync(file.path + tmp, file.path);
  renameSync(inputsFileOf(outfile) + tmp, inputsFileOf(outfile));
  renameSync(flagsFileOf(outfile) + tmp, flagsFileOf(outfile));
  renameSync(outfile + tmp, outfile);
  return outfile;
}

/** Why `outfile` needs building, or undefined when it is newer than every input it was built from. */
export function staleness(outfile = SIDECAR_BUNDLE) {
  let built;
  let inputs;
  try {
    built = statSync(outfile).mtimeMs;
    inputs = JSON.parse(readFileSync(inputsFileOf(outfile), 'utf8'));
  } catch {
    return 'not built';
  }
  for (const input of inputs) {
    let mtime;
    try {
      mtime = statSync(join(ROOT, input)).mtimeMs;
    } catch {
      return `${input} is gone`;
    }
    if (mtime > built) return `${input} changed`;
  }
  return undefined;
}

/** The path of an up-to-date bundle of `entry`, building it first when it is missing or stale. */
export async function ensureBundle({ entry = SIDECAR_ENTRY, outfile = SIDECAR_BUNDLE } = {}) {
  if (staleness(outfile) === undefined) return outfile;
  return buildBundle({ entry, outfile });
}

export const ensureSidecarBundle = () => ensureBundle();

/**
 * Node flags a sidecar runs with (bin/causeway.js, bench/mesh.ts, the Dockerfile's
 * wrapper reads dist/sidecar.node-flags): V8 heap settings for a small steady-state RSS,
 * measured in proxy/README.md "Memory".
 */
export const SIDECAR_NODE_FLAGS = [];

/**
 * SIDECAR_NODE_FLAGS without those the operator set (NODE_OPTIONS, or `node` flags
 * given to the launcher, `execArgv`), followed by execArgv: an explicit setting wins.
 */
export function sidecarNodeArgs(execArgv = process.execArgv, nodeOptions = process.env.NODE_OPTIONS ?? '') {
  const given = new Set([...execArgv, ...nodeOptions.split(/\s+/)].map((f) => f.split('=')[0].replaceAll('_', '-')));
  return [...SIDECAR_NODE_FLAGS.filter((f) => !given.has(f.split('=')[0])), ...execArgv];
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const check = process.argv.includes('--check');
  const why = check ? staleness() : 'asked to';
  if (why === undefined) {
    process.stdout.write(`${relative(ROOT, SIDECAR_BUNDLE)} is up to date\n`);
  } else {
    const started = performance.now();
    await buildBundle();
    process.stdout.write(`built ${relative(ROOT, SIDECAR_BUNDLE)} (${why}) in ${Math.round(performance.now() - started)} ms\n`);
  }
}
