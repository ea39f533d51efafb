import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { logger } from '../../mesh/index.js';
import type { ComposeProject } from './compose-file.js';
import { TopologyErrorCodes, TopologyRuntimeError } from './errors.js';
import { systemProgram, type FaultLayout, type FaultNamespace, type FaultNamespaces } from './fault-namespaces.js';

/**
 * A network fault a scenario injects (topologies/README.md "Network faults"). Every one
 * drops or holds packets silently — no RST, no ICMP — as a real network fails.
 */
export type NetworkFault =
  | { readonly kind: 'partition'; readonly between: readonly [string, string] }
  | { readonly kind: 'delay'; readonly on: string; readonly ms: number; readonly jitterMs?: number | undefined }
  | { readonly kind: 'loss'; readonly on: string; readonly percent: number };

/** What a `heal` step removes: one partition, the delay and loss on one service, or every fault. */
export type FaultHeal = { readonly between: readonly [string, string] } | { readonly on: string } | 'all';

const log = logger('topology-faults');

/** One side of a partition: the addresses it holds and the namespaces that hold them. */
interface PartitionSide {
  readonly label: string;
  readonly cidrs: readonly string[];
  readonly namespaces: readonly FaultNamespace[];
}

interface ActiveFault {
  readonly description: string;
  /** Undoes exactly what the fault added. */
  readonly heal: () => Promise<void>;
}

/**
 * Network faults as nftables tables and tc qdiscs inside the services' own network
 * namespaces (the host's is never touched), for either engine: the netns runner's
 * namespaces or Docker containers', entered from the host ({@link FaultNamespaces}). A
 * partition is one table per pair, named after the pair, so `heal` deletes exactly what
 * `partition` added; loss is a table per service; delay is a netem qdisc on each of the
 * service's interfaces.
 */
export class NamespaceFaults {
  readonly #project: ComposeProject;
  readonly #namespaces: FaultNamespaces;
  /** Where each rule set is written before it is loaded, kept for a post-mortem. */
  readonly #dir: string;
  readonly #active = new Map<string, ActiveFault>();

  constructor(project: ComposeProject, namespaces: FaultNamespaces, ruleDir: string) {
    this.#project = project;
    this.#namespaces = namespaces;
    this.#dir = ruleDir;
  }

  /** Injects a fault; returns a line for the scenario report. */
  async inject(fault: NetworkFault): Promise<string> {
    let detail: string;
    switch (fault.kind) {
      case 'partition':
        detail = await this.#partition(fault.between);
        break;
      case 'loss':
        detail = await this.#loss(fault.on, fault.percent);
        break;
      case 'delay':
        detail = await this.#delay(fault.on, fault.ms, fault.jitterMs);
        break;
    }
    log.debug({ project: this.#project.name, fault, detail }, 'network fault injected');
    return detail;
  }

  /** Removes what earlier faults added; fails when the heal names nothing that is in force. */
  async heal(what: FaultHeal): Promise<string> {
    let keys: string[];
    if (what === 'all') keys = [...this.#active.keys()];
    else if ('between' in what) {
      const key = partitionKey(what.between);
      if (!this.#active.has(key)) throw new TopologyRuntimeError(TopologyErrorCodes.faultInvalid, `heal.between: no partition between ${what.between[0]} and ${what.between[1]} is in force`);
      keys = [key];
    } else {
      this.#knownService(what.on, 'heal.on');
      keys = [`loss/${what.on}`, `delay/${what.on}`].filter((k) => this.#active.has(k));
      if (keys.length === 0) throw new TopologyRuntimeError(TopologyErrorCodes.faultInvalid, `heal.on: no delay or loss on ${what.on} is in force`);
    }
    const healed: string[] = [];
    for (const key of keys) {
      const fault = this.#active.get(key)!;
      await fault.heal();
      this.#active.delete(key);
      healed.push(fault.description);
    }
    log.debug({ project: this.#project.name, healed }, 'network faults healed');
    return healed.length === 0 ? 'no fault was in force' : `healed: ${healed.join('; ')}`;
  }

  async #partition(between: readonly [string, string]): Promise<string> {
    const key = partitionKey(between);
    if (this.#active.has(key)) throw new TopologyRuntimeError(TopologyErrorCodes.faultInvalid, `partition.between: ${between[0]} and ${between[1]} are already partitioned`);
    const layout = await this.#namespaces.layout();
    const [a, b] = [this.#side(layout, between[0], 'partition.between[0]'), this.#side(layout, between[1], 'partition.between[1]')];
    // Every packet between the sides passes through a namespace of either side, so the
    // rules go into the side with fewer namespaces: one table per namespace, loaded
    // atomically by nft (a service side is one namespace: the cut is a single change).
    const namespaces = a.namespaces.length <= b.namespaces.length ? a.namespaces : b.namespaces;
    const table = `causeway_partition_${createHash('sha256').update(key).digest('hex').slice(0, 12)}`;
    const ruleset = partitionRuleset(table, a, b);
    const done: string[] = [];
    const heal = () => this.#deleteTable(done, table);
    try {
      for (const ns of namespaces) {
        await this.#loadRuleset(ns, `${table}.nft`, ruleset);
        done.push(ns.owner);
      }
    } catch (error) {
      await heal().catch(() => undefined);
      throw error;
    }
    const description = `partition between ${a.label} and ${b.label}`;
    this.#active.set(key, { description, heal });
    return `${description}: packets dropped in ${namespaces.map((n) => n.owner).join(', ')} (nft table ${table})`;
  }

  async #loss(service: string, percent: number): Promise<string> {
    const ns = this.#serviceNamespace(await this.#namespaces.layout(), service, 'loss.on');
    const table = 'causeway_loss';
    await this.#loadRuleset(ns, `${table}-${service}.nft`, lossRuleset(table, service, percent));
    const description = `${percent}% loss on ${service}`;
    this.#active.set(`loss/${service}`, { description, heal: () => this.#deleteTable([ns.owner], table) });
    return `${description}: each packet in or out of ${ns.interfaces.map((i) => i.name).join(', ')} dropped with that chance (nft table ${table})`;
  }

  async #delay(service: string, ms: number, jitterMs: number | undefined): Promise<string> {
    const ns = this.#serviceNamespace(await this.#namespaces.layout(), service, 'delay.on');
    const netem = ['netem', 'delay', `${ms}ms`, ...(jitterMs ? [`${jitterMs}ms`] : [])];
    const devices: string[] = [];
    const heal = async () => {
      for (const dev of devices) await ns.run([systemProgram('tc', 'iproute2'), 'qdisc', 'del', 'dev', dev, 'root']);
    };
    try {
      for (const iface of ns.interfaces) {
        await ns.run([systemProgram('tc', 'iproute2'), 'qdisc', 'replace', 'dev', iface.name, 'root', ...netem]).catch((error: Error) => {
          if (/qdisc kind is unknown|No such file or directory/i.test(error.message)) {
            throw new TopologyRuntimeError(
              TopologyErrorCodes.faultUnsupported,
              `delay.on: this kernel has no netem queueing discipline (sch_netem), which the runner delays packets with (${error.message.trim()}); partition and loss work without it`,
              { cause: error },
            );
          }
          throw error;
        });
        devices.push(iface.name);
      }
    } catch (error) {
      await heal().catch(() => undefined);
      throw error;
    }
    const description = `${ms} ms${jitterMs ? ` ± ${jitterMs} ms` : ''} delay on ${service}`;
    this.#active.set(`delay/${service}`, { description, heal });
    return `${description}: netem on ${devices.join(', ')} (outgoing packets)`;
  }

  /** A network (its subnet) or a service (its addresses); `path` names the step's key in errors. */
  #side(layout: FaultLayout, name: string, path: string): PartitionSide {
    const network = layout.networks.find((n) => n.name === name);
    const service = this.#project.services.get(name);
    if (network && service) throw new TopologyRuntimeError(TopologyErrorCodes.faultInvalid, `${path}: "${name}" names both a network and a service of ${this.#project.file}`);
    if (network) {
      return { label: `network ${name}`, cidrs: [network.subnet], namespaces: layout.namespaces.filter((ns) => ns.interfaces.some((i) => i.network === name)) };
    }
    const ns = this.#serviceNamespace(layout, name, path);
    return { label: name, cidrs: ns.interfaces.map((i) => `${i.address}/32`), namespaces: [ns] };
  }

  #knownService(service: string, path: string): void {
    if (this.#project.services.has(service)) return;
    const networks = [...this.#project.networks.keys()].join(', ');
    throw new TopologyRuntimeError(TopologyErrorCodes.faultInvalid, `${path}: no service${path.startsWith('partition') ? ' or network' : ''} named "${service}" in ${this.#project.file} (networks: ${networks})`);
  }

  #serviceNamespace(layout: FaultLayout, service: string, path: string): FaultNamespace {
    this.#knownService(service, path);
    const ns = layout.namespaces.find((n) => n.services.includes(service));
    if (!ns) throw new TopologyRuntimeError(TopologyErrorCodes.faultInvalid, `${path}: service "${service}" is not running, so it has no network namespace to put the fault in (under Docker a stopped container has none)`);
    if (ns.interfaces.length === 0) throw new TopologyRuntimeError(TopologyErrorCodes.faultInvalid, `${path}: service "${service}" is on no network`);
    return ns;
  }

  async #loadRuleset(ns: FaultNamespace, fileName: string, ruleset: string): Promise<void> {
    mkdirSync(this.#dir, { recursive: true });
    const file = join(this.#dir, `${ns.owner}-${fileName}`);
    writeFileSync(file, ruleset);
    await ns.run([systemProgram('nft', 'nftables'), '-f', file]);
  }

  /**
   * Deletes a table from the owners' namespaces as they are now. `add` first makes the
   * delete succeed where the table is already gone: under Docker a restarted container
   * has a new namespace without it, and a stopped one has none (skipped).
   */
  async #deleteTable(owners: readonly string[], table: string): Promise<void> {
    const layout = await this.#namespaces.layout();
    for (const owner of owners) {
      const ns = layout.namespaces.find((n) => n.owner === owner);
      await ns?.run([systemProgram('nft', 'nftables'), 'add', 'table', 'ip', table, ';', 'delete', 'table', 'ip', table]);
    }
  }
}

/** The rule set of a partition: silent drops both ways between the sides' addresses. */
export function partitionRuleset(table: string, a: Pick<PartitionSide, 'label' | 'cidrs'>, b: Pick<PartitionSide, 'label' | 'cidrs'>): string {
  const matches = ['ip saddr @side_a ip daddr @side_b drop', 'ip saddr @side_b ip daddr @side_a drop'];
  return [
    `# partition between ${a.label} and ${b.label}: silent drops, no reject`,
    `table ip ${table} {`,
    `  set side_a { type ipv4_addr; flags interval; elements = { ${a.cidrs.join(', ')} } }`,
    `  set side_b { type ipv4_addr; flags interval; elements = { ${b.cidrs.join(', ')} } }`,
    // Before the default filter priority, so nothing else accepts the packets first.
    `  chain input { type filter hook input priority -10; policy accept; iif "lo" accept; ${matches.join('; ')}; }`,
    `  chain output { type filter hook output priority -10; policy accept; oif "lo" accept; ${matches.join('; ')}; }`,
    '}',
    '',
  ].join('\n');
}

/**
 * The rule set of a loss: each packet in or out of a non-loopback interface dropped with
 * chance `percent` %. `add` then `delete` then the definition, in one transaction: a
 * second loss on the same service replaces the first without a moment of none.
 */
export function lossRuleset(table: string, service: string, percent: number): string {
  // nft's numgen draws an integer: per ten thousand keeps two decimals of the percentage.
  const perTenThousand = Math.round(percent * 100);
  // (nft refuses `< 10000` against a value that is at most 9999: 100 % is a plain drop.)
  const drop = perTenThousand >= 10_000 ? 'drop' : `numgen random mod 10000 < ${perTenThousand} drop`;
  return [
    `# ${percent}% loss on ${service}'s interfaces, each direction`,
    `add table ip ${table}`,
    `delete table ip ${table}`,
    `table ip ${table} {`,
    `  chain input { type filter hook input priority -5; policy accept; iif "lo" accept; ${drop}; }`,
    `  chain output { type filter hook output priority -5; policy accept; oif "lo" accept; ${drop}; }`,
    '}',
    '',
  ].join('\n');
}

/** The same key for [a, b] and [b, a]. */
function partitionKey(between: readonly [string, string]): string {
  return `partition/${[...between].sort().join('|')}`;
}
