/**
 * Where a loaded config value came from — the file and the path inside it — so an error
 * met much later (etcd unreachable) can say which setting to check:
 * `links[1].etcd.endpoints in east.yaml`. Config values are frozen after validation, so
 * object identity is stable for the life of the process.
 */
export interface ConfigOrigin {
  readonly file: string;
  /** `links[1].etcd`; empty for the file's top level. */
  readonly path: string;
}

const origins = new WeakMap<object, ConfigOrigin>();

/** Records `value` and every object inside it as coming from `file`. */
export function recordConfigOrigin(value: unknown, file: string, path = ''): void {
  if (value === null || typeof value !== 'object' || origins.has(value)) return;
  origins.set(value, { file, path });
  if (Array.isArray(value)) value.forEach((item, i) => recordConfigOrigin(item, file, `${path}[${i}]`));
  else for (const [key, item] of Object.entries(value)) recordConfigOrigin(item, file, path === '' ? key : `${path}.${key}`);
}

export function configOriginOf(value: object): ConfigOrigin | undefined {
  return origins.get(value);
}

/** `etcd.endpoints in east.yaml` for a setting of a loaded config value; `fallback` when it was not loaded from a file. */
export function settingName(value: object, key: string, fallback: string): string {
  const origin = origins.get(value);
  if (!origin) return fallback;
  return `${origin.path === '' ? key : `${origin.path}.${key}`} in ${origin.file}`;
}
