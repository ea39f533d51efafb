import test from 'ava';
import fc from 'fast-check';
import { CaError, createCsr, createIntermediateCa, createRootCa, generatePrivateKey, mintJoinToken, parseAndVerifyCsr, verifyJoinToken } from '../../ca/index.js';
import { pemEncode } from '../../ca/pem.js';
import { children, oid, decodeOid, readElement, sequence, time, unsignedInteger } from '../../ca/der.js';

const reviews = 'spiffe://causeway.internal/ns/default/sa/reviews';

/** Whatever the bytes, the CSR parser answers with a CaError (a gRPC refusal), never a crash (an INTERNAL). */
test('property: a mutated CSR is refused with a CaError or still verifies, never crashes the parser', async (t) => {
  const der = Buffer.from(createCsr(await generatePrivateKey(), reviews).replace(/-----[^-]+-----|\s/g, ''), 'base64');
  t.notThrows(() =>
    fc.assert(
    fc.property(fc.array(fc.tuple(fc.nat(der.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }), fc.option(fc.nat(der.length), { nil: undefined }), (edits, cut) => {
      const mutated = Buffer.from(der);
      for (const [at, value] of edits) mutated[at] = value;
      const input = pemEncode('CERTIFICATE REQUEST', cut === undefined ? mutated : mutated.subarray(0, cut));
      try {
        parseAndVerifyCsr(input);
      } catch (error) {
        if (!(error instanceof CaError)) throw error;
      }
    }),
    { numRuns: 1500 },
  ),
  );
});

test('property: random text as a CSR or as a join token is refused with a CaError', async (t) => {
  const root = await createRootCa({ trustDomain: 'causeway.internal' });
  const ca = await createIntermediateCa(root, { cluster: 'east' });
  const token = mintJoinToken(ca, { spiffeId: reviews });
  fc.assert(
    fc.property(fc.string({ maxLength: 300 }), fc.nat(token.length - 1), fc.string({ minLength: 1, maxLength: 3 }), (text, at, insert) => {
      t.throws(() => parseAndVerifyCsr(text), { instanceOf: CaError });
      t.throws(() => verifyJoinToken(text, ca), { instanceOf: CaError });
      const mutated = token.slice(0, at) + insert + token.slice(at + 1);
      if (mutated !== token) t.throws(() => verifyJoinToken(mutated, ca), { instanceOf: CaError });
    }),
    { numRuns: 300 },
  );
});

test('DER: OIDs, integers and times round-trip through the reader', (t) => {
  fc.assert(
    fc.property(fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), fc.nat(2), fc.nat(39), (arcs, first, second) => {
      const dotted = [first, second, ...arcs].join('.');
      t.is(decodeOid(readElement(oid(dotted)).content), dotted);
    }),
  );
  t.deepEqual(unsignedInteger(Buffer.from([0x80])), Buffer.from([0x02, 0x02, 0x00, 0x80]), 'a set top bit gets a leading zero');
  t.deepEqual(unsignedInteger(Buffer.from([0x00, 0x00, 0x7f])), Buffer.from([0x02, 0x01, 0x7f]), 'leading zeros are trimmed');
  t.is(time(new Date('2049-12-31T23:59:59Z')).toString('latin1', 2), '491231235959Z');
  t.is(time(new Date('2050-01-01T00:00:00Z')).toString('latin1', 2), '20500101000000Z', 'GeneralizedTime from 2050 (RFC 5280)');
  const long = sequence(Buffer.alloc(300, 1));
  t.is(children(readElement(sequence(long)).content)[0]?.content.length, 300, 'long-form lengths');
});
