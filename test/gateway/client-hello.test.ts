import { execFile } from 'node:child_process';
import { connect as tlsConnect } from 'node:tls';
import test from 'ava';
import fc from 'fast-check';
import { ClientHelloReader, MAX_HELLO_BYTES, readClientHello } from '../../gateway/index.js';
import { ECHO_SNI, fragmentRecords, startHelloCapture } from './helpers.js';

/** ClientHellos captured from real clients, by client name. */
const hellos = new Map<string, Buffer>();

function runQuietly(command: string, args: string[]): Promise<void> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { timeout: 10_000 }, () => resolve());
    child.stdin?.end();
  });
}

test.before(async () => {
  const capture = await startHelloCapture();
  const port = capture.port;
  const clients: [string, () => Promise<void>][] = [
    ['openssl s_client -tls1_2', () => runQuietly('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', ECHO_SNI, '-tls1_2'])],
    ['openssl s_client -tls1_3', () => runQuietly('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-servername', ECHO_SNI, '-tls1_3'])],
    ['curl', () => runQuietly('curl', ['-s', '--connect-to', `${ECHO_SNI}:443:127.0.0.1:${port}`, `https://${ECHO_SNI}/`])],
    [
      'python3 ssl',
      () =>
        runQuietly('python3', [
          '-c',
          `import socket, ssl\ns = socket.create_connection(("127.0.0.1", ${port}))\ntry:\n  ssl.create_default_context().wrap_socket(s, server_hostname="${ECHO_SNI}")\nexcept Exception:\n  pass`,
        ]),
    ],
    [
      'node tls',
      () =>
        new Promise<void>((resolve) => {
          const socket = tlsConnect({ host: '127.0.0.1', port, servername: ECHO_SNI });
          socket.on('error', () => resolve());
          socket.on('close', () => resolve());
        }),
    ],
  ];
  // One client at a time, so each captured hello belongs to the client that sent it.
  for (const [name, start] of clients) {
    const hello = capture.next();
    await Promise.all([start(), hello.then((bytes) => hellos.set(name, bytes))]);
  }
  await capture.close();
});

const CLIENTS = ['openssl s_client -tls1_2', 'openssl s_client -tls1_3', 'curl', 'python3 ssl', 'node tls'];

for (const name of CLIENTS) {
  test(`reads the server name from a ${name} ClientHello`, (t) => {
    const hello = hellos.get(name)!;
    t.deepEqual(readClientHello(hello), { ok: true, serverName: ECHO_SNI });
  });

  test(`reads the ${name} ClientHello cut into 1-byte records delivered byte by byte`, (t) => {
    const wire = fragmentRecords(hellos.get(name)!, 1);
    const reader = new ClientHelloReader();
    let outcome;
    for (let i = 0; i < wire.length; i++) {
      outcome = reader.push(wire.subarray(i, i + 1));
      if (outcome !== undefined) {
        t.is(i, wire.length - 1, 'decided only after the last byte');
        break;
      }
    }
    t.deepEqual(outcome, { ok: true, serverName: ECHO_SNI });
    t.true(reader.wireBytes.equals(wire), 'every byte is kept for replay');
  });

  test(`reads the ${name} ClientHello in 7-byte records`, (t) => {
    t.deepEqual(readClientHello(fragmentRecords(hellos.get(name)!, 7)), { ok: true, serverName: ECHO_SNI });
  });
}

test('a hello that arrives in one segment is read in place, without a copy', (t) => {
  const hello = hellos.get('node tls')!;
  const reader = new ClientHelloReader();
  t.deepEqual(reader.push(hello), { ok: true, serverName: ECHO_SNI });
  t.is(reader.wireBytes.buffer, hello.buffer);
});

test('refuses bytes that are not TLS (an HTTP request)', (t) => {
  t.deepEqual(readClientHello(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')), { ok: false, reason: 'not-tls' });
});

test('refuses an SSLv2-format hello', (t) => {
  // SSLv2 CLIENT-HELLO: 2-byte length with the high bit, msg type 1, version 3.1, ...
  t.deepEqual(readClientHello(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10])), { ok: false, reason: 'sslv2' });
});

/** Rebuilds a single-record hello with its extensions passed through `edit`. */
function withExtensions(hello: Buffer, edit: (extensions: { type: number; body: Buffer }[]) => { type: number; body: Buffer }[]): Buffer {
  const body = hello.subarray(5 + 4);
  let p = 2 + 32;
  p += 1 + body[p]!;
  p += 2 + body.readUInt16BE(p);
  p += 1 + body[p]!;
  const extensions: { type: number; body: Buffer }[] = [];
  for (let q = p + 2; q < body.length; ) {
    const length = body.readUInt16BE(q + 2);
    extensions.push({ type: body.readUInt16BE(q), body: body.subarray(q + 4, q + 4 + length) });
    q += 4 + length;
  }
  const encoded = Buffer.concat(edit(extensions).map((e) => Buffer.concat([Buffer.from([e.type >> 8, e.type & 0xff, e.body.length >> 8, e.body.length & 0xff]), e.body])));
  const newBody = Buffer.concat([body.subarray(0, p), Buffer.from([encoded.length >> 8, encoded.length & 0xff]), encoded]);
  const handshake = Buffer.concat([Buffer.from([1, newBody.length >> 16, (newBody.length >> 8) & 0xff, newBody.length & 0xff]), newBody]);
  return Buffer.concat([Buffer.from([0x16, 3, 1, handshake.length >> 8, handshake.length & 0xff]), handshake]);
}

test('refuses a hello without SNI', (t) => {
  const hello = withExtensions(hellos.get('node tls')!, (extensions) => extensions.filter((e) => e.type !== 0));
  t.deepEqual(readClientHello(hello), { ok: false, reason: 'no-sni' });
});

test('reads a post-quantum sized hello (1.6 kB extension added) whole and byte by byte', (t) => {
  const big = withExtensions(hellos.get('openssl s_client -tls1_3')!, (extensions) => [...extensions, { type: 0xfe0d, body: Buffer.alloc(1600, 7) }]);
  t.true(big.length > 1500);
  t.deepEqual(readClientHello(big), { ok: true, serverName: ECHO_SNI });
  const reader = new ClientHelloReader();
  let outcome;
  for (let i = 0; i < big.length && outcome === undefined; i++) outcome = reader.push(big.subarray(i, i + 1));
  t.deepEqual(outcome, { ok: true, serverName: ECHO_SNI });
});

test('refuses malformed lengths: a record of length 0, an extension overrunning the hello, a non-hello handshake', (t) => {
  t.deepEqual(readClientHello(Buffer.from([0x16, 3, 1, 0, 0])), { ok: false, reason: 'malformed' });
  const hello = Buffer.from(hellos.get('curl')!);
  // Claim the extensions block is 1 byte longer than it is.
  const body = 5 + 4;
  let p = body + 2 + 32;
  p += 1 + hello[p]!;
  p += 2 + hello.readUInt16BE(p);
  p += 1 + hello[p]!;
  hello.writeUInt16BE(hello.readUInt16BE(p) + 1, p);
  t.deepEqual(readClientHello(hello), { ok: false, reason: 'malformed' });
  const serverHello = Buffer.from(hellos.get('curl')!);
  serverHello[5] = 2;
  t.deepEqual(readClientHello(serverHello), { ok: false, reason: 'malformed' });
});

test(`refuses a hello announcing more than ${MAX_HELLO_BYTES} bytes before buffering it`, (t) => {
  const head = Buffer.from([0x16, 3, 1, 0, 4, 1, 0x00, 0x50, 0x00]);
  t.deepEqual(readClientHello(head), { ok: false, reason: 'hello-too-large' });
});

test('waits (returns undefined) on a partial hello', (t) => {
  const hello = hellos.get('openssl s_client -tls1_3')!;
  t.is(readClientHello(hello.subarray(0, hello.length - 1)), undefined);
  t.is(readClientHello(hello.subarray(0, 3)), undefined);
});

test('bounded mutation fuzz: the reader never throws and always decides or waits', (t) => {
  const seeds = CLIENTS.map((name) => hellos.get(name)!);
  const mutation = fc.record({
    seed: fc.integer({ min: 0, max: seeds.length - 1 }),
    fragment: fc.integer({ min: 0, max: 300 }),
    edits: fc.array(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }), kind: fc.constantFrom('set', 'insert', 'delete') }), { maxLength: 8 }),
    truncate: fc.option(fc.nat()),
    chunk: fc.integer({ min: 1, max: 2048 }),
  });
  t.notThrows(() =>
    fc.assert(
    fc.property(mutation, ({ seed, fragment, edits, truncate, chunk }) => {
      let bytes = Buffer.from(fragment > 0 ? fragmentRecords(seeds[seed]!, fragment) : seeds[seed]!);
      for (const edit of edits) {
        const at = edit.at % (bytes.length + 1);
        if (edit.kind === 'set' && at < bytes.length) bytes[at] = edit.byte;
        else if (edit.kind === 'insert') bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from([edit.byte]), bytes.subarray(at)]);
        else if (edit.kind === 'delete') bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1)]);
      }
      if (truncate !== null) bytes = bytes.subarray(0, truncate % (bytes.length + 1));
      const reader = new ClientHelloReader();
      for (let i = 0; i < bytes.length; i += chunk) {
        const outcome = reader.push(bytes.subarray(i, i + chunk));
        if (outcome !== undefined) {
          if (outcome.ok) return typeof outcome.serverName === 'string' && outcome.serverName.length > 0;
          return ['not-tls', 'sslv2', 'malformed', 'no-sni', 'hello-too-large'].includes(outcome.reason);
        }
      }
      return true;
    }),
    { numRuns: 3000, seed: 4242 },
  ),
  );
});
