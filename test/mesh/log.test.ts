import { Writable } from 'node:stream';
import test from 'ava';
import { createRootLogger } from '../../mesh/index.js';

/** A root logger writing synchronously into an array of raw JSON lines. */
function capture(): { root: ReturnType<typeof createRootLogger>; lines: string[] } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(line);
      done();
    },
  });
  return { root: createRootLogger({ level: 'info', destination }), lines };
}

const moduleKeys = (line: string) => line.match(/"module":/g)?.length ?? 0;

test('regression: a sidecar child logger with its own module writes one "module" key per line, nested as parent/child', (t) => {
  const { root, lines } = capture();
  // What proxy/run.ts and proxy/sidecar.ts do: a module logger, then children naming their part.
  const sidecar = root.child({ module: 'sidecar' });
  const outbound = sidecar.child({ module: 'outbound' });
  const listener = outbound.child({ module: 'http', port: 15001 });
  sidecar.info('up');
  outbound.info({ target: 'reviews' }, 'connected');
  outbound.child({ peer: 'west' }).warn('no module of its own');
  listener.info('listening');
  t.is(lines.length, 4);
  for (const line of lines) t.is(moduleKeys(line), 1, line);
  const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.deepEqual(
    parsed.map((p) => p.module),
    ['sidecar', 'sidecar/outbound', 'sidecar/outbound', 'sidecar/outbound/http'],
  );
  t.is(parsed[1]!.target, 'reviews');
  t.is(parsed[2]!.peer, 'west');
  t.is(parsed[3]!.port, 15001);
  // Bindings other than module stay as they were, once each.
  for (const line of lines) t.is(line.match(/"pid":/g)?.length, 1);
});

test('a module logger under a root without a module is unchanged', (t) => {
  const { root, lines } = capture();
  root.child({ module: 'gateway', worker: 2 }).info('hello');
  t.is(lines.length, 1);
  t.is(moduleKeys(lines[0]!), 1);
  t.like(JSON.parse(lines[0]!), { module: 'gateway', worker: 2, msg: 'hello' });
});
