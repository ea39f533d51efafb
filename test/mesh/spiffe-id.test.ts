import test from 'ava';
import fc from 'fast-check';
import { ErrorCodes, InvalidNameError, formatSpiffeId, parseSpiffeId } from '../../mesh/index.js';

test('parses Istio-form SPIFFE IDs', (t) => {
  t.deepEqual(parseSpiffeId('spiffe://causeway.internal/ns/default/sa/reviews_v2'), {
    trustDomain: 'causeway.internal',
    namespace: 'default',
    serviceAccount: 'reviews_v2',
  });
});

test('property: format then parse is the identity', (t) => {
  const td = fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,30}$/);
  const ns = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?$/);
  const sa = fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,30}$/);
  fc.assert(
    fc.property(td, ns, sa, (trustDomain, namespace, serviceAccount) => {
      const id = { trustDomain, namespace, serviceAccount };
      t.deepEqual(parseSpiffeId(formatSpiffeId(id)), id);
    }),
  );
});

const refusals: Array<[string, string, RegExp]> = [
  ['wrong scheme', 'https://causeway.internal/ns/default/sa/x', /spiffe:\/\//],
  ['upper-case scheme', 'SPIFFE://causeway.internal/ns/default/sa/x', /spiffe:\/\//],
  ['upper-case trust domain', 'spiffe://Causeway.internal/ns/default/sa/x', /trust domain/],
  ['port in trust domain', 'spiffe://causeway.internal:443/ns/default/sa/x', /port/],
  ['user info', 'spiffe://me@causeway.internal/ns/default/sa/x', /user info/],
  ['query', 'spiffe://causeway.internal/ns/default/sa/x?y=1', /query/],
  ['percent-encoding', 'spiffe://causeway.internal/ns/default/sa/x%20y', /percent/],
  ['no path', 'spiffe://causeway.internal', /no path/],
  ['not Istio form', 'spiffe://causeway.internal/workload/x', /\/ns\/<namespace>\/sa\//],
  ['dot segment', 'spiffe://causeway.internal/ns/default/sa/..', /"\." or "\.\."/],
  ['empty service account', 'spiffe://causeway.internal/ns/default/sa/', /empty/],
  ['namespace with underscore', 'spiffe://causeway.internal/ns/my_ns/sa/x', /namespace/],
  ['trailing slash', 'spiffe://causeway.internal/ns/default/sa/x/', /path must be/],
  ['too long', `spiffe://causeway.internal/ns/default/sa/${'a'.repeat(2100)}`, /2048 bytes/],
];
for (const [what, input, message] of refusals) {
  test(`refuses ${what}`, (t) => {
    const error = t.throws(() => parseSpiffeId(input), { instanceOf: InvalidNameError });
    t.is(error.code, ErrorCodes.spiffeInvalid);
    t.regex(error.message, message);
  });
}
