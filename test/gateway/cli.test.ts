import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import test from 'ava';
import { startProcess } from '../../testkit/index.js';
import { ECHO_SNI, TD, closed, makePki, startEchoServer } from './helpers.js';

const bin = fileURLToPath(new URL('../../bin/causeway.js', import.meta.url));

async function startCli(t: import('ava').ExecutionContext, routes: string, workers: number) {
  const dir = mkdtempSync(join(tmpdir(), 'cw-gw-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'routes.yaml');
  writeFileSync(file, routes);
  const proc = startProcess(process.execPath, [bin, 'gateway', '--routes', file, '--host', '127.0.0.1', '--port', '0', '--ready-port', '0', '--metrics-port', '0', '--workers', String(workers)], {
    name: 'causeway gateway',
    env: { ...process.env, CAUSEWAY_LOG_LEVEL: 'info' },
  });
  t.teardown(() => proc.kill());
  const line = await proc.waitForOutput(/gateway listening on port \d+ \(ready :\d+, metrics :\d+\)/, 120_000);
  const [port, readyPort, metricsPort] = [...line.matchAll(/\d+/g)].map((m) => Number(m[0]));
  return { proc, port: port!, readyPort: readyPort!, metricsPort: metricsPort! };
}

function commandLine(pid: number): string {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
}

/** A TLS client that echoes `rounds` messages through the gateway, one after another. */
function pingPong(port: number, pki: ReturnType<typeof makePki>) {
  const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port, servername: ECHO_SNI, ca: pki.ca, cert: pki.client.cert, key: pki.client.key, checkServerIdentity: () => undefined });
  socket.on('error', () => undefined);
  let pending: { expect: Buffer; got: Buffer[]; resolve: (ok: boolean) => void } | undefined;
  socket.on('data', (chunk: Buffer) => {
    if (!pending) return;
    pending.got.push(chunk);
    const got = Buffer.concat(pending.got);
    if (got.length >= pending.expect.length) {
      const done = pending;
      pending = undefined;
      done.resolve(got.equals(done.expect));
    }
  });
  socket.on('close', () => pending?.resolve(false));
  return {
    socket,
    secure: new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject)),
    round(): Promise<boolean> {
      const expect = randomBytes(2048);
      return new Promise((resolve) => {
        pending = { expect, got: [], resolve };
        socket.write(expect);
      });
    },
  };
}

for (const workers of [1, 2]) {
  test(`SIGTERM under load (${workers} worker${workers > 1 ? 's' : ''}): no established connection is dropped, new ones are refused, the process exits 0`, async (t) => {
    const pki = makePki();
    t.teardown(() => pki.cleanup());
    const echo = await startEchoServer(pki);
    t.teardown(() => echo.close());
    const { proc, port, readyPort, metricsPort } = await startCli(
      t,
      `cluster: east\ntrustDomain: ${TD}\nroutes:\n  - service: echo.default\n    endpoints: [127.0.0.1:${echo.port}]\n`,
      workers,
    );
    t.is((await fetch(`http://127.0.0.1:${readyPort}/healthz/ready`)).status, 200);
    // `causeway gateway` replaced itself with its bundle (same pid), and forks workers from it.
    const pid = proc.child.pid!;
    t.regex(commandLine(pid), /\/dist\/gateway\.mjs gateway --routes /);
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    t.is(children.length, workers > 1 ? workers : 0);
    for (const child of children) t.regex(commandLine(Number(child)), /\/dist\/gateway\.mjs gateway --routes /);

    const clients = Array.from({ length: 16 }, () => pingPong(port, pki));
    await Promise.all(clients.map((c) => c.secure));
    // Keep every connection busy while the signal arrives.
    let stop = false;
    const loads = clients.map(async (c) => {
      let rounds = 0;
      while (!stop) {
        if (!(await c.round())) return -1;
        rounds++;
      }
      // And a few more after the drain began.
      for (let i = 0; i < 5; i++) if (!(await c.round())) return -1;
      c.socket.end();
      await closed(c.socket);
      return rounds;
    });
    await new Promise((r) => setTimeout(r, 200));
    // /metrics (aggregated over the workers) sees every open connection.
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    t.regex(metrics, /^causeway_gateway_active_connections(\{[^}]*\})? 16$/m);
    t.regex(metrics, /^causeway_ready\{component="gateway"\} 1$/m, 'readiness is a metric too (the primary\'s own, beside the workers\')');
    proc.child.kill('SIGTERM');
    await proc.waitForOutput('draining', 10_000).catch(() => undefined);
    // The listener is closed: a new connection is refused (or closed without an answer).
    const late = tcpConnect({ host: '127.0.0.1', port });
    late.on('error', () => undefined);
    await closed(late);
    stop = true;
    const results = await Promise.all(loads);
    t.false(results.includes(-1), `every connection kept echoing through the drain: ${JSON.stringify(results)}`);
    t.is(await proc.exited, 0);
    t.regex(proc.output(), /gateway stopped/);
  });
}

test('a routes file with a bad value is a usage error naming the path (exit 2)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-gw-cli-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'routes.yaml');
  writeFileSync(file, 'routes:\n  - cluster: west\n    gateways: ["nope"]\n');
  const proc = startProcess(process.execPath, [bin, 'gateway', '--routes', file, '--workers', '1'], { name: 'causeway gateway' });
  t.is(await proc.exited, 2);
  t.regex(proc.output(), /routes\[0\]/);
});
