import { ErrorCodes, InvalidNameError } from './errors.js';
import { dnsLabelProblem } from './labels.js';

/** A workload identity in Istio's form: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. */
export interface SpiffeId {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

const TRUST_DOMAIN_CHARS = /^[a-z0-9._-]+$/;
const PATH_SEGMENT_CHARS = /^[A-Za-z0-9._-]+$/;
const MAX_SPIFFE_ID_BYTES = 2048;

function fail(input: string, reason: string): never {
  throw new InvalidNameError(ErrorCodes.spiffeInvalid, input, reason);
}

/** Returns why `td` is not a valid SPIFFE trust domain, or undefined. */
export function trustDomainProblem(td: string): string | undefined {
  if (td.length === 0) return 'trust domain is empty';
  if (td.length > 255) return 'trust domain is longer than 255 characters';
  if (!TRUST_DOMAIN_CHARS.test(td)) {
    return `trust domain "${td}" may contain only lower-case letters, digits, ".", "-" and "_"`;
  }
  return undefined;
}

function segmentProblem(what: string, segment: string): string | undefined {
  if (segment.length === 0) return `${what} is empty`;
  if (segment === '.' || segment === '..') return `${what} may not be "." or ".."`;
  if (!PATH_SEGMENT_CHARS.test(segment)) return `${what} "${segment}" may contain only letters, digits, ".", "-" and "_"`;
  return undefined;
}

/**
 * Parses a SPIFFE ID. Besides SPIFFE's own rules, the namespace must be a DNS label,
 * because it also appears in SNI and DNS names of the mesh.
 */
export function parseSpiffeId(input: string): SpiffeId {
  if (typeof input !== 'string') fail(String(input), 'a SPIFFE ID must be a string');
  if (Buffer.byteLength(input) > MAX_SPIFFE_ID_BYTES) fail(input, `longer than ${MAX_SPIFFE_ID_BYTES} bytes`);
  const scheme = 'spiffe://';
  if (!input.startsWith(scheme)) {
    fail(input, 'must start with "spiffe://" (lower-case scheme)');
  }
  const rest = input.slice(scheme.length);
  if (/[?#%@:]/.test(rest)) fail(input, 'must not contain a port, user info, query, fragment or percent-encoding');
  const slash = rest.indexOf('/');
  if (slash < 0) fail(input, 'has no path; expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>');
  const trustDomain = rest.slice(0, slash);
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) fail(input, tdProblem);
  const segments = rest.slice(slash + 1).split('/');
  if (segments.length !== 4 || segments[0] !== 'ns' || segments[2] !== 'sa') {
    fail(input, 'path must be /ns/<namespace>/sa/<service-account>');
  }
  const namespace = segments[1] ?? '';
  const serviceAccount = segments[3] ?? '';
  const nsProblem = segmentProblem('namespace', namespace) ?? dnsLabelProblem(namespace);
  if (nsProblem) fail(input, `namespace: ${nsProblem}`);
  const saProblem = segmentProblem('service account', serviceAccount);
  if (saProblem) fail(input, saProblem);
  return { trustDomain, namespace, serviceAccount };
}

/** Formats a SPIFFE ID, validating every part with the same rules as {@link parseSpiffeId}. */
export function formatSpiffeId(id: SpiffeId): string {
  const text = `spiffe://${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`;
  parseSpiffeId(text);
  return text;
}

export function isSpiffeId(input: string): boolean {
  try {
    parseSpiffeId(input);
    return true;
  } catch {
    return false;
  }
}
