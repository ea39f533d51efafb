import test from 'ava';
import { Backoff } from '../../mesh/backoff.js';

test('backoff: ceilings double up to maxMs and reset starts over', (t) => {
  const backoff = new Backoff({ initialMs: 100, maxMs: 1000, jitter: false });
  t.deepEqual([backoff.next(), backoff.next(), backoff.next(), backoff.next(), backoff.next()], [100, 200, 400, 800, 1000]);
  backoff.reset();
  t.is(backoff.next(), 100);
});

test('backoff: jittered delays stay between half the initial delay and the ceiling', (t) => {
  const backoff = new Backoff({ initialMs: 100, maxMs: 400 });
  for (let i = 0; i < 200; i++) {
    const delay = backoff.next();
    t.true(delay >= 50 && delay <= 400, `delay ${delay}`);
  }
});

test('backoff: refuses a range that cannot work', (t) => {
  t.throws(() => new Backoff({ initialMs: 0, maxMs: 10 }), { message: /0 < initialMs <= maxMs/ });
  t.throws(() => new Backoff({ initialMs: 100, maxMs: 10 }), { message: /0 < initialMs <= maxMs/ });
});
