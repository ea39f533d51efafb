import type { ComposeProject } from './compose-file.js';
import { formatIpv4, parseIpv4, parseIpv4Cidr } from '../../mesh/ipv4.js';
import { TopologyErrorCodes, TopologyFileError } from './errors.js';


/**
 * Names and addresses for one run, decided before anything is created so that teardown
 * knows every name even when set-up fails halfway. Everything lives in namespaces named
 * `cw-<runId>…`; the bridges sit in a router namespace of their own (never in the
 * host's), so nothing of a run is reachable from, or routed to, the host's networks.
 */
export interface AddressPlan {
  readonly runId: string;
  /** Holds one bridge per compose network and the host-side ends of every veth. */
  readonly routerNamespace: string;
  readonly networks: readonly NetworkPlan[];
  /** One per service that owns a namespace (not the `network_mode: service:` sharers). */
  readonly namespaces: readonly NamespacePlan[];
  /** Service name → the namespace it runs in. */
  readonly namespaceOf: ReadonlyMap<string, NamespacePlan>;
}

export interface NetworkPlan {
  readonly name: string;
  readonly subnet: string;
  readonly prefix: number;
  /** Bridge name inside the router namespace. */
  readonly bridge: string;
}

export interface InterfacePlan {
  readonly network: string;
  /** Name inside the service's namespace (`eth0`, `eth1`…, as in a container). */
  readonly name: string;
  /** Name of the other end, inside the router namespace. */
  readonly peer: string;
  readonly address: string;
  readonly prefix: number;
}

export interface NamespacePlan {
  readonly name: string;
  readonly owner: string;
  /** The owner and every service that shares its namespace. */
  readonly services: readonly string[];
  readonly interfaces: readonly InterfacePlan[];
  /** Content for /etc/hosts inside the namespace: the names compose's DNS would answer there. */
  readonly hosts: string;
}

/** Subnets the runner picks for networks without `ipam`: 10.77.<n>.0/24, existing only inside the run's namespaces. */
const AUTO_SUBNET_BASE = parseIpv4('10.77.0.0')!;

export function planAddresses(project: ComposeProject, runId: string): AddressPlan {
  const fail = (path: string, reason: string): never => {
    throw new TopologyFileError(TopologyErrorCodes.fileInvalid, project.file, path, reason);
  };
  const prefix = `cw-${runId}`;
  const networks: NetworkPlan[] = [];
  const taken: { base: number; size: number; name: string }[] = [];
  for (const net of project.networks.values()) {
    if (net.subnet === undefined) continue;
    const cidr = parseIpv4Cidr(net.subnet)!;
    const size = 2 ** (32 - cidr.prefix);
    const clash = taken.find((t) => cidr.base < t.base + t.size && t.base < cidr.base + size);
    if (clash) fail(`networks.${net.name}.ipam.config[0].subnet`, `overlaps network "${clash.name}"`);
    taken.push({ base: cidr.base, size, name: net.name });
  }
  let nextAuto = 1;
  [...project.networks.values()].forEach((net, index) => {
    let subnet = net.subnet;
    if (subnet === undefined) {
      for (;;) {
        const base = (AUTO_SUBNET_BASE + nextAuto * 256) >>> 0;
        nextAuto++;
        if (nextAuto > 255) fail(`networks.${net.name}`, 'no free 10.77.x.0/24 subnet left');
        if (!taken.some((t) => base < t.base + t.size && t.base < base + 256)) {
          subnet = `${formatIpv4(base)}/24`;
          taken.push({ base, size: 256, name: net.name });
          break;
        }
      }
    }
    const cidr = parseIpv4Cidr(subnet)!;
    networks.push({ name: net.name, subnet: `${formatIpv4(cidr.base)}/${cidr.prefix}`, prefix: cidr.prefix, bridge: `br${index}` });
  });

  // Addresses: fixed ones first, then the rest in file order from .2 (compose keeps .1 for its gateway).
  const used = new Map<string, Set<number>>(networks.map((n) => [n.name, new Set<number>()]));
  const fixed = new Map<string, number>();
  for (const service of project.services.values()) {
    for (const [net, cfg] of service.networks) {
      if (cfg.ipv4Address === undefined) continue;
      const plan = networks.find((n) => n.name === net)!;
      const cidr = parseIpv4Cidr(plan.subnet)!;
      const ip = parseIpv4(cfg.ipv4Address)!;
      const size = 2 ** (32 - cidr.prefix);
      const path = `services.${service.name}.networks.${net}.ipv4_address`;
      if (ip < cidr.base + 2 || ip >= cidr.base + size - 1) fail(path, `${cfg.ipv4Address} is not a host address of ${plan.subnet} (.1 is the gateway's)`);
      if (used.get(net)!.has(ip)) fail(path, `${cfg.ipv4Address} is used twice`);
      used.get(net)!.add(ip);
      fixed.set(`${service.name}/${net}`, ip);
    }
  }
  const addressOf = new Map<string, number>();
  for (const service of project.services.values()) {
    for (const net of service.networks.keys()) {
      const key = `${service.name}/${net}`;
      let ip = fixed.get(key);
      if (ip === undefined) {
        const plan = networks.find((n) => n.name === net)!;
        const cidr = parseIpv4Cidr(plan.subnet)!;
        const size = 2 ** (32 - cidr.prefix);
        for (let candidate = cidr.base + 2; candidate < cidr.base + size - 1; candidate++) {
          if (!used.get(net)!.has(candidate)) {
            ip = candidate;
            break;
          }
        }
        if (ip === undefined) fail(`networks.${net}`, `subnet ${plan.subnet} has no free address left`);
        used.get(net)!.add(ip!);
      }
      addressOf.set(key, ip!);
    }
  }

  const owners = [...project.services.values()].filter((s) => s.sharesNetworkOf === undefined);
  const namespaces: NamespacePlan[] = [];
  const namespaceOf = new Map<string, NamespacePlan>();
  owners.forEach((service, serviceIndex) => {
    const interfaces = [...service.networks.keys()].map((net, i): InterfacePlan => {
      const plan = networks.find((n) => n.name === net)!;
      return {
        network: net,
        name: `eth${i}`,
        peer: `v${serviceIndex}n${networks.indexOf(plan)}`,
        address: formatIpv4(addressOf.get(`${service.name}/${net}`)!),
        prefix: plan.prefix,
      };
    });
    const members = [...project.services.values()].filter((s) => s.name === service.name || s.sharesNetworkOf === service.name).map((s) => s.name);
    const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
    for (const iface of interfaces) lines.push(`${iface.address}\t${service.hostname}`);
    // Compose's DNS answers a service's name (and aliases) only on networks both share.
    for (const iface of interfaces) {
      for (const other of owners) {
        const cfg = other.networks.get(iface.network);
        if (!cfg) continue;
        const ip = formatIpv4(addressOf.get(`${other.name}/${iface.network}`)!);
        lines.push(`${ip}\t${[other.name, ...cfg.aliases].join(' ')}`);
      }
    }
    const ns: NamespacePlan = { name: `${prefix}-${service.name}`, owner: service.name, services: members, interfaces, hosts: `${lines.join('\n')}\n` };
    namespaces.push(ns);
    for (const member of members) namespaceOf.set(member, ns);
  });
  return { runId, routerNamespace: prefix, networks, namespaces, namespaceOf };
}
