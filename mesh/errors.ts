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
} as const;

function describeInput(input: string): string {
  const shown = input.length > 80 ? `${input.slice(0, 77)}...` : input;
  return JSON.stringify(shown);
}
