import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServiceSpec } from './compose-file.js';
import { TopologyErrorCodes, TopologyFileError } from './errors.js';

/**
 * What an `image:` means on a host without Docker: the image's ENTRYPOINT and CMD, and the
 * programs inside it, each mapped to a local program. A service's PATH starts with a
 * folder of small scripts named like the image's programs, so `causeway`, `etcd` and
 * `etcdctl` in commands and healthchecks run the local ones.
 */
export interface ImageMapping {
  readonly kind: 'causeway' | 'etcd' | 'prometheus';
  readonly entrypoint: readonly string[];
  readonly command: readonly string[];
  /** Program name inside the image → the shell command line that runs it here. */
  readonly programs: Readonly<Record<string, string>>;
  /** Absolute paths inside the image → program name (e.g. `/usr/local/bin/etcd` → `etcd`). */
  readonly paths: Readonly<Record<string, string>>;
}

export const CHECKOUT_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** `causeway`, `causeway:dev`, `registry.example/team/causeway:1.2` — any tag runs this checkout. */
const CAUSEWAY_IMAGE = /^(?:[^/]+\/)*causeway(?::[\w.-]+)?(?:@sha256:[a-f0-9]+)?$/;
/** The official etcd images: quay.io/coreos/etcd and gcr.io/etcd-development/etcd, any tag. */
const ETCD_IMAGE = /^(?:quay\.io\/coreos|gcr\.io\/etcd-development)\/etcd(?::[\w.-]+)?(?:@sha256:[a-f0-9]+)?$/;
/** The official Prometheus images: prom/prometheus (Docker Hub) and quay.io/prometheus/prometheus, any tag. */
const PROMETHEUS_IMAGE = /^(?:(?:docker\.io\/)?prom|quay\.io\/prometheus)\/prometheus(?::[\w.-]+)?(?:@sha256:[a-f0-9]+)?$/;

export const SupportedImages = ['causeway[:TAG] (any registry path ending in /causeway)', 'quay.io/coreos/etcd:TAG', 'gcr.io/etcd-development/etcd:TAG', 'prom/prometheus:TAG', 'quay.io/prometheus/prometheus:TAG'] as const;

function which(program: string, override: string | undefined): string {
  if (override) return override;
  try {
    return execFileSync('sh', ['-c', `command -v ${program}`], { encoding: 'utf8' }).trim() || program;
  } catch {
    return program;
  }
}

export function imageMappingFor(image: string): ImageMapping | undefined {
  if (CAUSEWAY_IMAGE.test(image)) {
    // process.execPath is the Node (>= 22.12) running this runner; bin/causeway.js would
    // otherwise re-check the version on every start.
    const cli = `exec ${shellQuote(process.execPath)} ${shellQuote(join(CHECKOUT_ROOT, 'bin', 'causeway.js'))} "$@"`;
    // The image is node:24-slim: `node` itself is there too (cheap healthchecks use it).
    return {
      kind: 'causeway',
      entrypoint: ['causeway'],
      command: ['--help'],
      programs: { causeway: cli, node: `exec ${shellQuote(process.execPath)} "$@"` },
      paths: { '/usr/local/bin/causeway': 'causeway', '/usr/local/bin/node': 'node' },
    };
  }
  if (ETCD_IMAGE.test(image)) {
    const etcd = which('etcd', process.env.CAUSEWAY_ETCD_BIN);
    const etcdctl = which('etcdctl', process.env.CAUSEWAY_ETCDCTL_BIN);
    return {
      kind: 'etcd',
      entrypoint: [],
      command: ['/usr/local/bin/etcd'],
      programs: { etcd: `exec ${shellQuote(etcd)} "$@"`, etcdctl: `ETCDCTL_API=\${ETCDCTL_API:-3} exec ${shellQuote(etcdctl)} "$@"` },
      paths: { '/usr/local/bin/etcd': 'etcd', '/usr/local/bin/etcdctl': 'etcdctl' },
    };
  }
  if (PROMETHEUS_IMAGE.test(image)) {
    const prometheus = which('prometheus', process.env.CAUSEWAY_PROMETHEUS_BIN);
    const promtool = which('promtool', process.env.CAUSEWAY_PROMTOOL_BIN);
    // The image's ENTRYPOINT and CMD, paths included: a compose file written for the image
    // runs unchanged (a volume at /prometheus and a config under /etc/prometheus).
    return {
      kind: 'prometheus',
      entrypoint: ['/bin/prometheus'],
      command: ['--config.file=/etc/prometheus/prometheus.yml', '--storage.tsdb.path=/prometheus'],
      programs: { prometheus: `exec ${shellQuote(prometheus)} "$@"`, promtool: `exec ${shellQuote(promtool)} "$@"` },
      paths: { '/bin/prometheus': 'prometheus', '/bin/promtool': 'promtool' },
    };
  }
  return undefined;
}

/** Checks every service's image up front, so a run never starts half a topology. */
export function checkImages(file: string, services: Iterable<ServiceSpec>): void {
  for (const service of services) {
    if (!imageMappingFor(service.image)) {
      throw new TopologyFileError(
        TopologyErrorCodes.unsupported,
        file,
        `services.${service.name}.image`,
        `no local mapping for image "${service.image}"; the runner knows ${SupportedImages.join(', ')}`,
      );
    }
  }
}

/** The argv a container of `service` would run, with in-image paths of mapped programs rewritten. */
export function argvFor(service: ServiceSpec, mapping: ImageMapping): string[] {
  const entrypoint = service.entrypoint ?? mapping.entrypoint;
  // As in Docker: overriding the entrypoint drops the image's default command.
  const command = service.command ?? (service.entrypoint !== undefined ? [] : mapping.command);
  const argv = [...entrypoint, ...command];
  if (argv.length > 0 && mapping.paths[argv[0]!] !== undefined) argv[0] = mapping.paths[argv[0]!]!;
  return argv;
}

/** Writes the image's program scripts into `dir` (put first on the service's PATH). */
export function writeProgramScripts(dir: string, mapping: ImageMapping): void {
  mkdirSync(dir, { recursive: true });
  for (const [name, line] of Object.entries(mapping.programs)) {
    const file = join(dir, name);
    writeFileSync(file, `#!/bin/sh\n${line}\n`);
    chmodSync(file, 0o755);
  }
}

export function shellQuote(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}
