/** Shared label rules for every name that ends up in DNS or SNI. */

const LDH_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Returns why `label` is not a lower-case LDH DNS label, or undefined when it is one. */
export function dnsLabelProblem(label: string): string | undefined {
  if (label.length === 0) return 'empty label';
  if (label.length > 63) return `label "${label.slice(0, 20)}..." is longer than 63 characters`;
  if (label !== label.toLowerCase()) return `label "${label}" has upper-case letters; names are lower-case`;
  if (label.includes('_')) return `label "${label}" contains "_", which is not allowed in a DNS label`;
  if (!LDH_LABEL.test(label)) {
    return `label "${label}" must be letters, digits and "-", not starting or ending with "-"`;
  }
  return undefined;
}

export function isDnsLabel(label: string): boolean {
  return dnsLabelProblem(label) === undefined;
}

/** Returns why `name` is not a dotted lower-case DNS name (≤ 253 chars), or undefined. */
export function dnsNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'empty name';
  if (name.length > 253) return `name is ${name.length} characters; at most 253 are allowed`;
  for (const label of name.split('.')) {
    const problem = dnsLabelProblem(label);
    if (problem) return problem;
  }
  return undefined;
}

/** Cluster names are DNS labels of at most 32 characters (docs/architecture.md "The words"). */
export function clusterNameProblem(name: string): string | undefined {
  const problem = dnsLabelProblem(name);
  if (problem) return problem;
  if (name.length > 32) return `cluster name "${name}" is longer than 32 characters`;
  return undefined;
}
