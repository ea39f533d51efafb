import { existsSync } from 'node:fs';
import { parseIpv4, parseIpv4Cidr } from '../../mesh/ipv4.js';
import type { ComposeProject } from './compose-file.js';
import { TopologyErrorCodes, TopologyRuntimeError } from './errors.js';
import { runEntered, systemProgram, type FaultLayout, type FaultNamespace, type FaultNamespaces } from './fault-namespaces.js';

/** What the Docker engine says about a project, as far as its faults need it. */
export interface ContainerSource {
  /** Every container of the project: its service and, while it runs, its main process on this host. */
  states(): Promise<readonly { readonly service: string; readonly status: string; readonly pid: number }[]>;
  /** The project's networks by compose name, with the IPv4 subnet the engine gave each. */
  networkSubnets(): Promise<readonly { readonly name: string; readonly subnet: string }[]>;
}

/**
 * Docker containers' network namespaces, entered from the host: `nsenter -t <pid> -n`
 * with the host's own nft and tc (the image needs neither, the container no NET_ADMIN).
 * Addresses and interface names are read inside each namespace (`ip -j -4 addr`), so
 * they are the kernel's, not a guess from the compose file. Needs root on the host and an
 * engine on this host (a unix socket): a container's pid means nothing elsewhere.
 */
export class ContainerNamespaces implements FaultNamespaces {
  readonly #project: ComposeProject;
  readonly #source: ContainerSource;

  constructor(project: ComposeProject, source: ContainerSource) {
    this.#project = project;
    this.#source = source;
  }

  async layout(): Promise<FaultLayout> {
    if (process.getuid?.() !== 0) {
      throw new TopologyRuntimeError(
        TopologyErrorCodes.faultUnsupported,
        'fault steps under Docker need root: the runner enters each container\'s network namespace from the host (nsenter -t <pid> -n) and loads the rules with the host\'s nft and tc; run `causeway topology test` as root (sudo)',
      );
    }
    const host = process.env.DOCKER_HOST;
    if (host && !host.startsWith('unix://')) {
      throw new TopologyRuntimeError(TopologyErrorCodes.faultUnsupported, `fault steps under Docker need the engine on this host (a unix socket): DOCKER_HOST=${host} may be another machine, where a container's pid means nothing here`);
    }
    const nsenter = systemProgram('nsenter', 'util-linux');
    const ip = systemProgram('ip', 'iproute2');
    const networks = await this.#source.networkSubnets();
    const running = (await this.#source.states()).filter((s) => s.status === 'running' && s.pid > 0);
    const namespaces: FaultNamespace[] = [];
    for (const spec of this.#project.services.values()) {
      if (spec.sharesNetworkOf !== undefined) continue;
      const services = [...this.#project.services.values()].filter((s) => (s.sharesNetworkOf ?? s.name) === spec.name).map((s) => s.name);
      // The owner's process, or a running partner's: they share the namespace.
      const holder = running.find((s) => s.service === spec.name) ?? running.find((s) => services.includes(s.service));
      if (!holder) continue;
      if (!existsSync(`/proc/${holder.pid}/ns/net`)) {
        throw new TopologyRuntimeError(TopologyErrorCodes.faultUnsupported, `fault steps under Docker: ${holder.service}'s container process (pid ${holder.pid}) is not visible from here; the runner must run on the engine's host, outside any container`);
      }
      const where = `${spec.name}'s container (pid ${holder.pid})`;
      const run = (argv: readonly string[]) => runEntered([nsenter, '-t', String(holder.pid), '-n'], argv, where);
      const interfaces = parseInterfaces(await run([ip, '-j', '-4', 'addr', 'show']), where).map((i) => ({ ...i, network: networkHolding(networks, i.address) }));
      namespaces.push({ owner: spec.name, services, interfaces, run });
    }
    return { networks, namespaces };
  }
}

/** `ip -j -4 addr show` → each non-loopback interface's IPv4 addresses. */
export function parseInterfaces(json: string, where: string): { name: string; address: string }[] {
  let links: unknown;
  try {
    links = JSON.parse(json);
  } catch (error) {
    throw new TopologyRuntimeError(TopologyErrorCodes.network, `ip -j addr in ${where} printed no JSON: ${(error as Error).message}`, { cause: error });
  }
  if (!Array.isArray(links)) throw new TopologyRuntimeError(TopologyErrorCodes.network, `ip -j addr in ${where} printed no list of interfaces`);
  const interfaces: { name: string; address: string }[] = [];
  for (const link of links as { ifname?: unknown; addr_info?: unknown }[]) {
    if (typeof link?.ifname !== 'string' || link.ifname === 'lo' || !Array.isArray(link.addr_info)) continue;
    for (const info of link.addr_info as { family?: unknown; local?: unknown }[]) {
      if (info?.family === 'inet' && typeof info.local === 'string' && parseIpv4(info.local) !== undefined) interfaces.push({ name: link.ifname, address: info.local });
    }
  }
  return interfaces;
}

/** The network whose subnet holds the address, if any. */
function networkHolding(networks: readonly { name: string; subnet: string }[], address: string): string | undefined {
  return networks.find((n) => {
    const cidr = parseIpv4Cidr(n.subnet);
    // The address masked to the subnet's prefix is the subnet's own base.
    return cidr !== undefined && parseIpv4Cidr(`${address}/${cidr.prefix}`)?.base === cidr.base;
  })?.name;
}
