import { CausewayError, UsageError } from '../../mesh/index.js';

export const TopologyErrorCodes = {
  unsupported: 'CW_TOPOLOGY_UNSUPPORTED',
  fileInvalid: 'CW_TOPOLOGY_FILE_INVALID',
  notFound: 'CW_TOPOLOGY_NOT_FOUND',
  needsRoot: 'CW_TOPOLOGY_NEEDS_ROOT',
  alreadyUp: 'CW_TOPOLOGY_ALREADY_UP',
  notUp: 'CW_TOPOLOGY_NOT_UP',
  network: 'CW_TOPOLOGY_NETWORK',
  serviceFailed: 'CW_TOPOLOGY_SERVICE_FAILED',
  scenarioInvalid: 'CW_TOPOLOGY_SCENARIO_INVALID',
  scenarioFailed: 'CW_TOPOLOGY_SCENARIO_FAILED',
  /** A fault step names no service or network, or a fault that is (not) in force. */
  faultInvalid: 'CW_TOPOLOGY_FAULT_INVALID',
  /** The engine (Docker) or the kernel (no netem) cannot inject this fault. */
  faultUnsupported: 'CW_TOPOLOGY_FAULT_UNSUPPORTED',
} as const;

/**
 * A compose or scenario file the runner cannot act on: a key outside the supported subset
 * or a bad value. Subclasses UsageError so the CLI exits 2, as for any bad input file.
 */
export class TopologyFileError extends UsageError {
  override readonly code: string;
  /** e.g. `services.echo.ports`; names the key the runner refused. */
  readonly path: string;
  constructor(code: string, file: string, path: string, reason: string) {
    super(`${file}: ${path ? `${path}: ` : ''}${reason}`);
    this.code = code;
    this.path = path;
  }
}

/** The runner needs root (network namespaces, bridges, mounts); the CLI exits 2. */
export class TopologyNeedsRootError extends UsageError {
  override readonly code: string = TopologyErrorCodes.needsRoot;
  constructor(what: string) {
    super(`causeway topology ${what} needs root: it creates network namespaces, veth links and bridges (run it with sudo, or as root in CI)`);
  }
}

/** Setting up or tearing down namespaces, links or processes failed. */
export class TopologyRuntimeError extends CausewayError {}
