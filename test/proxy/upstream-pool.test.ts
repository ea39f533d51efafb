import test from 'ava';
import { once } from 'node:events';
import { connect as netConnect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { UpstreamPool, type UpstreamConnection } from '../../proxy/http1-relay.js';
import { waitFor } from '../../testkit/ports.js';

// The pool's queueing, on real TCP connections to a real listener. A "slow connect" is a
// real connect started after a delay: it stands for a TLS handshake on a busy host.

/** A listener that closes with every connection it accepted (so a test leaves nothing open). */
async function listener(): Promise<{ server: Server; port: number; close: () => void }> {
  const accepted: Socket[] = [];
  const server = createServer((s) => {
    accepted.push(s);
    s.on('error', () => {});
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const close = () => {
    server.close();
    for (const s of accepted) s.destroy();
  };
  return { server, port: (server.address() as AddressInfo).port, close };
}

/** A closed port: connecting to it is refused. */
async function closedPort(): Promise<number> {
  const { server, port, close } = await listener();
  close();
  await once(server, 'close');
  return port;
}

function dialer(port: number, delayMs: number) {
  const dial = {
    started: 0,
    inFlight: 0,
    maxInFlight: 0,
    open: (): Promise<Socket> => {
      dial.started++;
      dial.inFlight++;
      dial.maxInFlight = Math.max(dial.maxInFlight, dial.inFlight);
      return new Promise<Socket>((resolve, reject) => {
        setTimeout(() => {
          const s = netConnect({ host: '127.0.0.1', port });
          s.once('connect', () => {
            dial.inFlight--;
            resolve(s);
          });
          s.once('error', (e) => {
            dial.inFlight--;
            reject(e);
          });
        }, delayMs);
      });
    },
  };
  return dial;
}

test('a queued request takes a busy connection released before its own connect finishes', async (t) => {
  const { port, close } = await listener();
  t.teardown(close);
  // The first connect is immediate; later ones take 300 ms, the release below comes after 20.
  const slow = dialer(port, 300);
  let connects = 0;
  const pool = new UpstreamPool(() => (connects++ === 0 ? dialer(port, 0).open() : slow.open()), { max: 8, idleMs: 60_000 });
  t.teardown(() => pool.destroy());
  const held = await pool.acquire();
  const waiting = pool.acquire();
  t.is(pool.queued, 1, 'the second request waits at the pool');
  setTimeout(() => pool.release(held, true), 20);
  const got = await waiting;
  // Timers run in order: the release (20 ms) comes before the connect (300 ms) lands.
  t.is(got, held, 'it got the released connection, not the one still connecting');
  // The connect started for it still completes, and its connection waits idle for the next request.
  await new Promise((r) => setTimeout(r, 400));
  t.is(pool.size, 2);
  const next = pool.takeIdle();
  t.truthy(next);
  t.not(next, got);
  t.false(next!.closed);
});

test('at most maxConnecting connects at once; every queued request is still served', async (t) => {
  const { port, close } = await listener();
  t.teardown(close);
  const dial = dialer(port, 30);
  const pool = new UpstreamPool(() => dial.open(), { max: 64, idleMs: 60_000, maxConnecting: 2 });
  t.teardown(() => pool.destroy());
  const requests = Array.from({ length: 12 }, () => pool.acquire());
  t.is(pool.queued, 12);
  t.is(dial.started, 2, 'two connects for twelve queued requests');
  // Each connection serves its request and goes back; the queue drains through them.
  const served: UpstreamConnection[] = [];
  await Promise.all(
    requests.map((r) =>
      r.then((c) => {
        served.push(c);
        setTimeout(() => pool.release(c, true), 5);
      }),
    ),
  );
  t.is(served.length, 12);
  t.true(dial.maxInFlight <= 2, `never more than two connects in flight (saw ${dial.maxInFlight})`);
  t.true(pool.size < 12, `fewer connections than requests (${pool.size})`);
  t.is(pool.queued, 0);
});

test('max caps the connections: beyond it requests wait for a release', async (t) => {
  const { port, close } = await listener();
  t.teardown(close);
  const dial = dialer(port, 0);
  const pool = new UpstreamPool(() => dial.open(), { max: 2, idleMs: 60_000, maxConnecting: 4 });
  t.teardown(() => pool.destroy());
  const a = await pool.acquire();
  const b = await pool.acquire();
  const third = pool.acquire();
  await new Promise((r) => setTimeout(r, 50));
  t.is(dial.started, 2, 'no third connection');
  t.is(pool.queued, 1);
  pool.release(b, true);
  t.is(await third, b);
  pool.release(a, true);
  pool.release(b, true);
});

test('a failed connect with no connection left to release fails every queued request', async (t) => {
  const dial = dialer(await closedPort(), 0);
  const pool = new UpstreamPool(() => dial.open(), { max: 64, idleMs: 60_000, maxConnecting: 2 });
  t.teardown(() => pool.destroy());
  const results = await Promise.allSettled(Array.from({ length: 6 }, () => pool.acquire()));
  t.true(
    results.every((r) => r.status === 'rejected' && (r.reason as NodeJS.ErrnoException).code === 'ECONNREFUSED'),
    'all six see the refusal (and can fail over), not only the two whose connects ran',
  );
  t.is(dial.started, 2, 'without a connect each: the first failure answered them all');
  await waitFor(() => dial.inFlight === 0, { what: 'the second connect to settle', intervalMs: 5 });
  t.is(pool.size, 0, 'the second failed connect is not counted either');
  t.is(pool.queued, 0);
});

test('a failed connect while a connection is busy fails only the oldest queued request; the rest take the release', async (t) => {
  const { port, close } = await listener();
  t.teardown(close);
  const refused = await closedPort();
  let connects = 0;
  // The first connect succeeds; later ones are refused.
  const pool = new UpstreamPool(() => dialer(connects++ === 0 ? port : refused, 0).open(), { max: 64, idleMs: 60_000, maxConnecting: 1 });
  t.teardown(() => pool.destroy());
  const busy = await pool.acquire();
  const oldest = pool.acquire();
  const younger = pool.acquire();
  await t.throwsAsync(oldest, { code: 'ECONNREFUSED' });
  pool.release(busy, true);
  const got = await younger;
  t.is(got, busy, 'the younger request got the released connection');
  pool.release(got, true);
});

test('destroy fails queued requests and refuses new ones', async (t) => {
  const { port, close } = await listener();
  t.teardown(close);
  const pool = new UpstreamPool(() => dialer(port, 200).open(), { max: 4, idleMs: 60_000 });
  const queued = pool.acquire();
  pool.destroy();
  await t.throwsAsync(queued, { message: /pool was closed/ });
  await t.throwsAsync(pool.acquire(), { message: /pool was closed/ });
  // The connect that was under way is closed when it lands, not leaked into the pool.
  await new Promise((r) => setTimeout(r, 300));
  t.is(pool.size, 0);
});
