import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { TopologyErrorCodes, TopologyFileError } from './errors.js';
import { parseIpv4Cidr, parseIpv4 } from '../../mesh/ipv4.js';

/** The normalized compose model the runner executes: only what the supported subset can say. */
export interface ComposeProject {
  readonly file: string;
  readonly dir: string;
  /** Compose's project name: the folder name, lower-case, letters and digits only (or `-p`). */
  readonly name: string;
  readonly services: ReadonlyMap<string, ServiceSpec>;
  readonly networks: ReadonlyMap<string, NetworkSpec>;
  readonly volumes: ReadonlySet<string>;
}

export interface NetworkSpec {
  readonly name: string;
  /** From `ipam.config[0].subnet`; assigned by the runner when absent. */
  readonly subnet?: string;
}

export type DependencyCondition = 'service_started' | 'service_healthy' | 'service_completed_successfully';

export interface ServiceNetwork {
  readonly ipv4Address?: string;
  readonly aliases: readonly string[];
}

export interface HealthcheckSpec {
  /** The argv to run in the service (CMD-SHELL becomes `sh -c`). */
  readonly argv: readonly string[];
  readonly intervalMs: number;
  readonly timeoutMs: number;
  readonly retries: number;
  readonly startPeriodMs: number;
}

export interface VolumeMount {
  readonly kind: 'bind' | 'volume';
  /** Absolute host path for binds; the volume name for named volumes. */
  readonly source: string;
  readonly target: string;
  readonly readOnly: boolean;
}

export interface ServiceSpec {
  readonly name: string;
  readonly image: string;
  readonly command?: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly environment: Readonly<Record<string, string>>;
  /** Empty when the service shares another's namespace. */
  readonly networks: ReadonlyMap<string, ServiceNetwork>;
  /** `network_mode: "service:<name>"`: runs in that service's network namespace, like a pod. */
  readonly sharesNetworkOf?: string;
  readonly dependsOn: ReadonlyMap<string, DependencyCondition>;
  readonly healthcheck?: HealthcheckSpec;
  readonly volumes: readonly VolumeMount[];
  readonly workingDir?: string;
  readonly hostname: string;
  readonly stopSignal: NodeJS.Signals;
  readonly stopGraceMs: number;
}

const TOP_LEVEL_KEYS = ['version', 'services', 'networks', 'volumes'];
const SERVICE_KEYS = [
  'image', 'command', 'entrypoint', 'environment', 'networks', 'network_mode', 'depends_on', 'healthcheck',
  'volumes', 'restart', 'working_dir', 'hostname', 'container_name', 'stop_signal', 'stop_grace_period', 'labels', 'init', 'dns',
];
const NETWORK_KEYS = ['driver', 'ipam', 'labels'];
const HEALTHCHECK_KEYS = ['test', 'interval', 'timeout', 'retries', 'start_period', 'disable'];
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** The subset, as listed in topologies/README.md; exported for the docs test. */
export const SupportedKeys = { topLevel: TOP_LEVEL_KEYS, service: SERVICE_KEYS, network: NETWORK_KEYS, healthcheck: HEALTHCHECK_KEYS } as const;

export interface LoadComposeOptions {
  /** Overrides the project name (compose's `-p`). */
  projectName?: string;
  /** Variables for `${VAR}` interpolation; defaults to the process environment plus `.env` beside the file. */
  env?: Readonly<Record<string, string | undefined>>;
}

/** Reads, interpolates and validates a compose file against the supported subset. */
export function loadComposeFile(file: string, options: LoadComposeOptions = {}): ComposeProject {
  const absolute = resolve(file);
  let text: string;
  try {
    text = readFileSync(absolute, 'utf8');
  } catch (error) {
    throw new TopologyFileError(TopologyErrorCodes.notFound, file, '', `cannot read: ${(error as Error).message}`);
  }
  const dir = dirname(absolute);
  const env = options.env ?? { ...readDotEnv(join(dir, '.env')), ...process.env };
  return parseCompose(text, { file: absolute, dir, env, projectName: options.projectName });
}

export function parseCompose(
  text: string,
  context: { file: string; dir: string; env: Readonly<Record<string, string | undefined>>; projectName?: string | undefined },
): ComposeProject {
  const fail = (path: string, reason: string, code: string = TopologyErrorCodes.fileInvalid): never => {
    throw new TopologyFileError(code, context.file, path, reason);
  };
  let raw: unknown;
  try {
    raw = parseYaml(text);
  } catch (error) {
    fail('', `not valid YAML: ${(error as Error).message.split('\n')[0]}`);
  }
  if (!isRecord(raw)) fail('', 'a compose file is a mapping with a `services` key');
  const doc = interpolate(raw, context.env, '', fail) as Record<string, unknown>;
  checkKeys(doc, '', TOP_LEVEL_KEYS, fail, true);
  if (!isRecord(doc.services) || Object.keys(doc.services).length === 0) fail('services', 'at least one service is required');

  const networks = new Map<string, NetworkSpec>();
  const declaredNetworks = doc.networks === undefined || doc.networks === null ? {} : doc.networks;
  if (!isRecord(declaredNetworks)) fail('networks', 'must be a mapping of network names');
  for (const [name, value] of Object.entries(declaredNetworks as Record<string, unknown>)) {
    const path = `networks.${name}`;
    if (!NAME.test(name)) fail(path, 'network names are letters, digits, `_`, `.` and `-`');
    const spec = asRecord(value ?? {}, path, fail);
    checkKeys(spec, path, NETWORK_KEYS, fail);
    if (spec.driver !== undefined && spec.driver !== 'bridge') fail(`${path}.driver`, `only "bridge" is supported (got ${JSON.stringify(spec.driver)})`, TopologyErrorCodes.unsupported);
    let subnet: string | undefined;
    if (spec.ipam !== undefined) {
      const ipam = asRecord(spec.ipam, `${path}.ipam`, fail);
      checkKeys(ipam, `${path}.ipam`, ['driver', 'config'], fail);
      if (ipam.driver !== undefined && ipam.driver !== 'default') fail(`${path}.ipam.driver`, 'only the default IPAM driver is supported', TopologyErrorCodes.unsupported);
      if (ipam.config !== undefined) {
        if (!Array.isArray(ipam.config) || ipam.config.length > 1) fail(`${path}.ipam.config`, 'must be a list with one entry');
        const entry = (ipam.config as unknown[])[0];
        if (entry !== undefined) {
          const e = asRecord(entry, `${path}.ipam.config[0]`, fail);
          checkKeys(e, `${path}.ipam.config[0]`, ['subnet'], fail);
          if (typeof e.subnet !== 'string' || !parseIpv4Cidr(e.subnet)) fail(`${path}.ipam.config[0].subnet`, 'must be an IPv4 CIDR such as 10.77.1.0/24');
          const cidr = parseIpv4Cidr(e.subnet as string)!;
          if (cidr.prefix < 8 || cidr.prefix > 29) fail(`${path}.ipam.config[0].subnet`, 'prefix length must be 8-29');
          subnet = e.subnet as string;
        }
      }
    }
    networks.set(name, subnet === undefined ? { name } : { name, subnet });
  }

  const volumes = new Set<string>();
  if (doc.volumes !== undefined && doc.volumes !== null) {
    if (!isRecord(doc.volumes)) fail('volumes', 'must be a mapping of volume names');
    for (const [name, value] of Object.entries(doc.volumes as Record<string, unknown>)) {
      if (!NAME.test(name)) fail(`volumes.${name}`, 'volume names are letters, digits, `_`, `.` and `-`');
      if (value !== null && value !== undefined && !(isRecord(value) && Object.keys(value).length === 0)) {
        fail(`volumes.${name}`, 'only plain named volumes (`name: {}`) are supported; they become temporary folders', TopologyErrorCodes.unsupported);
      }
      volumes.add(name);
    }
  }

  const services = new Map<string, ServiceSpec>();
  const rawServices = doc.services as Record<string, unknown>;
  let usesDefaultNetwork = false;
  for (const [name, value] of Object.entries(rawServices)) {
    const path = `services.${name}`;
    if (!NAME.test(name)) fail(path, 'service names are letters, digits, `_`, `.` and `-`');
    if (!isRecord(value)) fail(path, 'must be a mapping');
    const s = value as Record<string, unknown>;
    checkKeys(s, path, SERVICE_KEYS, fail);
    if (typeof s.image !== 'string' || s.image.length === 0) fail(`${path}.image`, 'every service needs an image (`build` is not supported)');
    if (s.restart !== undefined && s.restart !== 'no' && s.restart !== false) {
      fail(`${path}.restart`, `only "no" is supported (got ${JSON.stringify(s.restart)})`, TopologyErrorCodes.unsupported);
    }
    if (s.init !== undefined && typeof s.init !== 'boolean') fail(`${path}.init`, 'must be true or false');
    // Every namespace of the runner already resolves through its own loopback (a sidecar's
    // DNS there answers mesh names); Docker needs it said: its resolver then asks 127.0.0.1
    // inside the container's network namespace.
    if (s.dns !== undefined && !(s.dns === '127.0.0.1' || (Array.isArray(s.dns) && s.dns.length === 1 && s.dns[0] === '127.0.0.1'))) {
      fail(`${path}.dns`, `only 127.0.0.1 is supported (the namespace's own loopback; got ${JSON.stringify(s.dns)})`, TopologyErrorCodes.unsupported);
    }

    let sharesNetworkOf: string | undefined;
    const serviceNetworks = new Map<string, ServiceNetwork>();
    if (s.network_mode !== undefined) {
      const mode = typeof s.network_mode === 'string' ? /^service:(.+)$/.exec(s.network_mode) : null;
      if (!mode) fail(`${path}.network_mode`, `only "service:<name>" is supported (got ${JSON.stringify(s.network_mode)})`, TopologyErrorCodes.unsupported);
      sharesNetworkOf = mode![1]!;
      if (!(sharesNetworkOf in rawServices)) fail(`${path}.network_mode`, `no service named "${sharesNetworkOf}"`);
      if (s.networks !== undefined) fail(`${path}.networks`, 'cannot be combined with network_mode');
      if (s.hostname !== undefined) fail(`${path}.hostname`, 'cannot be combined with network_mode');
    } else if (s.networks === undefined) {
      usesDefaultNetwork = true;
      serviceNetworks.set('default', { aliases: [] });
    } else if (Array.isArray(s.networks)) {
      s.networks.forEach((n, i) => {
        if (typeof n !== 'string') fail(`${path}.networks[${i}]`, 'must be a network name');
        serviceNetworks.set(n as string, { aliases: [] });
      });
    } else if (isRecord(s.networks)) {
      for (const [net, cfg] of Object.entries(s.networks)) {
        const npath = `${path}.networks.${net}`;
        const c = asRecord(cfg ?? {}, npath, fail);
        checkKeys(c, npath, ['ipv4_address', 'aliases'], fail);
        if (c.ipv4_address !== undefined && (typeof c.ipv4_address !== 'string' || parseIpv4(c.ipv4_address) === undefined)) fail(`${npath}.ipv4_address`, 'must be an IPv4 address');
        const aliases = c.aliases === undefined ? [] : c.aliases;
        if (!Array.isArray(aliases) || !aliases.every((a) => typeof a === 'string' && NAME.test(a))) fail(`${npath}.aliases`, 'must be a list of host names');
        serviceNetworks.set(net, c.ipv4_address === undefined ? { aliases: aliases as string[] } : { ipv4Address: c.ipv4_address as string, aliases: aliases as string[] });
      }
    } else {
      fail(`${path}.networks`, 'must be a list or a mapping of network names');
    }
    for (const net of serviceNetworks.keys()) {
      if (net === 'default') continue;
      if (!networks.has(net)) fail(`${path}.networks.${net}`, `network "${net}" is not declared under the top-level \`networks\``);
    }

    const dependsOn = new Map<string, DependencyCondition>();
    if (s.depends_on !== undefined) {
      if (Array.isArray(s.depends_on)) {
        s.depends_on.forEach((d, i) => {
          if (typeof d !== 'string') fail(`${path}.depends_on[${i}]`, 'must be a service name');
          dependsOn.set(d as string, 'service_started');
        });
      } else if (isRecord(s.depends_on)) {
        for (const [dep, cfg] of Object.entries(s.depends_on)) {
          const dpath = `${path}.depends_on.${dep}`;
          if (!isRecord(cfg)) fail(dpath, 'must be a mapping with `condition`');
          checkKeys(cfg as Record<string, unknown>, dpath, ['condition'], fail);
          const condition = (cfg as Record<string, unknown>).condition ?? 'service_started';
          if (condition !== 'service_started' && condition !== 'service_healthy' && condition !== 'service_completed_successfully') {
            fail(`${dpath}.condition`, 'must be service_started, service_healthy or service_completed_successfully');
          }
          dependsOn.set(dep, condition as DependencyCondition);
        }
      } else {
        fail(`${path}.depends_on`, 'must be a list or a mapping of service names');
      }
      for (const dep of dependsOn.keys()) {
        if (!(dep in rawServices)) fail(`${path}.depends_on.${dep}`, `no service named "${dep}"`);
        if (dep === name) fail(`${path}.depends_on.${dep}`, 'a service cannot depend on itself');
      }
    }
    // Compose starts the service whose namespace is shared first; make that explicit.
    if (sharesNetworkOf !== undefined && !dependsOn.has(sharesNetworkOf)) dependsOn.set(sharesNetworkOf, 'service_started');

    const spec: ServiceSpec = {
      name,
      image: s.image as string,
      ...(s.command === undefined || s.command === null ? {} : { command: commandLine(s.command, `${path}.command`, fail) }),
      ...(s.entrypoint === undefined || s.entrypoint === null ? {} : { entrypoint: commandLine(s.entrypoint, `${path}.entrypoint`, fail) }),
      environment: environmentOf(s.environment, `${path}.environment`, fail),
      networks: serviceNetworks,
      ...(sharesNetworkOf === undefined ? {} : { sharesNetworkOf }),
      dependsOn,
      ...healthcheckOf(s.healthcheck, `${path}.healthcheck`, fail),
      volumes: volumesOf(s.volumes, `${path}.volumes`, context.dir, volumes, fail),
      ...(s.working_dir === undefined ? {} : { workingDir: absolutePath(s.working_dir, `${path}.working_dir`, fail) }),
      hostname: typeof s.hostname === 'string' ? s.hostname : typeof s.container_name === 'string' ? s.container_name : name,
      stopSignal: signalOf(s.stop_signal, `${path}.stop_signal`, fail),
      stopGraceMs: s.stop_grace_period === undefined ? 10_000 : durationOf(s.stop_grace_period, `${path}.stop_grace_period`, fail),
    };
    services.set(name, spec);
  }
  if (usesDefaultNetwork && !networks.has('default')) networks.set('default', { name: 'default' });
  checkNoCycles(services, fail);
  for (const spec of services.values()) {
    for (const [dep, condition] of spec.dependsOn) {
      if (condition === 'service_healthy' && services.get(dep)!.healthcheck === undefined) {
        fail(`services.${spec.name}.depends_on.${dep}.condition`, `service_healthy needs a healthcheck on "${dep}"`);
      }
    }
  }
  for (const spec of services.values()) {
    if (spec.sharesNetworkOf !== undefined && services.get(spec.sharesNetworkOf)!.sharesNetworkOf !== undefined) {
      fail(`services.${spec.name}.network_mode`, `"${spec.sharesNetworkOf}" itself shares another service's namespace; point at that one`);
    }
  }
  const name = context.projectName ?? projectNameOf(context.dir);
  if (!/^[a-z0-9][a-z0-9_-]*$/.test(name)) fail('', `project name "${name}" must be lower-case letters, digits, "-" and "_"`);
  return { file: context.file, dir: context.dir, name, services, networks, volumes };
}

/** Compose's rule: the folder's name, lower-cased, with anything but letters and digits dropped. */
export function projectNameOf(dir: string): string {
  return basename(dir).toLowerCase().replace(/[^a-z0-9_-]/g, '');
}

type Fail = (path: string, reason: string, code?: string) => never;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function asRecord(value: unknown, path: string, fail: Fail): Record<string, unknown> {
  if (!isRecord(value)) fail(path, 'must be a mapping');
  return value as Record<string, unknown>;
}

function checkKeys(value: Record<string, unknown>, path: string, allowed: readonly string[], fail: Fail, allowExtensions = false): void {
  for (const key of Object.keys(value)) {
    if (allowed.includes(key)) continue;
    if (allowExtensions && key.startsWith('x-')) continue;
    fail(path ? `${path}.${key}` : key, `not supported by the causeway topology runner (supported here: ${allowed.join(', ')}; see topologies/README.md)`, TopologyErrorCodes.unsupported);
  }
}

/** `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?message}`, `$VAR`, and `$$` for a literal `$`. */
export function interpolateText(text: string, env: Readonly<Record<string, string | undefined>>, path: string, fail: Fail): string {
  return text.replace(/\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g, (match, dollar: string, braced?: string, op?: string, arg?: string, bare?: string) => {
    if (dollar === '$') return '$';
    const name = braced ?? bare;
    if (name === undefined) return match;
    const value = env[name];
    if (op === undefined) return value ?? '';
    const unsetOrEmpty = op.startsWith(':') ? value === undefined || value === '' : value === undefined;
    if (op.endsWith('-')) return unsetOrEmpty ? (arg ?? '') : value!;
    if (unsetOrEmpty) fail(path, `variable ${name} is required: ${arg || 'not set'}`);
    return value!;
  });
}

function interpolate(value: unknown, env: Readonly<Record<string, string | undefined>>, path: string, fail: Fail): unknown {
  if (typeof value === 'string') return interpolateText(value, env, path, fail);
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, `${path}[${i}]`, fail));
  if (isRecord(value)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = interpolate(v, env, path ? `${path}.${k}` : k, fail);
    return out;
  }
  return value;
}

function readDotEnv(file: string): Record<string, string> {
  if (!existsSync(file)) return {};
  const out: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (m && !line.trimStart().startsWith('#')) out[m[1]!] = m[2]!.replace(/^(['"])(.*)\1$/, '$2');
  }
  return out;
}

/** Splits a command string the way compose does (POSIX shell words, no expansion). */
export function shellWords(text: string): string[] {
  const words: string[] = [];
  let current = '';
  let inWord = false;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quote === "'") {
      if (ch === "'") quote = undefined;
      else current += ch;
    } else if (quote === '"') {
      if (ch === '"') quote = undefined;
      else if (ch === '\\' && i + 1 < text.length && '"\\$`'.includes(text[i + 1]!)) current += text[++i];
      else current += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      inWord = true;
    } else if (ch === '\\' && i + 1 < text.length) {
      current += text[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(current);
      current = '';
      inWord = false;
    } else {
      current += ch;
      inWord = true;
    }
  }
  if (quote) throw new Error(`unterminated ${quote} quote`);
  if (inWord) words.push(current);
  return words;
}

function commandLine(value: unknown, path: string, fail: Fail): string[] {
  if (typeof value === 'string') {
    try {
      return shellWords(value);
    } catch (error) {
      fail(path, (error as Error).message);
    }
  }
  if (Array.isArray(value) && value.every((v) => typeof v === 'string' || typeof v === 'number')) return value.map(String);
  return fail(path, 'must be a string or a list of strings');
}

function environmentOf(value: unknown, path: string, fail: Fail): Record<string, string> {
  const out: Record<string, string> = {};
  if (value === undefined || value === null) return out;
  if (Array.isArray(value)) {
    value.forEach((entry, i) => {
      if (typeof entry !== 'string') fail(`${path}[${i}]`, 'must be "NAME=value"');
      const eq = (entry as string).indexOf('=');
      // `NAME` alone passes the runner's own value through, as compose does.
      if (eq < 0) {
        const passed = process.env[entry as string];
        if (passed !== undefined) out[entry as string] = passed;
      } else out[(entry as string).slice(0, eq)] = (entry as string).slice(eq + 1);
    });
    return out;
  }
  if (isRecord(value)) {
    for (const [k, v] of Object.entries(value)) {
      if (v === null || v === undefined) {
        const passed = process.env[k];
        if (passed !== undefined) out[k] = passed;
      } else if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = String(v);
      else fail(`${path}.${k}`, 'must be a string, number or boolean');
    }
    return out;
  }
  return fail(path, 'must be a list or a mapping');
}

function healthcheckOf(value: unknown, path: string, fail: Fail): { healthcheck?: HealthcheckSpec } {
  if (value === undefined || value === null) return {};
  if (!isRecord(value)) fail(path, 'must be a mapping');
  const h = value as Record<string, unknown>;
  checkKeys(h, path, HEALTHCHECK_KEYS, fail);
  if (h.disable === true) return {};
  let argv: string[];
  if (typeof h.test === 'string') argv = ['sh', '-c', h.test];
  else if (Array.isArray(h.test) && h.test.every((v) => typeof v === 'string') && h.test.length > 0) {
    const [kind, ...rest] = h.test as string[];
    if (kind === 'NONE') return {};
    if (kind === 'CMD' && rest.length > 0) argv = rest;
    else if (kind === 'CMD-SHELL' && rest.length === 1) argv = ['sh', '-c', rest[0]!];
    else return fail(`${path}.test`, 'must be ["CMD", arg...], ["CMD-SHELL", "command"], ["NONE"] or a string');
  } else return fail(`${path}.test`, 'must be ["CMD", arg...], ["CMD-SHELL", "command"], ["NONE"] or a string');
  const retries = h.retries ?? 3;
  if (typeof retries !== 'number' || !Number.isInteger(retries) || retries < 1) fail(`${path}.retries`, 'must be an integer at least 1');
  return {
    healthcheck: {
      argv,
      intervalMs: h.interval === undefined ? 30_000 : durationOf(h.interval, `${path}.interval`, fail),
      timeoutMs: h.timeout === undefined ? 30_000 : durationOf(h.timeout, `${path}.timeout`, fail),
      retries: retries as number,
      startPeriodMs: h.start_period === undefined ? 0 : durationOf(h.start_period, `${path}.start_period`, fail),
    },
  };
}

/** Compose durations: `1m30s`, `500ms`, `10s`, `2h`, `1.5s`. */
export function parseComposeDurationMs(text: string): number | undefined {
  const units: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (!/^(\d+(\.\d+)?(us|ms|s|m|h))+$/.test(text)) return undefined;
  let total = 0;
  for (const m of text.matchAll(/(\d+(?:\.\d+)?)(us|ms|s|m|h)/g)) total += Number(m[1]) * units[m[2]!]!;
  return Math.round(total);
}

function durationOf(value: unknown, path: string, fail: Fail): number {
  const ms = typeof value === 'string' ? parseComposeDurationMs(value) : undefined;
  if (ms === undefined) return fail(path, `must be a duration such as 1s, 500ms or 1m30s (got ${JSON.stringify(value)})`);
  return ms;
}

function signalOf(value: unknown, path: string, fail: Fail): NodeJS.Signals {
  if (value === undefined) return 'SIGTERM';
  const allowed = ['SIGTERM', 'SIGINT', 'SIGQUIT', 'SIGKILL', 'SIGHUP', 'SIGUSR1', 'SIGUSR2'];
  if (typeof value !== 'string' || !allowed.includes(value)) return fail(path, `must be one of ${allowed.join(', ')}`);
  return value as NodeJS.Signals;
}

function absolutePath(value: unknown, path: string, fail: Fail): string {
  if (typeof value !== 'string' || !isAbsolute(value)) return fail(path, 'must be an absolute path');
  return value;
}

function volumesOf(value: unknown, path: string, dir: string, declared: ReadonlySet<string>, fail: Fail): VolumeMount[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) return fail(path, 'must be a list');
  return value.map((entry, i): VolumeMount => {
    const vpath = `${path}[${i}]`;
    let source: string | undefined;
    let target: string;
    let readOnly = false;
    let type: string | undefined;
    if (typeof entry === 'string') {
      const parts = entry.split(':');
      if (parts.length === 1) return fail(vpath, 'anonymous volumes are not supported; name the volume (`name:/path`)', TopologyErrorCodes.unsupported);
      if (parts.length > 3) return fail(vpath, 'must be SOURCE:TARGET[:ro|rw]');
      [source, target] = parts as [string, string];
      if (parts[2] !== undefined) {
        if (parts[2] !== 'ro' && parts[2] !== 'rw') return fail(vpath, `mode must be ro or rw (got "${parts[2]}")`, TopologyErrorCodes.unsupported);
        readOnly = parts[2] === 'ro';
      }
    } else if (isRecord(entry)) {
      checkKeys(entry, vpath, ['type', 'source', 'target', 'read_only'], fail);
      type = entry.type as string | undefined;
      if (type !== 'bind' && type !== 'volume') return fail(`${vpath}.type`, 'must be bind or volume', TopologyErrorCodes.unsupported);
      if (typeof entry.source !== 'string' || typeof entry.target !== 'string') return fail(vpath, 'needs source and target');
      source = entry.source;
      target = entry.target;
      readOnly = entry.read_only === true;
    } else {
      return fail(vpath, 'must be a string or a mapping');
    }
    if (!isAbsolute(target) || target === '/' || target.split('/').includes('..')) return fail(vpath, `target must be an absolute path below / (got "${target}")`);
    const isPath = source.startsWith('/') || source.startsWith('.') || source.startsWith('~');
    if (type === 'bind' || (type === undefined && isPath)) {
      if (source.startsWith('~')) source = join(process.env.HOME ?? '/root', source.slice(1));
      const host = resolve(dir, source);
      if (!existsSync(host)) return fail(vpath, `bind source ${host} does not exist`);
      statSync(host);
      return { kind: 'bind', source: host, target, readOnly };
    }
    if (!declared.has(source)) return fail(vpath, `volume "${source}" is not declared under the top-level \`volumes\``);
    return { kind: 'volume', source, target, readOnly };
  });
}

function checkNoCycles(services: ReadonlyMap<string, ServiceSpec>, fail: Fail): void {
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, chain: string[]): void => {
    const s = state.get(name);
    if (s === 'done') return;
    if (s === 'visiting') fail(`services.${name}.depends_on`, `dependency cycle: ${[...chain, name].join(' -> ')}`);
    state.set(name, 'visiting');
    for (const dep of services.get(name)!.dependsOn.keys()) visit(dep, [...chain, name]);
    state.set(name, 'done');
  };
  for (const name of services.keys()) visit(name, []);
}
