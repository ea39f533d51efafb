import test from 'ava';
import { ErrorCodes, MAX_PATTERN_LENGTH, TrafficPolicy, ValidationError, compileBoundedRegex, validate } from '../../mesh/index.js';
import { SidecarTuning } from '../../proxy/config.js';
import { retryableOutcome, retryBudgetAllows, DEFAULT_RETRY_ON } from '../../proxy/retry-policy.js';
import { OutlierDetector, planTargets } from '../../proxy/target-balancer.js';
import { TokenBucket } from '../../proxy/token-bucket.js';
import { compileRoutes, type RouteRequest } from '../../proxy/traffic-routes.js';
import { endpointTarget, gatewayTarget, service } from './helpers/mesh.js';

const base = { schema: 1, name: 'canary', namespace: 'default', service: 'reviews' };

function refusal(value: unknown): ValidationError {
  const error = (() => {
    try {
      validate(TrafficPolicy, value, 'policy.yaml', ErrorCodes.configInvalid);
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  if (!(error instanceof ValidationError)) throw new Error(`accepted: ${JSON.stringify(value)}`);
  return error;
}

function request(method: string, target: string, headers: Record<string, string> = {}): RouteRequest {
  return { method, target, header: (name) => headers[name] };
}

test('a policy with routes is accepted, header names lower-cased and methods upper-cased; one without routes is unchanged', (t) => {
  const policy = validate(
    TrafficPolicy,
    {
      ...base,
      routes: [
        { name: 'canary', match: { headers: [{ name: 'X-Canary', exact: '1' }] }, subset: 'v2' },
        { name: 'api', match: { path: { prefix: '/api/' }, method: 'post' }, timeoutMs: 500, retries: { attempts: 1, on: ['5xx'] }, rateLimit: { requestsPerSecond: 5 } },
      ],
    },
    'policy.yaml',
    ErrorCodes.configInvalid,
  );
  t.is(policy.routes![0]!.match.headers[0]!.name, 'x-canary');
  t.is(policy.routes![1]!.match.method, 'POST');
  t.deepEqual(validate(TrafficPolicy, { ...base, retries: 2 }, 'p', ErrorCodes.configInvalid), { ...base, retries: 2 });
});

test('invalid routes are refused with the exact path of each bad value', (t) => {
  const routes = [
    { name: 'ok', match: { path: { exact: '/' } } },
    { name: 'both', subset: 'v1', split: [{ subset: 'v2', weight: 1 }] },
    { name: 'bad', match: { headers: [{ name: 'x-user', regex: '(a)\\1' }, { name: 'x-two', exact: 'a', prefix: 'b' }], path: { prefix: 'api' } }, retries: { attempts: 11, on: ['sometimes'] }, rateLimit: { requestsPerSecond: 0 } },
    { name: 'default' },
  ];
  const error = refusal({ ...base, routes });
  const byPath = new Map(error.issues.map((i) => [i.path, i.message]));
  t.regex(byPath.get('routes[1].subset') ?? '', /subset or split, not both/);
  t.regex(byPath.get('routes[2].match.headers[0].regex') ?? '', /back-references or lookahead/);
  t.regex(byPath.get('routes[2].match.headers[1]') ?? '', /exactly one of exact, prefix, regex \(got exact, prefix\)/);
  t.regex(byPath.get('routes[2].match.path.prefix') ?? '', /starts with \//);
  t.true(byPath.has('routes[2].retries.attempts'));
  t.true(byPath.has('routes[2].retries.on[0]'));
  t.true(byPath.has('routes[2].rateLimit.requestsPerSecond'));
  t.regex(byPath.get('routes[3].name') ?? '', /"default" is the name of the route made of the top-level fields/);
  t.regex(error.message, /^policy\.yaml: /);
  // Names are checked once every route is valid on its own.
  t.deepEqual(refusal({ ...base, routes: [{ name: 'a' }, { name: 'b' }, { name: 'a' }] }).issues.map((i) => i.path), ['routes[2].name']);
});

test('regex: a catastrophic pattern runs in linear time; unusable, invalid and overlong patterns are refused with the reason', (t) => {
  // (a+)+$ against a long run of a's and one b takes exponential time on a backtracking engine.
  const catastrophic = compileBoundedRegex('(a+)+');
  const started = performance.now();
  t.false(catastrophic.test(`${'a'.repeat(100_000)}b`));
  t.true(performance.now() - started < 5_000, 'linear, not exponential');
  t.true(compileBoundedRegex('(a+)+').test('aaaa'));
  // Anchored to the whole value, as Envoy's safe_regex.
  t.false(compileBoundedRegex('v[0-9]').test('xv1'));
  const issue = (regex: string) => refusal({ ...base, routes: [{ name: 'r', match: { headers: [{ name: 'x', regex }] } }] }).issues[0]!;
  t.is(issue('(?=a)a').path, 'routes[0].match.headers[0].regex');
  t.regex(issue('(?=a)a').message, /linear-time engine refuses/);
  t.regex(issue('a(').message, /not a valid regular expression/);
  t.regex(issue('a'.repeat(MAX_PATTERN_LENGTH + 1)).message, new RegExp(`at most ${MAX_PATTERN_LENGTH}`));
  t.throws(() => compileBoundedRegex('(a)\\1'), { message: /back-references/ });
});

test('routes: first match wins by method, exact path, path prefix (query ignored) and headers; else the default route from the top-level fields', (t) => {
  const policy = validate(
    TrafficPolicy,
    {
      ...base,
      retries: 1,
      requestTimeoutMs: 700,
      split: [{ subset: 'v1', weight: 1 }],
      routes: [
        { name: 'canary', match: { headers: [{ name: 'x-canary', exact: '1' }] }, subset: 'v2' },
        { name: 'health', match: { path: { exact: '/healthz' } }, subset: 'v1' },
        { name: 'writes', match: { path: { prefix: '/api/' }, method: 'POST', headers: [{ name: 'x-user', regex: 'u[0-9]+' }] }, timeoutMs: 300, retries: { attempts: 4, perTryTimeoutMs: 100 } },
      ],
    },
    'p',
    ErrorCodes.configInvalid,
  );
  const routes = compileRoutes(policy, 3, undefined);
  const name = (r: RouteRequest) => routes.select(r).name;
  t.is(name(request('GET', '/', { 'x-canary': '1' })), 'canary');
  t.is(name(request('GET', '/', { 'x-canary': '0' })), 'default');
  t.is(name(request('GET', '/healthz?full=1')), 'health');
  t.is(name(request('GET', '/healthz/x')), 'default');
  t.is(name(request('POST', '/api/items', { 'x-user': 'u42' })), 'writes');
  t.is(name(request('POST', '/api/items', { 'x-user': 'u42x' })), 'default', 'regex matches the whole value');
  t.is(name(request('GET', '/api/items', { 'x-user': 'u42' })), 'default');
  t.is(name(request('POST', '/api/items', { 'x-canary': '1', 'x-user': 'u1' })), 'canary', 'the first route that matches');
  t.is(routes.select(undefined).name, 'default', 'a TCP connection takes the default route');
  const fallback = routes.fallback;
  t.deepEqual([fallback.retry.tries, fallback.retry.perTryTimeoutMs, fallback.split], [2, 700, [{ subset: 'v1', weight: 1 }]]);
  const writes = routes.byName('writes')!;
  t.deepEqual([writes.retry.tries, writes.retry.perTryTimeoutMs, writes.timeoutMs], [5, 100, 300]);
  t.is(compileRoutes(undefined, 3, undefined).fallback.retry.tries, 3, "no policy: the sidecar's maxAttempts");
});

test('rate-limit buckets survive a new snapshot unless their limits change', (t) => {
  const policy = (rps: number) => validate(TrafficPolicy, { ...base, routes: [{ name: 'limited', rateLimit: { requestsPerSecond: rps } }] }, 'p', ErrorCodes.configInvalid);
  const first = compileRoutes(policy(2), 3, undefined);
  const bucket = first.byName('limited')!.rateLimit!;
  t.is(compileRoutes(policy(2), 3, first).byName('limited')!.rateLimit, bucket);
  t.not(compileRoutes(policy(3), 3, first).byName('limited')!.rateLimit, bucket);
});

test('token bucket: burst at once, then refills at its rate', (t) => {
  let now = 0;
  const bucket = new TokenBucket(2, 3, () => now);
  t.deepEqual([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [true, true, true, false]);
  now += 499;
  t.false(bucket.take());
  now += 1;
  t.true(bucket.take(), 'one token after 500 ms at 2/s');
  now += 60_000;
  t.deepEqual([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [true, true, true, false], 'never more than the burst');
});

test('retryableOutcome: the on-conditions, including gRPC statuses and retriable status codes', (t) => {
  const rules = (on: string[], codes: number[] = [503]) => ({ on: new Set(on) as never, retriableStatusCodes: new Set(codes) });
  const defaults = rules([...DEFAULT_RETRY_ON]);
  t.true(retryableOutcome({ kind: 'connect-failure' }, defaults));
  t.true(retryableOutcome({ kind: 'refused-stream' }, defaults));
  t.true(retryableOutcome({ kind: 'response', status: 503 }, defaults));
  t.false(retryableOutcome({ kind: 'response', status: 500 }, defaults));
  t.false(retryableOutcome({ kind: 'response', status: 200 }, defaults));
  t.true(retryableOutcome({ kind: 'response', status: 200, grpcStatus: 14 }, defaults), 'gRPC UNAVAILABLE');
  t.true(retryableOutcome({ kind: 'response', status: 200, grpcStatus: 1 }, defaults), 'gRPC CANCELLED');
  t.false(retryableOutcome({ kind: 'response', status: 200, grpcStatus: 13 }, defaults), 'INTERNAL is not a default');
  t.true(retryableOutcome({ kind: 'response', status: 200, grpcStatus: 13 }, rules(['internal'])));
  t.true(retryableOutcome({ kind: 'response', status: 200, grpcStatus: 8 }, rules(['resource-exhausted'])));
  t.true(retryableOutcome({ kind: 'response', status: 200, grpcStatus: 4 }, rules(['deadline-exceeded'])));
  t.true(retryableOutcome({ kind: 'response', status: 500 }, rules(['5xx'])));
  t.true(retryableOutcome({ kind: 'timeout' }, rules(['5xx'])));
  t.true(retryableOutcome({ kind: 'response', status: 502 }, rules(['gateway-error'])));
  t.false(retryableOutcome({ kind: 'response', status: 500 }, rules(['gateway-error'])));
  t.true(retryableOutcome({ kind: 'response', status: 429 }, rules(['retriable-status-codes'], [429])));
  t.false(retryableOutcome({ kind: 'connect-failure' }, rules(['retriable-status-codes'])));
  t.false(retryableOutcome({ kind: 'reset' }, rules(['refused-stream'])));
});

test('retry budget: 20 % of active requests, at least 3 concurrent retries', (t) => {
  const budget = SidecarTuning.parse({}).retryBudget;
  t.deepEqual(budget, { percent: 20, minConcurrent: 3 });
  t.true(retryBudgetAllows(1, 2, budget));
  t.false(retryBudgetAllows(1, 3, budget), 'the floor');
  t.true(retryBudgetAllows(100, 19, budget));
  t.false(retryBudgetAllows(100, 20, budget));
});

test('sidecar defaults: 3 tries, outlier ejection after 5 failures for 30 s × times ejected up to 300 s, gateways 2 s', (t) => {
  const tuning = SidecarTuning.parse({});
  t.is(tuning.maxAttempts, 3);
  t.deepEqual(tuning.outlier, { consecutiveFailures: 5, baseEjectionMs: 30_000, maxEjectionMs: 300_000, gatewayMaxEjectionMs: 2_000 });
  let now = 0;
  const ejected: number[] = [];
  const outliers = new OutlierDetector(tuning.outlier, (_key, _reason, ms) => ejected.push(ms), () => now);
  for (let round = 0; round < 12; round++) {
    for (let i = 0; i < 5; i++) outliers.failure('a:1', 'http-5xx');
    now += 400_000;
  }
  t.deepEqual(ejected.slice(0, 4), [30_000, 60_000, 90_000, 120_000]);
  t.is(ejected.at(-1), 300_000, 'capped');
});

test("ejecting every target of one cluster fails over to the next cluster's targets, ejected ones kept last", (t) => {
  const outliers = new OutlierDetector(SidecarTuning.parse({}).outlier);
  const svc = service('reviews', [endpointTarget('east', 1), endpointTarget('east', 2), gatewayTarget('west', '127.0.0.1', 3, { priority: 1 })]);
  for (const port of [1, 2]) for (let i = 0; i < 5; i++) outliers.failure(`127.0.0.1:${port}`, 'http-5xx');
  const order = planTargets(svc, outliers).map((x) => x.port);
  t.is(order[0], 3, 'west first');
  t.deepEqual(order.slice(1).sort(), [1, 2], 'the ejected east endpoints stay as a last resort');
});
