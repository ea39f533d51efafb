import test from 'ava';
import fc from 'fast-check';
import { DEFAULT_CONTROLLER_SERVER_NAME, ErrorCodes, InvalidNameError, controllerSni, encodeSni, exportStoreSni, fallbackControllerServerName, lowerCaseServerName, parseSni } from '../../mesh/index.js';

const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$/);

test('round-trips the example from docs/architecture.md', (t) => {
  const text = '9080.v2.reviews.default.west.cw1.causeway.internal';
  const sni = parseSni(text);
  t.deepEqual(sni, { kind: 'service', port: 9080, subset: 'v2', service: 'reviews', namespace: 'default', cluster: 'west', trustDomain: 'causeway.internal' });
  t.is(encodeSni(sni), text);
});

test('"all" means any subset', (t) => {
  const sni = parseSni('443.all.api.prod.east.cw1.example.org');
  t.is(sni.kind, 'service');
  t.is(sni.kind === 'service' ? sni.subset : 'x', undefined);
});

test('controller names round-trip', (t) => {
  const text = controllerSni('west', 'causeway.internal');
  t.is(text, 'controller.west.cw1.causeway.internal');
  t.deepEqual(parseSni(text), { kind: 'controller', cluster: 'west', trustDomain: 'causeway.internal' });
});

test('export-store names round-trip, as their own kind', (t) => {
  const text = exportStoreSni('west', 'causeway.internal');
  t.is(text, 'exports.west.cw1.causeway.internal');
  t.deepEqual(parseSni(text), { kind: 'exports', cluster: 'west', trustDomain: 'causeway.internal' });
  t.deepEqual(parseSni('Exports.WEST.cw1.Causeway.internal'), parseSni(text));
  t.is(encodeSni(parseSni(text)), text);
  t.not(parseSni(controllerSni('west', 'causeway.internal')).kind, 'exports');
});

test('property: export-store names encode then parse to the same cluster and trust domain', (t) => {
  fc.assert(
    fc.property(label, fc.array(label, { minLength: 1, maxLength: 3 }), (cluster, td) => {
      const text = exportStoreSni(cluster, td.join('.'));
      t.deepEqual(parseSni(text), { kind: 'exports', cluster, trustDomain: td.join('.') });
    }),
  );
});

test('export-store encoding refuses what parsing would refuse', (t) => {
  t.throws(() => exportStoreSni('West', 'causeway.internal'), { instanceOf: InvalidNameError, message: /upper-case/ });
  t.throws(() => exportStoreSni('c'.repeat(33), 'causeway.internal'), { instanceOf: InvalidNameError, message: /longer than 32/ });
  t.throws(() => exportStoreSni('west', ''), { instanceOf: InvalidNameError, message: /trust domain|must not end/ });
  t.throws(() => exportStoreSni('we_st', 'causeway.internal'), { instanceOf: InvalidNameError, message: /"_"/ });
});

test('property: encode then parse is the identity', (t) => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 65535 }), fc.option(label.filter((l) => l !== 'all'), { nil: undefined }), label, label, label, fc.array(label, { minLength: 1, maxLength: 3 }), (port, subset, service, namespace, cluster, td) => {
      const parts = { port, subset, service, namespace, cluster, trustDomain: td.join('.') };
      const text = encodeSni(parts);
      t.deepEqual(parseSni(text), { kind: 'service', ...parts });
    }),
  );
});

test('regression: upper- and mixed-case server names parse as their lower-case form (DNS names are case-insensitive)', (t) => {
  const lower = parseSni('9080.v2.reviews.default.west.cw1.causeway.internal');
  t.deepEqual(parseSni('9080.V2.Reviews.DEFAULT.West.CW1.Causeway.Internal'), lower);
  t.deepEqual(parseSni('9080.V2.REVIEWS.DEFAULT.WEST.CW1.CAUSEWAY.INTERNAL'), lower);
  t.deepEqual(parseSni('Controller.East.cw1.causeway.INTERNAL'), { kind: 'controller', cluster: 'east', trustDomain: 'causeway.internal' });
  t.is(lowerCaseServerName('LEGACY.example.internal'), 'legacy.example.internal');
  const same = 'already.lower';
  t.is(lowerCaseServerName(same), same);
});

test('encoding writes lower case only: an upper-case part is refused, so parse(encode(x)) is x', (t) => {
  const error = t.throws(() => encodeSni({ port: 9080, subset: undefined, service: 'Reviews', namespace: 'default', cluster: 'west', trustDomain: 'causeway.internal' }), { instanceOf: InvalidNameError });
  t.regex(error.message, /upper-case/);
});

const refusals: Array<[string, string, RegExp]> = [
  ['empty', '', /empty/],
  ['a non-ASCII letter that lower-cases to ASCII (KELVIN SIGN)', '9080.all.\u212Aeys.default.west.cw1.causeway.internal', /upper-case|letters, digits/],
  ['underscore', '9080.all.my_svc.default.west.cw1.causeway.internal', /"_"/],
  ['unknown version', '9080.all.reviews.default.west.cw2.causeway.internal', /version "cw2" is not supported/],
  ['missing version', '9080.all.reviews.default.west.causeway.internal', /expected/],
  ['port zero', '0.all.reviews.default.west.cw1.causeway.internal', /port/],
  ['port too big', '65536.all.reviews.default.west.cw1.causeway.internal', /port/],
  ['leading-zero port', '080.all.reviews.default.west.cw1.causeway.internal', /port/],
  ['non-numeric port', 'http.all.reviews.default.west.cw1.causeway.internal', /port/],
  ['too long', `9080.all.reviews.default.west.cw1.${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.${'d'.repeat(60)}`, /at most 253/],
  ['label too long', `9080.all.${'r'.repeat(64)}.default.west.cw1.causeway.internal`, /longer than 63/],
  ['empty label', '9080..reviews.default.west.cw1.causeway.internal', /empty label/],
  ['trailing dot', '9080.all.reviews.default.west.cw1.causeway.internal.', /must not end/],
  ['leading hyphen', '9080.all.-reviews.default.west.cw1.causeway.internal', /not starting or ending/],
  ['no trust domain', '9080.all.reviews.default.west.cw1', /expected|trust domain/],
  ['cluster too long', `9080.all.reviews.default.${'c'.repeat(33)}.cw1.causeway.internal`, /longer than 32/],
  ['controller without trust domain', 'controller.west.cw1', /trust domain/],
  ['controller unknown version', 'controller.west.cw9.causeway.internal', /not supported/],
  ['export store without trust domain', 'exports.west.cw1', /trust domain/],
  ['export store without cluster', 'exports', /version|cluster|expected/],
  ['export store unknown version', 'exports.west.cw2.causeway.internal', /not supported/],
  ['export store missing version', 'exports.west.causeway.internal', /expected the format version/],
  ['export store bad cluster', `exports.${'c'.repeat(33)}.cw1.causeway.internal`, /longer than 32/],
  ['export store with an underscore', 'exports.we_st.cw1.causeway.internal', /"_"/],
  ['a misspelt export store', 'export.west.cw1.causeway.internal', /expected/],
];

for (const [what, input, message] of refusals) {
  test(`refuses ${what}`, (t) => {
    const error = t.throws(() => parseSni(input), { instanceOf: InvalidNameError });
    t.regex(error.message, message);
    t.true(error.code === ErrorCodes.sniInvalid || error.code === ErrorCodes.sniUnknownVersion);
  });
}

test('unknown version has its own code so gateways can count it apart', (t) => {
  const error = t.throws(() => parseSni('1.all.a.b.c.cw7.td'), { instanceOf: InvalidNameError });
  t.is(error.code, ErrorCodes.sniUnknownVersion);
});

test('property: arbitrary strings never crash the parser (they parse or throw InvalidNameError)', (t) => {
  fc.assert(
    fc.property(fc.string({ maxLength: 300 }), (input) => {
      try {
        const sni = parseSni(input);
        t.is(encodeSni(sni), lowerCaseServerName(input));
      } catch (error) {
        t.true(error instanceof InvalidNameError, String(error));
      }
    }),
    { numRuns: 2000 },
  );
});

test('a controller dialled by IP gets the fallback server name (no IP in SNI); one dialled by host name needs none', (t) => {
  t.is(fallbackControllerServerName('127.0.0.1:15012'), DEFAULT_CONTROLLER_SERVER_NAME);
  t.is(fallbackControllerServerName('[::1]:15012'), DEFAULT_CONTROLLER_SERVER_NAME);
  t.is(fallbackControllerServerName('controller-east:15012'), undefined);
});
