import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { once } from 'node:events';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import type { ExecutionContext } from 'ava';
import { run as runCauseway } from '../../cli/main.js';

/** A temp directory removed when the test ends. */
export async function tempDir(t: ExecutionContext, prefix = 'cw-ca-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function run(command: string, args: readonly string[], options: { input?: string; cwd?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { cwd: options.cwd, timeout: options.timeoutMs ?? 20_000, encoding: 'utf8' }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

export const openssl = (args: readonly string[], options: { input?: string; cwd?: string } = {}) => run('openssl', args, options);

export interface TlsParty {
  key: string;
  cert: string;
  ca: string;
}

/**
 * One real mTLS handshake on loopback: returns the SPIFFE ID each side read from the
 * other's certificate (via `subjectaltname`), or the error that ended it.
 */
export async function mutualTlsHandshake(server: TlsParty, client: TlsParty): Promise<{ serverSaw?: string; clientSaw?: string; error?: Error }> {
  const seen: { serverSaw?: string; clientSaw?: string; error?: Error } = {};
  const tlsServer = tls.createServer({ ...server, requestCert: true, rejectUnauthorized: true }, (socket) => {
    seen.serverSaw = socket.getPeerCertificate().subjectaltname;
    socket.end('hello');
  });
  tlsServer.on('tlsClientError', (error) => {
    seen.error ??= error;
  });
  tlsServer.listen(0, '127.0.0.1');
  await once(tlsServer, 'listening');
  try {
    const port = (tlsServer.address() as AddressInfo).port;
    await new Promise<void>((resolve) => {
      const socket = tls.connect({ ...client, host: '127.0.0.1', port, checkServerIdentity: () => undefined }, () => {
        seen.clientSaw = socket.getPeerCertificate().subjectaltname;
      });
      socket.on('data', () => undefined);
      socket.on('error', (error) => {
        seen.error ??= error;
        resolve();
      });
      socket.on('close', () => resolve());
    });
  } finally {
    await new Promise((resolve) => tlsServer.close(resolve));
  }
  return seen;
}

/**
 * Runs the real `causeway` entry point (cli/main.ts `run`) in-process, capturing its
 * output: a process per command costs seconds of tsx start-up each. Tests using it are serial
 * because stdout is captured globally.
 */
export async function causeway(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const writeOut = process.stdout.write.bind(process.stdout);
  const writeErr = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((chunk: string | Uint8Array) => ((stdout += chunk.toString()), true)) as typeof process.stdout.write;
  process.stderr.write = ((chunk: string | Uint8Array) => ((stderr += chunk.toString()), true)) as typeof process.stderr.write;
  try {
    const code = await runCauseway(args);
    return { code, stdout, stderr };
  } finally {
    process.stdout.write = writeOut;
    process.stderr.write = writeErr;
  }
}
