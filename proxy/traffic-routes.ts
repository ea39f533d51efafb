import { compileBoundedRegex, type HeaderMatch, type RouteMatch, type TrafficPolicy, type TrafficRoute } from '../mesh/index.js';
import { DEFAULT_RETRIABLE_STATUS_CODES, DEFAULT_RETRY_ON, type RetryRules } from './retry-policy.js';
import { TokenBucket } from './token-bucket.js';

/**
 * A traffic policy's routes, compiled once per snapshot (proxy/README.md "Routes"): the
 * first route whose match takes a request decides its subset or split, timeout, retries
 * and rate limit; a request no route takes gets the default route, made of the policy's
 * top-level fields so that policies without routes behave as before.
 */

/** What a route match reads of a request (the HTTP/1.1 fast path, Node's server and HTTP/2 each supply it). */
export interface RouteRequest {
  readonly method: string;
  /** The request target: origin form (`/path?query`). */
  readonly target: string;
  /** The first value of a header, by lower-case name. */
  header(lowerName: string): string | undefined;
}

/**
 * What a route match reads of a request whose headers Node parsed (its HTTP/1.1 server,
 * an HTTP/2 stream). An HTTP/2 request's `host` is its `:authority`.
 */
export class HeaderMapRouteRequest implements RouteRequest {
  readonly method: string;
  readonly target: string;
  readonly #headers: Readonly<Record<string, string | string[] | undefined>>;

  constructor(method: string | undefined, target: string | undefined, headers: Readonly<Record<string, string | string[] | undefined>>) {
    this.method = method ?? '';
    this.target = target ?? '/';
    this.#headers = headers;
  }

  header(lowerName: string): string | undefined {
    const value = this.#headers[lowerName] ?? (lowerName === 'host' ? this.#headers[':authority'] : undefined);
    return Array.isArray(value) ? value[0] : value;
  }
}

export const DEFAULT_ROUTE = 'default';

/** A service's compiled routes. */
export class ServiceRoutes {
  readonly routes: readonly RouteRules[];
  readonly fallback: RouteRules;

  constructor(routes: readonly RouteRules[], fallback: RouteRules) {
    this.routes = routes;
    this.fallback = fallback;
  }

  /** The route of a request: the first that matches, else the default. No request (a TCP connection): the default. */
  select(request: RouteRequest | undefined): RouteRules {
    if (request) for (const route of this.routes) if (route.matches(request)) return route;
    return this.fallback;
  }

  byName(name: string): RouteRules | undefined {
    return name === DEFAULT_ROUTE ? this.fallback : this.routes.find((r) => r.name === name);
  }
}

/**
 * Compiles a policy's routes. `defaultTries` applies when the policy sets no `retries`.
 * A rate-limit bucket whose route and limits are unchanged in `previous` is kept, so a
 * new snapshot does not refill every bucket.
 */
export function compileRoutes(policy: TrafficPolicy | undefined, defaultTries: number, previous: ServiceRoutes | undefined): ServiceRoutes {
  const defaultRetry: RetryRules = {
    tries: policy?.retries !== undefined ? policy.retries + 1 : defaultTries,
    perTryTimeoutMs: policy?.requestTimeoutMs,
    on: new Set(DEFAULT_RETRY_ON),
    retriableStatusCodes: new Set(DEFAULT_RETRIABLE_STATUS_CODES),
  };
  const fallback = new RouteRules(DEFAULT_ROUTE, undefined, policy?.split, undefined, defaultRetry, undefined, undefined);
  const routes = (policy?.routes ?? []).map((route) => compileRoute(route, defaultRetry, previous?.byName(route.name)?.rateLimit));
  return new ServiceRoutes(routes, fallback);
}

function compileRoute(route: TrafficRoute, defaultRetry: RetryRules, previousBucket: TokenBucket | undefined): RouteRules {
  const r = route.retries;
  const retry: RetryRules = r
    ? {
        tries: r.attempts + 1,
        perTryTimeoutMs: r.perTryTimeoutMs ?? defaultRetry.perTryTimeoutMs,
        on: r.on ? new Set(r.on) : defaultRetry.on,
        retriableStatusCodes: r.retriableStatusCodes ? new Set(r.retriableStatusCodes) : defaultRetry.retriableStatusCodes,
      }
    : defaultRetry;
  let bucket: TokenBucket | undefined;
  if (route.rateLimit) {
    const burst = route.rateLimit.burst ?? Math.ceil(route.rateLimit.requestsPerSecond);
    const same = previousBucket && previousBucket.perSecond === route.rateLimit.requestsPerSecond && previousBucket.burst === burst;
    bucket = same ? previousBucket : new TokenBucket(route.rateLimit.requestsPerSecond, burst);
  }
  return new RouteRules(route.name, route.subset, route.split, route.timeoutMs, retry, bucket, compileMatch(route.match));
}

type HeaderTest = { readonly name: string; test(value: string): boolean };

interface CompiledMatch {
  readonly pathExact: string | undefined;
  readonly pathPrefix: string | undefined;
  readonly method: string | undefined;
  readonly headers: readonly HeaderTest[];
}

function compileMatch(match: RouteMatch): CompiledMatch {
  return { pathExact: match.path?.exact, pathPrefix: match.path?.prefix, method: match.method, headers: match.headers.map(compileHeader) };
}

function compileHeader(h: HeaderMatch): HeaderTest {
  if (h.exact !== undefined) {
    const exact = h.exact;
    return { name: h.name, test: (v) => v === exact };
  }
  if (h.prefix !== undefined) {
    const prefix = h.prefix;
    return { name: h.name, test: (v) => v.startsWith(prefix) };
  }
  // The schema refused patterns the linear-time engine cannot run before they got here.
  const regex = compileBoundedRegex(h.regex!);
  return { name: h.name, test: (v) => regex.test(v) };
}

/** One route, ready for per-request use. */
export class RouteRules {
  readonly name: string;
  readonly subset: string | undefined;
  readonly split: TrafficPolicy['split'];
  /** Over all tries, until the response head; undefined = no limit. */
  readonly timeoutMs: number | undefined;
  readonly retry: RetryRules;
  readonly rateLimit: TokenBucket | undefined;
  /** Undefined: every request. */
  readonly #match: CompiledMatch | undefined;

  constructor(name: string, subset: string | undefined, split: TrafficPolicy['split'], timeoutMs: number | undefined, retry: RetryRules, rateLimit: TokenBucket | undefined, match: CompiledMatch | undefined) {
    this.name = name;
    this.subset = subset;
    this.split = split;
    this.timeoutMs = timeoutMs;
    this.retry = retry;
    this.rateLimit = rateLimit;
    this.#match = match;
  }

  matches(request: RouteRequest): boolean {
    const m = this.#match;
    if (!m) return true;
    if (m.method !== undefined && request.method !== m.method) return false;
    if (m.pathExact !== undefined || m.pathPrefix !== undefined) {
      const target = request.target;
      const q = target.indexOf('?');
      const path = q < 0 ? target : target.slice(0, q);
      if (m.pathExact !== undefined ? path !== m.pathExact : !path.startsWith(m.pathPrefix!)) return false;
    }
    for (const h of m.headers) {
      const value = request.header(h.name);
      if (value === undefined || !h.test(value)) return false;
    }
    return true;
  }
}
