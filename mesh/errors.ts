/**
 * Every error Causeway raises carries a stable `code` (for logs, metrics and
 * callers to match on), a message that says what to do, and an optional `cause`.
 * Transient conditions set `retryable` so retry policies can read it.
 */
export class CausewayError extends Error {
  readonly code: string;
  readonly retryable: boolean;

  constructor(code: string, message: string, options: { cause?: unknown; retryable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.retryable = options.retryable ?? false;
  }
}

/** A name (SNI, SPIFFE ID, DNS name, etcd key) that does not parse. */
export class InvalidNameError extends CausewayError {
  readonly input: string;
  constructor(code: string, input: string, reason: string) {
    super(code, `${describeInput(input)}: ${reason}`);
    this.input = input;
  }
}

/** A value (config file, etcd value, API message) that fails validation; `issues` name the paths. */
export class ValidationError extends CausewayError {
  readonly issues: readonly ValidationIssue[];
  constructor(code: string, source: string, issues: readonly ValidationIssue[]) {
    super(code, `${source}: ${issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ')}`);
    this.issues = issues;
  }
}

export interface ValidationIssue {
  /** e.g. `links[1].etcd.endpoints[0]`; empty for the root value. */
  readonly path: string;
  readonly message: string;
}

/** A command line that cannot be acted on; the CLI exits 2 for these. */
export class UsageError extends CausewayError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('CW_USAGE', message, options);
  }
}

export const ErrorCodes = {
  sniInvalid: 'CW_SNI_INVALID',
  sniUnknownVersion: 'CW_SNI_UNKNOWN_VERSION',
  spiffeInvalid: 'CW_SPIFFE_ID_INVALID',
  dnsNameInvalid: 'CW_DNS_NAME_INVALID',
  etcdKeyInvalid: 'CW_ETCD_KEY_INVALID',
  catalogValueInvalid: 'CW_CATALOG_VALUE_INVALID',
  configInvalid: 'CW_CONFIG_INVALID',
  configUnreadable: 'CW_CONFIG_UNREADABLE',
  usage: 'CW_USAGE',
  listenAddressInUse: 'CW_LISTEN_ADDRESS_IN_USE',
  listenPermissionDenied: 'CW_LISTEN_PERMISSION_DENIED',
  listenFailed: 'CW_LISTEN_FAILED',
  /** `causeway app load` missed a threshold it was given. */
  appLoadThreshold: 'CW_APP_LOAD_THRESHOLD',
} as const;

/** Where a listener's port comes from: named when it cannot bind, so the operator knows what to change. */
export interface PortSetting {
  /** Config path of the port, e.g. `observability.readyPort`. */
  readonly setting: string;
  /** The command-line flag that overrides it, e.g. `--ready-port`; none for settings only a config file holds. */
  readonly flag?: string;
}

/**
 * A listener that could not bind (address in use, permission denied…). The message names
 * the setting and flag that choose the port; {@link ListenError.inConfigFile} adds the file.
 */
export class ListenError extends CausewayError {
  readonly setting: string;
  readonly flag: string | undefined;
  readonly host: string;
  readonly port: number;
  /** The Node error code, e.g. `EADDRINUSE`. */
  readonly errno: string;
  readonly configFile: string | undefined;

  constructor(where: PortSetting & { readonly host: string; readonly port: number; readonly errno: string; readonly configFile?: string }, options: { cause?: unknown } = {}) {
    const address = `${where.host.includes(':') ? `[${where.host}]` : where.host}:${where.port}`;
    const change = `${where.flag ? `${where.flag} or ` : ''}${where.setting} in ${where.configFile ?? 'the config file'}`;
    const [code, message] =
      where.errno === 'EADDRINUSE'
        ? [ErrorCodes.listenAddressInUse, `${where.setting}: ${address} is already in use (another Causeway component on this host?); set a free port with ${change}`]
        : where.errno === 'EACCES'
          ? [ErrorCodes.listenPermissionDenied, `${where.setting}: ${address}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE); set another port with ${change}`]
          : [ErrorCodes.listenFailed, `${where.setting}: cannot listen on ${address} (${where.errno}); check the address, or set another port with ${change}`];
    super(code, message, options);
    this.setting = where.setting;
    this.flag = where.flag;
    this.host = where.host;
    this.port = where.port;
    this.errno = where.errno;
    this.configFile = where.configFile;
  }

  /** The same failure, its advice naming the config file the setting is read from. */
  inConfigFile(file: string): ListenError {
    return new ListenError({ setting: this.setting, ...(this.flag ? { flag: this.flag } : {}), host: this.host, port: this.port, errno: this.errno, configFile: file }, { cause: this.cause });
  }
}

function describeInput(input: string): string {
  const shown = input.length > 80 ? `${input.slice(0, 77)}...` : input;
  return JSON.stringify(shown);
}
