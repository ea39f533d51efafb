import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AddressPlan } from './address-plan.js';
import { TopologyErrorCodes, TopologyRuntimeError } from './errors.js';

const execFileAsync = promisify(execFile);

/**
 * A network namespace a fault goes into, as it is now: whose it is, its interfaces, and
 * how the runner runs one of the host's programs inside it. The fault rules
 * (network-faults.ts) are the same for every engine; only this differs.
 */
export interface FaultNamespace {
  /** The service that owns the namespace; names rule files and report lines. */
  readonly owner: string;
  /** The owner and every `network_mode: service:` partner in it. */
  readonly services: readonly string[];
  /** Its interfaces other than loopback; `network` is the compose network whose subnet holds the address. */
  readonly interfaces: readonly { readonly name: string; readonly address: string; readonly network?: string | undefined }[];
  /** Runs `argv` (a host program by absolute path) inside the namespace; resolves to its stdout, rejects with its stderr. */
  run(argv: readonly string[]): Promise<string>;
}

/** The networks and namespaces of a running topology, as the fault steps need them. */
export interface FaultLayout {
  readonly networks: readonly { readonly name: string; readonly subnet: string }[];
  /** One per namespace that exists now (under Docker: per running container that owns one). */
  readonly namespaces: readonly FaultNamespace[];
}

/** Where an engine's namespaces are and how to enter them; asked again at each step, as Docker's change with a restart. */
export interface FaultNamespaces {
  layout(): Promise<FaultLayout>;
}

/**
 * The netns runner's namespaces: its address plan, decided before anything started and
 * fixed for the run, entered with `ip netns exec`.
 */
export class PlannedNamespaces implements FaultNamespaces {
  readonly #layout: FaultLayout;

  constructor(plan: AddressPlan) {
    this.#layout = {
      networks: plan.networks,
      namespaces: plan.namespaces.map((ns) => ({
        owner: ns.owner,
        services: ns.services,
        interfaces: ns.interfaces,
        run: (argv: readonly string[]) => runEntered([systemProgram('ip', 'iproute2'), 'netns', 'exec', ns.name], argv, ns.name),
      })),
    };
  }

  layout(): Promise<FaultLayout> {
    return Promise.resolve(this.#layout);
  }
}

/**
 * The system's program by absolute path, never through PATH: under `npx`, PATH starts with
 * node_modules/.bin, where `nft` is @vercel/nft's file tracer — which "loaded" a rule set
 * by exiting 0 and left the network untouched.
 */
export function systemProgram(name: string, debianPackage: string): string {
  for (const dir of ['/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
    const path = join(dir, name);
    if (existsSync(path)) return path;
  }
  throw new TopologyRuntimeError(TopologyErrorCodes.faultUnsupported, `${name} is not installed (Debian ${debianPackage}; scripts/ensure-system-packages.mjs test installs it)`);
}

/**
 * Runs `argv` inside a namespace through `enter` (the program and arguments that enter
 * it); `where` names the namespace in the error.
 */
export async function runEntered(enter: readonly string[], argv: readonly string[], where: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(enter[0]!, [...enter.slice(1), ...argv], { encoding: 'utf8', timeout: 30_000 });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new TopologyRuntimeError(TopologyErrorCodes.network, `${argv.join(' ')} in ${where} failed: ${stderr || (error as Error).message}`, { cause: error });
  }
}
