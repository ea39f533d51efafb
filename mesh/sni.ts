import { isIP } from 'node:net';
import { ErrorCodes, InvalidNameError } from './errors.js';
import { clusterNameProblem, dnsLabelProblem, dnsNameProblem } from './labels.js';

/**
 * The one codec for Causeway's SNI routing key (docs/architecture.md "Names"):
 *
 *   service:    `<port>.<subset|all>.<service>.<namespace>.<cluster>.cw1.<trust-domain>`
 *   controller: `controller.<cluster>.cw1.<trust-domain>`
 *   exports:    `exports.<cluster>.cw1.<trust-domain>` (the cluster's peer-facing export store)
 *
 * Everything else calls this module; a name that does not parse is refused, never guessed.
 * Server names are case-insensitive on the wire (DNS names are): the parser lower-cases
 * first, so `9080.ALL.Reviews…` names the same service; encoding always writes lower case.
 */
export const SNI_VERSION = 'cw1';
const VERSION_LABEL = /^cw[0-9]+$/;
const PORT = /^[1-9][0-9]{0,4}$/;

export interface ServiceSni {
  readonly kind: 'service';
  readonly port: number;
  /** Subset name (e.g. `v2`), or `undefined` for any subset (`all` on the wire). */
  readonly subset: string | undefined;
  readonly service: string;
  readonly namespace: string;
  readonly cluster: string;
  readonly trustDomain: string;
}

export interface ControllerSni {
  readonly kind: 'controller';
  readonly cluster: string;
  readonly trustDomain: string;
}

/** The cluster's export store, which peers reach through its gateway (docs/architecture.md "Names"). */
export interface ExportStoreSni {
  readonly kind: 'exports';
  readonly cluster: string;
  readonly trustDomain: string;
}

export type Sni = ServiceSni | ControllerSni | ExportStoreSni;

/** First labels of the names that are not services; a service name starts with a port, so none can collide. */
const NAMED_KINDS = new Set<string>(['controller', 'exports']);

function fail(input: string, reason: string, code: string = ErrorCodes.sniInvalid): never {
  throw new InvalidNameError(code, input, reason);
}

function checkTrustDomain(input: string, td: string): void {
  if (td.length === 0) fail(input, 'missing trust domain after the version label');
  const problem = dnsNameProblem(td);
  if (problem) fail(input, `trust domain: ${problem}`);
}

const UPPER_ASCII = /[A-Z]/;

/**
 * A server name in the lower case every consumer compares in. ASCII letters only, as DNS
 * does (RFC 4343): `toLowerCase()` would also fold non-ASCII letters into ASCII ones
 * (KELVIN SIGN → `k`) and so accept names the wire never carried.
 */
export function lowerCaseServerName(name: string): string {
  return UPPER_ASCII.test(name) ? name.replace(/[A-Z]+/g, (letters) => letters.toLowerCase()) : name;
}

/** Parses an SNI server name, in any letter case. Throws {@link InvalidNameError} naming what is wrong. */
export function parseSni(input: string): Sni {
  if (typeof input !== 'string' || input.length === 0) fail(String(input), 'empty server name');
  return parseLowerCase(input, lowerCaseServerName(input));
}

/** `name` is `input` lower-cased; errors quote `input` as it arrived. */
function parseLowerCase(input: string, name: string): Sni {
  if (name.length > 253) fail(input, `server name is ${name.length} characters; at most 253 are allowed`);
  if (name.endsWith('.')) fail(input, 'server name must not end with "."');
  const labels = name.split('.');
  for (const label of labels) {
    const problem = dnsLabelProblem(label);
    if (problem) fail(input, problem);
  }
  const first = labels[0] ?? '';
  if (NAMED_KINDS.has(first)) {
    const kind = first as 'controller' | 'exports';
    const [, cluster = '', version = '', ...td] = labels;
    if (version !== SNI_VERSION) versionProblem(input, version);
    const clusterProblem = clusterNameProblem(cluster);
    if (clusterProblem) fail(input, `cluster: ${clusterProblem}`);
    checkTrustDomain(input, td.join('.'));
    return { kind, cluster, trustDomain: td.join('.') };
  }
  if (labels.length < 7) {
    fail(input, 'expected <port>.<subset|all>.<service>.<namespace>.<cluster>.cw1.<trust-domain>');
  }
  const [portText = '', subset = '', service = '', namespace = '', cluster = '', version = '', ...td] = labels;
  if (version !== SNI_VERSION) versionProblem(input, version);
  if (!PORT.test(portText) || Number(portText) > 65535) fail(input, `port "${portText}" must be a number from 1 to 65535`);
  const clusterProblem = clusterNameProblem(cluster);
  if (clusterProblem) fail(input, `cluster: ${clusterProblem}`);
  checkTrustDomain(input, td.join('.'));
  return {
    kind: 'service',
    port: Number(portText),
    subset: subset === 'all' ? undefined : subset,
    service,
    namespace,
    cluster,
    trustDomain: td.join('.'),
  };
}

function versionProblem(input: string, version: string): never {
  if (VERSION_LABEL.test(version)) {
    fail(input, `SNI format version "${version}" is not supported (this build speaks ${SNI_VERSION})`, ErrorCodes.sniUnknownVersion);
  }
  fail(input, `expected the format version label "${SNI_VERSION}" in its position, found "${version}"`);
}

/** Encodes an SNI, validating it by parsing the result (so encode and parse never disagree). */
export function encodeSni(
  sni: (Omit<ServiceSni, 'kind'> & { kind?: 'service' }) | (Omit<ControllerSni, 'kind'> & { kind?: 'controller' }) | ExportStoreSni,
): string {
  let text: string;
  if ('port' in sni) {
    if (sni.subset === 'all') fail('all', 'subset "all" is reserved for "any subset"; pass undefined');
    text = [String(sni.port), sni.subset ?? 'all', sni.service, sni.namespace, sni.cluster, SNI_VERSION, sni.trustDomain].join('.');
  } else {
    // Without a kind (the older call form), a name without a port is a controller's.
    text = [sni.kind === 'exports' ? 'exports' : 'controller', sni.cluster, SNI_VERSION, sni.trustDomain].join('.');
  }
  // Parsed as given (not lower-cased), so that parse(encode(x)) is x: upper-case parts are refused.
  parseLowerCase(text, text);
  return text;
}

export function serviceSni(parts: Omit<ServiceSni, 'kind'>): string {
  return encodeSni(parts);
}

export function controllerSni(cluster: string, trustDomain: string): string {
  return encodeSni({ cluster, trustDomain });
}

/** The server name of `cluster`'s export store: what peers send to its gateway, and what the store's certificate names. */
export function exportStoreSni(cluster: string, trustDomain: string): string {
  return encodeSni({ kind: 'exports', cluster, trustDomain });
}

/**
 * SNI for a controller reached by IP when its cluster is not known. Clients verify the
 * controller by SPIFFE ID, so this name only keeps an IP out of SNI (RFC 6066; Node's
 * DEP0123); a gateway would not route it.
 */
export const DEFAULT_CONTROLLER_SERVER_NAME = 'causeway-controller';

/** The SNI for a controller at `host:port` when nothing better is known: {@link DEFAULT_CONTROLLER_SERVER_NAME} for an IP, else none (the host name is fine). */
export function fallbackControllerServerName(address: string): string | undefined {
  const host = address.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return isIP(host) ? DEFAULT_CONTROLLER_SERVER_NAME : undefined;
}

/** Parses without throwing; returns the error instead. For hot paths that count refusals. */
export function tryParseSni(input: string): Sni | InvalidNameError {
  try {
    return parseSni(input);
  } catch (error) {
    if (error instanceof InvalidNameError) return error;
    throw error;
  }
}
