// The view's "expiring" window over certificates of every lifetime (a pure function: no
// process needed). A sidecar renews at half-life ± 10 %, so a certificate is flagged only
// once its renewal is overdue: under 6 h left, or under 30 % of its lifetime if sooner.
import test from 'ava';
import { certificateExpiry, expiringCertificates, type ServedCertificates } from '../../ui/index.js';

const labels = (identity: string) => ({ cluster: 'east', identity, instance: '10.0.0.1:15090' });

function served(...certificates: ReturnType<typeof certificateExpiry>[]): ServedCertificates {
  return { source: 'scrape', error: undefined, served: certificates };
}

test('a 30 s certificate between renewals is not expiring; one past its renewal point is', (t) => {
  const now = Date.UTC(2026, 11, 7, 6, 0, 0);
  const s = now / 1000;
  // Issued 15 s ago, 15 s left: at its renewal point (renewals at 12-18 s), not overdue.
  const renewing = certificateExpiry(labels('spiffe://td/ns/a/sa/renewing'), s + 15, now, s - 15);
  // Issued 25 s ago, 5 s left: its renewal is overdue.
  const overdue = certificateExpiry(labels('spiffe://td/ns/a/sa/overdue'), s + 5, now, s - 25);
  t.is(renewing.lifetimeSeconds, 30);
  t.deepEqual(expiringCertificates(served(renewing, overdue)).expiring.map((c) => c.identity), ['spiffe://td/ns/a/sa/overdue']);
});

test('a 24 h certificate is expiring under 6 h left; an older sidecar (no issue time) keeps the fixed 6 h window', (t) => {
  const now = Date.UTC(2026, 11, 7, 6, 0, 0);
  const s = now / 1000;
  const fresh = certificateExpiry(labels('spiffe://td/ns/a/sa/fresh'), s + 20 * 3600, now, s - 4 * 3600);
  const late = certificateExpiry(labels('spiffe://td/ns/a/sa/late'), s + 5 * 3600, now, s - 19 * 3600);
  const unknownLifetime = certificateExpiry(labels('spiffe://td/ns/a/sa/old-sidecar'), s + 5 * 3600, now);
  t.is(unknownLifetime.lifetimeSeconds, undefined);
  const expiring = expiringCertificates(served(fresh, late, unknownLifetime)).expiring.map((c) => c.identity);
  t.deepEqual(expiring.sort(), ['spiffe://td/ns/a/sa/late', 'spiffe://td/ns/a/sa/old-sidecar']);
});

test('an issue time at or after notAfter (bad input) is ignored rather than giving a negative lifetime', (t) => {
  const now = Date.UTC(2026, 11, 7, 6, 0, 0);
  const s = now / 1000;
  t.is(certificateExpiry(labels('x'), s + 60, now, s + 120).lifetimeSeconds, undefined);
  t.is(certificateExpiry(labels('x'), s + 60, now, Number.NaN).lifetimeSeconds, undefined);
});
