import test from 'ava';
import { CaErrorCodes, createIntermediateCa, createRootCa, mintJoinToken, verifyJoinToken, type KeyType } from '../../ca/index.js';

const reviews = 'spiffe://causeway.internal/ns/default/sa/reviews';

for (const keyType of ['ec-p384', 'rsa-2048'] as KeyType[]) {
  test(`tokens minted with a ${keyType} intermediate verify (${keyType.startsWith('rsa') ? 'RS256' : 'ES384'})`, async (t) => {
    const root = await createRootCa({ trustDomain: 'causeway.internal', keyType });
    const ca = await createIntermediateCa(root, { cluster: 'east', keyType });
    const token = mintJoinToken(ca, { spiffeId: reviews });
    const header = JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString()) as { alg: string };
    t.is(header.alg, keyType.startsWith('rsa') ? 'RS256' : 'ES384');
    t.is(verifyJoinToken(token, ca).sub, reviews);
  });
}

test('token lifetimes: minting refuses more than 7 days; a verifier with a lower limit refuses longer tokens; a token from the future is refused', async (t) => {
  const root = await createRootCa({ trustDomain: 'causeway.internal' });
  const ca = await createIntermediateCa(root, { cluster: 'east' });
  t.throws(() => mintJoinToken(ca, { spiffeId: reviews, ttlSeconds: 8 * 86_400 }), { code: CaErrorCodes.tokenTtlInvalid });
  t.throws(() => mintJoinToken(ca, { spiffeId: 'spiffe://elsewhere/ns/default/sa/reviews' }), { code: CaErrorCodes.identityInvalid });
  const day = mintJoinToken(ca, { spiffeId: reviews, ttlSeconds: 86_400 });
  t.throws(() => verifyJoinToken(day, ca, { maxTtlSeconds: 3600 }), { code: CaErrorCodes.tokenTtlInvalid });
  const future = mintJoinToken(ca, { spiffeId: reviews, now: new Date(Date.now() + 3_600_000) });
  t.throws(() => verifyJoinToken(future, ca), { code: CaErrorCodes.tokenExpired, message: /check the clocks/ });
  const claims = verifyJoinToken(mintJoinToken(ca, { spiffeId: reviews }), ca);
  t.like(claims, { sub: reviews, aud: 'controller.east.cw1.causeway.internal', iss: 'spiffe://causeway.internal/cluster/east' });
  t.is(claims.exp - claims.iat, 3600);
});
