import { execFile } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { AddressPlan } from './address-plan.js';
import { TopologyErrorCodes, TopologyRuntimeError } from './errors.js';

const execFileAsync = promisify(execFile);

/** `ip netns exec` bind-mounts files from here over /etc (hosts, resolv.conf) for that namespace. */
export const NETNS_ETC = '/etc/netns';

export async function ip(args: readonly string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync('ip', args, { encoding: 'utf8' });
    return stdout;
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new TopologyRuntimeError(TopologyErrorCodes.network, `ip ${args.join(' ')} failed: ${stderr || (error as Error).message}`, { cause: error });
  }
}

export async function listNamespaces(): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out.split('\n').map((line) => line.split(' ')[0]!).filter((n) => n.length > 0);
}

/**
 * Creates the router namespace with one bridge per network, then one namespace per
 * service owner, each with a veth into each of its networks' bridges. The bridges carry
 * no address and the router namespace does not forward, so networks stay isolated.
 */
export async function createNetworks(plan: AddressPlan): Promise<void> {
  const router = plan.routerNamespace;
  await ip(['netns', 'add', router]);
  await ip(['-n', router, 'link', 'set', 'lo', 'up']);
  for (const net of plan.networks) {
    await ip(['-n', router, 'link', 'add', net.bridge, 'type', 'bridge']);
    await ip(['-n', router, 'link', 'set', net.bridge, 'up']);
  }
  for (const ns of plan.namespaces) {
    await ip(['netns', 'add', ns.name]);
    const etc = join(NETNS_ETC, ns.name);
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, 'hosts'), ns.hosts);
    // Names outside the topology go to a resolver on the namespace's own loopback (none
    // answers), so a lookup never leaves the run's namespaces.
    writeFileSync(join(etc, 'resolv.conf'), 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
    await ip(['-n', ns.name, 'link', 'set', 'lo', 'up']);
    for (const iface of ns.interfaces) {
      const bridge = plan.networks.find((n) => n.name === iface.network)!.bridge;
      await ip(['-n', router, 'link', 'add', iface.peer, 'type', 'veth', 'peer', 'name', iface.name, 'netns', ns.name]);
      await ip(['-n', router, 'link', 'set', iface.peer, 'master', bridge, 'up']);
      await ip(['-n', ns.name, 'addr', 'add', `${iface.address}/${iface.prefix}`, 'dev', iface.name]);
      await ip(['-n', ns.name, 'link', 'set', iface.name, 'up']);
    }
  }
}

/** Process ids of everything running in a namespace (empty when the namespace is gone). */
export async function namespacePids(ns: string): Promise<number[]> {
  try {
    const { stdout } = await execFileAsync('ip', ['netns', 'pids', ns], { encoding: 'utf8' });
    return stdout.split('\n').map((l) => Number(l.trim())).filter((n) => Number.isInteger(n) && n > 0 && n !== process.pid);
  } catch {
    return [];
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/**
 * Stops every process of the given namespaces (SIGTERM, then SIGKILL after `graceMs`),
 * then deletes the namespaces and their /etc/netns folders. Safe to call on a partial or
 * already-removed set-up; returns what could not be removed.
 */
export async function destroyNamespaces(names: readonly string[], options: { graceMs?: number; extraPids?: readonly number[] } = {}): Promise<string[]> {
  const graceMs = options.graceMs ?? 5000;
  const existing = new Set(await listNamespaces());
  const present = names.filter((n) => existing.has(n));
  const pidsOf = async () => {
    const all = new Set<number>((options.extraPids ?? []).filter(isAlive));
    for (const ns of present) for (const pid of await namespacePids(ns)) all.add(pid);
    return [...all];
  };
  let pids = await pidsOf();
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (pids.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    pids = pids.filter(isAlive);
  }
  for (let round = 0; round < 20; round++) {
    pids = await pidsOf();
    if (pids.length === 0) break;
    for (const pid of pids) signal(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 50));
  }
  const problems: string[] = [];
  for (const ns of names) {
    if (existing.has(ns)) {
      try {
        await ip(['netns', 'del', ns]);
      } catch (error) {
        problems.push((error as Error).message);
      }
    }
    const etc = join(NETNS_ETC, ns);
    if (existsSync(etc)) rmSync(etc, { recursive: true, force: true });
  }
  const remaining = await pidsOf();
  if (remaining.length > 0) problems.push(`processes still running: ${remaining.join(', ')}`);
  return problems;
}
