import test from 'ava';
import { HeartbeatFreshness, heartbeatSequence, nextHeartbeatSequence } from '../../federation/heartbeat-freshness.js';

const STALE_AFTER_MS = 15_000;
const T0 = Date.parse('2026-12-01T10:00:00.000Z');
const beat = (sequence: number | undefined, atMs = sequence ?? T0) => ({ at: new Date(atMs).toISOString(), ...(sequence === undefined ? {} : { sequence }) });

test('the publisher\'s sequence is its clock, strictly above the last one written', (t) => {
  t.is(nextHeartbeatSequence(undefined, T0), T0);
  t.is(nextHeartbeatSequence(T0 - 5000, T0), T0, 'clock ahead of the last sequence: the clock');
  t.is(nextHeartbeatSequence(T0, T0), T0 + 1, 'same millisecond: one more');
  t.is(nextHeartbeatSequence(T0 + 60_000, T0), T0 + 60_001, 'clock stepped back (restart, another controller ahead): still advances');
  let last: number | undefined;
  for (let i = 0; i < 100; i++) {
    const next = nextHeartbeatSequence(last, T0);
    if (last !== undefined) t.true(next > last);
    last = next;
  }
});

test('a sequence advancing keeps the link fresh, measured on the local clock (whatever the owner\'s clock says)', (t) => {
  const f = new HeartbeatFreshness();
  const behind = T0 - 3_600_000; // the owner's clock is an hour behind ours
  let now = T0;
  t.deepEqual(f.observe(beat(behind), now), { advanced: true, advancedAtMs: behind }, 'the first beat is as old as its owner says');
  t.false(f.isFresh(now, STALE_AFTER_MS));
  for (let i = 1; i <= 10; i++) {
    now += 10_000;
    t.deepEqual(f.observe(beat(behind + i), now), { advanced: true, advancedAtMs: now });
    t.true(f.isFresh(now, STALE_AFTER_MS));
  }
  t.true(f.isFresh(now + STALE_AFTER_MS, STALE_AFTER_MS));
  t.false(f.isFresh(now + STALE_AFTER_MS + 1, STALE_AFTER_MS));
});

test('the same value put again (or listed again after a reconnect) does not freshen', (t) => {
  const f = new HeartbeatFreshness();
  f.observe(beat(T0 + 100), T0 + 100);
  for (let now = T0 + 1000; now < T0 + 60_000; now += 1000) t.deepEqual(f.observe(beat(T0 + 100), now), { advanced: false });
  t.is(f.advancedAtMs, T0 + 100);
  t.false(f.isFresh(T0 + 60_000, STALE_AFTER_MS));
  t.is(f.ageMs(T0 + 60_000, T0), 60_000 - 100);
});

test('a replayed older value does not freshen, even with a new `at`', (t) => {
  const f = new HeartbeatFreshness();
  f.observe(beat(T0 + 5000), T0 + 5000);
  t.deepEqual(f.observe(beat(T0 + 1000), T0 + 30_000), { advanced: false });
  t.deepEqual(f.observe(beat(T0 + 4999, T0 + 30_000), T0 + 30_000), { advanced: false }, 'a forged `at` does not help an old sequence');
  t.false(f.isFresh(T0 + 30_000, STALE_AFTER_MS));
  t.is(f.highestSequence, T0 + 5000);
});

test('a lease kept alive with no new beat: nothing is observed, so the link goes stale', (t) => {
  const f = new HeartbeatFreshness();
  f.observe(beat(T0), T0);
  // The key still exists; a relist returns the same value.
  t.deepEqual(f.observe(beat(T0), T0 + STALE_AFTER_MS + 1), { advanced: false });
  t.false(f.isFresh(T0 + STALE_AFTER_MS + 1, STALE_AFTER_MS));
  t.true(f.observe(beat(T0 + STALE_AFTER_MS + 2), T0 + STALE_AFTER_MS + 2).advanced, 'a real beat brings it back at once');
  t.true(f.isFresh(T0 + STALE_AFTER_MS + 2, STALE_AFTER_MS));
});

test('the first beat of a run is dated by the owner\'s `at`, never later than now: an old value put back after a restart is old', (t) => {
  const f = new HeartbeatFreshness();
  t.deepEqual(f.observe(beat(T0), T0 + 60_000), { advanced: true, advancedAtMs: T0 });
  t.false(f.isFresh(T0 + 60_000, STALE_AFTER_MS));
  const g = new HeartbeatFreshness();
  t.deepEqual(g.observe(beat(T0 + 60_000), T0), { advanced: true, advancedAtMs: T0 }, 'an owner clock ahead of ours gains nothing');
});

test('a restored advance time (from the last run\'s status) is not moved back by an older first beat', (t) => {
  const f = new HeartbeatFreshness(T0 + 500);
  t.is(f.ageMs(T0 + 10_500, 0), 10_000);
  t.deepEqual(f.observe(beat(T0 + 400), T0 + 10_500), { advanced: false });
  t.is(f.advancedAtMs, T0 + 500);
  t.true(f.observe(beat(T0 + 401), T0 + 11_000).advanced, 'the next real beat advances');
  t.is(f.advancedAtMs, T0 + 11_000);
});

test('heartbeats of older peers (no sequence) count by `at`, with the same rules', (t) => {
  t.is(heartbeatSequence(beat(undefined, T0)), T0);
  const f = new HeartbeatFreshness();
  t.true(f.observe(beat(undefined, T0), T0).advanced);
  t.false(f.observe(beat(undefined, T0), T0 + 1000).advanced, 'same value');
  t.false(f.observe(beat(undefined, T0 - 1), T0 + 2000).advanced, 'older value');
  t.deepEqual(f.observe(beat(undefined, T0 + 2000), T0 + 3000), { advanced: true, advancedAtMs: T0 + 3000 });
  t.true(f.observe(beat(T0 + 2001), T0 + 4000).advanced, 'a peer upgraded mid-run keeps advancing: sequence and `at` share a unit');
});

test('before any beat the age runs from the link\'s start and the link is not fresh', (t) => {
  const f = new HeartbeatFreshness();
  t.is(f.ageMs(T0 + 3000, T0), 3000);
  t.false(f.isFresh(T0, STALE_AFTER_MS));
});
