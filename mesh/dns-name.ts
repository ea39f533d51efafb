import { ErrorCodes, InvalidNameError } from './errors.js';
import { clusterNameProblem, dnsLabelProblem, dnsNameProblem } from './labels.js';

/**
 * The one codec for mesh DNS names (docs/architecture.md "Names"):
 *   `<service>.<namespace>.svc.<mesh-domain>`            any healthy cluster
 *   `<service>.<namespace>.svc.<cluster>.<mesh-domain>`  pinned to one cluster
 * SRV queries may prefix `_<port-name>._tcp.` (RFC 2782).
 */
export interface MeshDnsName {
  readonly service: string;
  readonly namespace: string;
  /** Set when the name pins one cluster. */
  readonly cluster: string | undefined;
  /** Set for SRV-style names `_<port-name>._<proto>.…`. */
  readonly portName: string | undefined;
  readonly protocol: 'tcp' | 'udp' | undefined;
}

export type DnsNameMatch =
  | { readonly kind: 'mesh'; readonly name: MeshDnsName }
  | { readonly kind: 'outside' };

function fail(input: string, reason: string): never {
  throw new InvalidNameError(ErrorCodes.dnsNameInvalid, input, reason);
}

/** Normalises a query name: lower-case, no trailing dot. */
export function normaliseDnsName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

/**
 * Classifies a query name against `meshDomain`. Names outside the mesh domain return
 * `{kind: 'outside'}`; names inside it that do not follow the grammar throw.
 */
export function parseMeshDnsName(query: string, meshDomain: string): DnsNameMatch {
  const domain = normaliseDnsName(meshDomain);
  const domainProblem = dnsNameProblem(domain);
  if (domainProblem) fail(meshDomain, `mesh domain: ${domainProblem}`);
  const name = normaliseDnsName(query);
  if (name.length > 253) fail(query, 'longer than 253 characters');
  if (name !== domain && !name.endsWith(`.${domain}`)) return { kind: 'outside' };
  if (name === domain) fail(query, 'is the mesh domain itself; expected <service>.<namespace>.svc.<domain>');
  let labels = name.slice(0, -(domain.length + 1)).split('.');
  let portName: string | undefined;
  let protocol: 'tcp' | 'udp' | undefined;
  if (labels[0]?.startsWith('_')) {
    const [port = '', proto = ''] = labels;
    if (proto !== '_tcp' && proto !== '_udp') fail(query, 'SRV names must look like _<port-name>._tcp.<service>.<namespace>.svc.<domain>');
    portName = port.slice(1);
    const problem = dnsLabelProblem(portName);
    if (problem) fail(query, `port name: ${problem}`);
    protocol = proto === '_tcp' ? 'tcp' : 'udp';
    labels = labels.slice(2);
  }
  if ((labels.length !== 3 && labels.length !== 4) || labels[2] !== 'svc') {
    fail(query, `expected <service>.<namespace>.svc[.<cluster>].${domain}`);
  }
  const [service = '', namespace = '', , cluster] = labels;
  for (const [what, label] of [['service', service], ['namespace', namespace]] as const) {
    const problem = dnsLabelProblem(label);
    if (problem) fail(query, `${what}: ${problem}`);
  }
  if (cluster !== undefined) {
    const problem = clusterNameProblem(cluster);
    if (problem) fail(query, `cluster: ${problem}`);
  }
  return { kind: 'mesh', name: { service, namespace, cluster, portName, protocol } };
}

/** Formats a mesh DNS name (without the trailing dot). */
export function formatMeshDnsName(
  parts: { service: string; namespace: string; cluster?: string | undefined; portName?: string | undefined },
  meshDomain: string,
): string {
  const labels = [parts.service, parts.namespace, 'svc'];
  if (parts.cluster) labels.push(parts.cluster);
  const prefix = parts.portName ? `_${parts.portName}._tcp.` : '';
  const text = `${prefix}${labels.join('.')}.${normaliseDnsName(meshDomain)}`;
  const parsed = parseMeshDnsName(text, meshDomain);
  if (parsed.kind !== 'mesh') fail(text, 'is not inside the mesh domain');
  return text;
}
