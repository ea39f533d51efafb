import { parseSpiffeId, type AuthorizationPolicy } from '../mesh/index.js';

/** Who is calling, as the inbound listener established it. */
export interface Caller {
  /** Verified SPIFFE ID; undefined for a plaintext or certificate-less caller (PERMISSIVE mode only). */
  readonly spiffeId: string | undefined;
  /** The caller's cluster, from the verified issuing intermediate (see peer-certificate.ts). */
  readonly cluster: string | undefined;
}

export interface AuthorizationDecision {
  readonly allowed: boolean;
  /** The deciding policy (`<ns>/<name>`), `default-allow`, or `no-allow-matched`. */
  readonly policy: string;
}

const DEFAULT_ALLOW: AuthorizationDecision = Object.freeze({ allowed: true, policy: 'default-allow' });

/**
 * Istio's evaluation order: a matching DENY policy denies; otherwise, if any ALLOW
 * policy applies to the workload and port, one of them must match; otherwise allow.
 * A selector matches when every field it sets matches (identities, namespaces of the
 * SPIFFE ID, clusters); a caller without an identity matches only selectors that set
 * none of them (and `from: []`, which matches everyone).
 */
export function authorize(policies: readonly AuthorizationPolicy[], target: { namespace: string; service: string; port: number }, caller: Caller): AuthorizationDecision {
  const applicable = policies.filter(
    (p) => p.namespace === target.namespace && (p.service === undefined || p.service === target.service) && (p.ports.length === 0 || p.ports.includes(target.port)),
  );
  // No policy for this workload and port (the common case): nothing to parse.
  if (applicable.length === 0) return DEFAULT_ALLOW;
  let callerNamespace: string | undefined;
  if (caller.spiffeId) {
    try {
      callerNamespace = parseSpiffeId(caller.spiffeId).namespace;
    } catch {
      callerNamespace = undefined;
    }
  }
  const matches = (p: AuthorizationPolicy) =>
    p.from.length === 0 ||
    p.from.some((sel) => {
      if (sel.identities && !(caller.spiffeId !== undefined && sel.identities.includes(caller.spiffeId))) return false;
      if (sel.namespaces && !(callerNamespace !== undefined && sel.namespaces.includes(callerNamespace))) return false;
      if (sel.clusters && !(caller.cluster !== undefined && sel.clusters.includes(caller.cluster))) return false;
      return true;
    });
  for (const p of applicable) if (p.action === 'deny' && matches(p)) return { allowed: false, policy: `${p.namespace}/${p.name}` };
  const allows = applicable.filter((p) => p.action === 'allow');
  if (allows.length === 0) return DEFAULT_ALLOW;
  const hit = allows.find(matches);
  return hit ? { allowed: true, policy: `${hit.namespace}/${hit.name}` } : { allowed: false, policy: 'no-allow-matched' };
}

/** Envoy's `%RESPONSE_CODE_DETAILS%` of an RBAC denial: the deciding policy, or `none` when no ALLOW matched. */
export function rbacDetails(policy: string): string {
  return `rbac_access_denied_matched_policy[${policy === 'no-allow-matched' ? 'none' : policy}]`;
}
