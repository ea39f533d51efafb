// README "Running it by hand", run as written: the command blocks are read from README.md
// (between the by-hand markers), so the README and this test cannot drift apart, and fed
// one by one to one bash, as a user pastes them, in a copy of examples/one-host/.
//
// What differs from a user's terminal, and why:
// - the work dir: a fresh copy of examples/one-host/ under the repo's git-ignored .tmp/
//   (inside the repository, so `npx causeway` finds this checkout as it does from
//   examples/one-host), instead of the README's `cd examples/one-host`;
// - `set -m` first: an interactive bash has job control, a bash reading a pipe needs it
//   switched on, so each `&` job gets its own process group as the stop command expects.
// Nothing else is substituted. The ports are the README's fixed ones (27xxx/28xxx: below
// the kernel's ephemeral range, where the rest of the suite binds port 0); the test
// checks they are free first and says which one is not.
import test from 'ava';
import { spawn } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { descendantPids, processAlive, waitFor } from '../../testkit/index.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const README = join(ROOT, 'README.md');
const EXAMPLES = join(ROOT, 'examples', 'one-host');

/**
 * Every port the README's by-hand commands and the example files use: east's are 27xxx,
 * west's 28xxx, west's export store 2479–2481 (README and examples/one-host/*.yaml say
 * so), read from the text itself.
 */
function fixedPorts(texts: readonly string[]): number[] {
  return [...new Set(texts.flatMap((text) => [...text.matchAll(/(?<![\d.])(?:2[78]\d{3}|24[78]\d)(?![\d.])/g)].map((m) => Number(m[0]))))].sort();
}

/**
 * The shell commands of the fenced `sh` blocks between `<!-- <name>:start -->` and
 * `<!-- <name>:end -->`: one entry per command, a line ending in `\` joined with the next,
 * as bash reads them. Comment-only and blank lines are dropped.
 */
function readmeCommands(markdown: string, name: string): string[] {
  const start = markdown.indexOf(`<!-- ${name}:start -->`);
  const end = markdown.indexOf(`<!-- ${name}:end -->`);
  if (start < 0 || end < start) throw new Error(`README.md has no <!-- ${name}:start --> … <!-- ${name}:end --> section`);
  const commands: string[] = [];
  for (const block of markdown.slice(start, end).matchAll(/^```sh\n([\s\S]*?)^```$/gm)) {
    let pending = '';
    for (const line of block[1]!.split('\n')) {
      if (line.endsWith('\\')) {
        pending += `${line}\n`;
        continue;
      }
      const command = pending + line;
      pending = '';
      if (command.trim() !== '' && !command.trim().startsWith('#')) commands.push(command);
    }
  }
  if (commands.length === 0) throw new Error(`README.md section ${name} has no sh commands`);
  return commands;
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // gone already
  }
}

/** One bash fed commands on stdin; each command's stdout comes back with its exit status. */
class Shell {
  readonly #child;
  #stdout = '';
  #stderr = '';
  #waiters = new Set<() => void>();
  #seq = 0;
  /** Every process the shell started, kept to stop them whatever happens. */
  readonly started = new Set<number>();
  readonly transcript: string[] = [];

  constructor(cwd: string) {
    this.#child = spawn('bash', ['--noprofile', '--norc'], { cwd, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    const wake = () => {
      for (const w of this.#waiters) w();
    };
    this.#child.stdout.on('data', (c: Buffer) => {
      this.#stdout += c.toString('utf8');
      wake();
    });
    this.#child.stderr.on('data', (c: Buffer) => {
      this.#stderr += c.toString('utf8');
    });
    this.#child.once('exit', wake);
  }

  get pid(): number {
    return this.#child.pid!;
  }

  /** Runs one command; resolves with its stdout and exit status. */
  run(command: string, timeoutMs: number): Promise<{ status: number; stdout: string }> {
    const marker = `@@by-hand ${++this.#seq} rc=`;
    const from = this.#stdout.length;
    const errFrom = this.#stderr.length;
    this.#child.stdin.write(`${command}\nprintf '\\n%s%s@@\\n' '${marker}' "$?"\n`);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`no end within ${timeoutMs} ms`)), timeoutMs);
      const check = () => {
        this.record();
        const at = this.#stdout.indexOf(marker, from);
        if (at >= 0) {
          const rest = /^(\d+)@@\n/.exec(this.#stdout.slice(at + marker.length));
          if (rest) return done(undefined, { status: Number(rest[1]), stdout: this.#stdout.slice(from, at) });
        }
        if (this.#child.exitCode !== null || this.#child.signalCode !== null) done(new Error('bash exited'));
      };
      const done = (error?: Error, result?: { status: number; stdout: string }) => {
        clearTimeout(timer);
        this.#waiters.delete(check);
        this.transcript.push(`$ ${command}\n${this.#stdout.slice(from)}${this.#stderr.slice(errFrom)}`.trimEnd());
        if (error) reject(new Error(`${command}: ${error.message}`));
        else resolve(result!);
      };
      this.#waiters.add(check);
      check();
    });
  }

  /** Notes every process below the shell now (npx starts its command a moment after `&`). */
  record(): void {
    for (const pid of descendantPids(this.pid)) this.started.add(pid);
  }

  /** SIGKILL to every process the shell started (and its process group), then the shell. */
  killAll(): void {
    this.record();
    for (const pid of this.started) {
      killQuietly(-pid, 'SIGKILL'); // each `&` job's group (set -m): npx, sh, node
      killQuietly(pid, 'SIGKILL');
    }
    killQuietly(this.pid, 'SIGKILL');
  }
}

function get(url: string, lookupServer: string): Promise<{ status: number; body: string }> {
  const resolver = new Resolver();
  resolver.setServers([lookupServer]);
  const { hostname, port, pathname } = new URL(url);
  return resolver.resolve4(hostname).then(
    ([address]) =>
      new Promise((resolve, reject) => {
        const req = request({ host: address, port, path: pathname, headers: { host: `${hostname}:${port}` } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.setTimeout(5_000, () => req.destroy(new Error('timeout')));
        req.on('error', reject);
        req.end();
      }),
  );
}

test('README "Running it by hand": two clusters on one host, a call by name from east reaches reviews in west', async (t) => {
  const readme = readFileSync(README, 'utf8');
  const commands = readmeCommands(readme, 'by-hand');
  const stop = readmeCommands(readme, 'by-hand-stop');
  const FIXED_PORTS = fixedPorts([...commands, ...readdirSync(EXAMPLES).filter((f) => f.endsWith('.yaml')).map((f) => readFileSync(join(EXAMPLES, f), 'utf8'))]);
  t.true(FIXED_PORTS.length >= 25, `found the README's ports: ${FIXED_PORTS.join(' ')}`);

  const busy = [];
  for (const port of FIXED_PORTS) if (!(await portFree(port))) busy.push(port);
  if (busy.length > 0) return t.fail(`ports the README uses are taken on 127.0.0.1: ${busy.join(', ')} (is a by-hand run still up? see README "Stop everything")`);

  mkdirSync(join(ROOT, '.tmp'), { recursive: true });
  const work = mkdtempSync(join(ROOT, '.tmp', 'one-host-'));
  cpSync(EXAMPLES, work, { recursive: true, filter: (src) => !src.startsWith(join(EXAMPLES, 'run')) });
  const shell = new Shell(work);
  t.teardown(() => {
    shell.killAll();
    rmSync(work, { recursive: true, force: true });
  });
  const logs = () => {
    const dir = join(work, 'run', 'logs');
    if (!existsSync(dir)) return '';
    return readdirSync(dir)
      .map((f) => `--- run/logs/${f} (last lines)\n${readFileSync(join(dir, f), 'utf8').split('\n').slice(-25).join('\n')}`)
      .join('\n');
  };

  const outputs = new Map<string, string>();
  try {
    await shell.run('set -m', 5_000);
    for (const command of commands) {
      const { status, stdout } = await shell.run(command, 240_000);
      outputs.set(command, stdout);
      if (status !== 0) throw new Error(`exit status ${status}: ${command}`);
    }

    const loadCommand = commands.find((c) => /causeway app load .*--dns/.test(c));
    const statusCommand = commands.find((c) => /causeway status --config east\.yaml/.test(c));
    t.truthy(loadCommand, 'the README calls reviews by name with app load --dns');
    t.truthy(statusCommand, 'the README ends with causeway status --config east.yaml');
    const report = JSON.parse(outputs.get(loadCommand!)!.trim().split('\n').find((l) => l.startsWith('{'))!) as Record<string, unknown>;
    t.like(report, {
      url: 'http://reviews.default.svc.causeway.internal:9080/',
      successes: report.requests,
      failures: 0,
      byService: { reviews: report.requests },
      byCluster: { west: report.requests },
      byPeerIdentity: { 'spiffe://causeway.internal/ns/default/sa/productpage': report.requests },
      byPeerCluster: { east: report.requests },
    });
    t.true((report.requests as number) >= 1);

    // The same call made here, to see the status line and the reply itself.
    const reply = await get('http://reviews.default.svc.causeway.internal:9080/by-hand', '127.0.0.1:27153');
    t.is(reply.status, 200);
    t.like(JSON.parse(reply.body), { service: 'reviews', cluster: 'west', peerIdentity: 'spiffe://causeway.internal/ns/default/sa/productpage', peerCluster: 'east', path: '/by-hand' });

    const status = outputs.get(statusCommand!)!;
    t.regex(status, /^cluster east\b/m);
    t.regex(status, /^ {2}west {2,}synced {2,}yes\b/m, status);
    t.regex(status, /^ {2}west .* 1 {2,}0 {2,}0 {2,}0 {2,}done$/m, 'one import from west, nothing stale, expired or in conflict');

    // The README's stop: every process it started ends.
    shell.record();
    const started = [...shell.started];
    for (const command of stop) {
      const { status: code } = await shell.run(command, 60_000);
      if (code !== 0) throw new Error(`exit status ${code}: ${command}`);
    }
    await waitFor(() => started.every((pid) => !processAlive(pid)), { timeoutMs: 30_000, what: "every process of the by-hand run to end after the README's stop" }).catch((error: Error) => {
      throw new Error(`${error.message}; still running: ${started.filter(processAlive).map((pid) => `${pid} ${readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')}`).join('; ')}`);
    });
    const stillBusy = [];
    for (const port of FIXED_PORTS) if (!(await portFree(port))) stillBusy.push(port);
    t.deepEqual(stillBusy, [], 'every port is free again after the stop');
  } catch (error) {
    t.log(shell.transcript.join('\n'));
    t.log(logs());
    throw error;
  }
});
