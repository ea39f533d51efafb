import { createHash } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CaError, CaErrorCodes, CaFiles, loadIntermediateCa, splitCertificates, type IntermediateCa } from '../ca/index.js';
import type { Logger } from '../mesh/index.js';

/** The files of a caDir whose change means a new intermediate or a new trust bundle. */
const WATCHED = [CaFiles.caKey, CaFiles.caCert, CaFiles.certChain, CaFiles.trustBundle] as const;

export interface CaDirectoryWatchOptions {
  readonly dir: string;
  /** The intermediate in effect when the watch starts (loaded from `dir`). */
  readonly current: IntermediateCa;
  /** Installs a new intermediate (new serving certificate, signer, snapshots); a rejection counts as a refused reload. */
  readonly install: (ca: IntermediateCa) => Promise<void>;
  /** Called once per reload attempt (the reason of a refusal is logged). */
  readonly onResult: (result: 'ok' | 'refused') => void;
  readonly log: Logger;
  /** Quiet time after the last file event before the directory is read (files are copied one by one). Default 500 ms. */
  readonly settleMs?: number;
  /** Backstop re-read, for file systems that report no events (some network and bind mounts). Default 5 s. */
  readonly pollIntervalMs?: number;
}

/**
 * Keeps a controller's intermediate in step with its `caDir`: on a file event (and every
 * poll interval) the four files are read; when their bytes differ from the last
 * attempt, the directory is loaded with the same checks as at start-up (key matches
 * certificate, chain verifies against the bundle) plus the same cluster and trust
 * domain, and only then installed. Anything else — a half-copied pair, a bundle
 * without the intermediate's root — is refused with the reason, and the intermediate
 * in effect keeps signing. The same bytes are not tried twice, so a refused directory
 * is logged once until it changes again.
 */
export class CaDirectoryWatch {
  readonly #options: CaDirectoryWatchOptions;
  #current: IntermediateCa;
  #lastDigest: string | undefined;
  #watcher: FSWatcher | undefined;
  #settleTimer: NodeJS.Timeout | undefined;
  #pollTimer: NodeJS.Timeout | undefined;
  #running: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(options: CaDirectoryWatchOptions) {
    this.#options = options;
    this.#current = options.current;
  }

  /** The intermediate in effect. */
  get current(): IntermediateCa {
    return this.#current;
  }

  /** Starts watching; the directory is read once at once, so a change since `current` was loaded is not missed. */
  async start(): Promise<void> {
    await this.check();
    this.#arm();
    this.#pollTimer = setInterval(() => {
      this.#arm();
      this.check();
    }, this.#options.pollIntervalMs ?? 5000);
    this.#pollTimer.unref();
  }

  /** Reads the directory now (after any check in progress); resolves when it has been installed or refused. */
  check(): Promise<void> {
    this.#running = this.#running.then(() => this.#check()).catch((error: Error) => this.#options.log.error({ err: error.message, dir: this.#options.dir }, 'reading caDir failed; trying again at the next change'));
    return this.#running;
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#settleTimer);
    clearInterval(this.#pollTimer);
    this.#watcher?.close();
    this.#watcher = undefined;
  }

  /** Watches the directory (again, after it was replaced or the watch failed). */
  #arm(): void {
    if (this.#watcher || this.#closed) return;
    try {
      this.#watcher = watch(this.#options.dir, { persistent: false }, (_event, file) => {
        if (file !== null && !(WATCHED as readonly string[]).includes(String(file))) return;
        clearTimeout(this.#settleTimer);
        this.#settleTimer = setTimeout(() => void this.check(), this.#options.settleMs ?? 500);
        this.#settleTimer.unref();
      });
      this.#watcher.on('error', (error) => {
        this.#options.log.warn({ err: error.message, dir: this.#options.dir }, 'caDir watch failed; polling until it can be watched again');
        this.#watcher?.close();
        this.#watcher = undefined;
      });
    } catch (error) {
      this.#options.log.warn({ err: (error as Error).message, dir: this.#options.dir }, 'cannot watch caDir; polling it');
    }
  }

  async #check(): Promise<void> {
    if (this.#closed) return;
    const digest = await this.#digest();
    if (digest === this.#lastDigest) return;
    this.#lastDigest = digest;
    const { dir, log } = this.#options;
    const before = this.#current;
    let next: IntermediateCa;
    try {
      next = await loadIntermediateCa(dir);
      if (next.trustDomain !== before.trustDomain || next.cluster !== before.cluster) {
        throw new CaError(CaErrorCodes.caInvalid, `${join(dir, CaFiles.caCert)} is for cluster ${next.cluster} in trust domain ${next.trustDomain}, but this controller signs for cluster ${before.cluster} in ${before.trustDomain}; write that cluster's intermediate (causeway ca intermediate --cluster ${before.cluster})`);
      }
      // Its bytes changed but not what they say (e.g. the first read, or the same files copied again).
      if (sameIntermediate(next, before)) return;
      await this.#options.install(next);
    } catch (error) {
      const failure = error as Error & { code?: string };
      log.error({ code: failure.code, dir, err: failure.message }, 'caDir changed but cannot be used; the intermediate in effect keeps signing until the directory is fixed');
      this.#options.onResult('refused');
      return;
    }
    this.#current = next;
    log.info(
      { dir, intermediate: next.certificate.fingerprint256, issuer: next.certificate.issuer.replace(/\n/g, ', '), notAfter: new Date(next.certificate.validTo).toISOString(), roots: splitCertificates(next.trustBundlePem).length },
      'caDir reloaded: new certificates are issued from it, and its trust bundle is served',
    );
    this.#options.onResult('ok');
  }

  /** A digest of the watched files' bytes (a missing file counts as its error code). */
  async #digest(): Promise<string> {
    const hash = createHash('sha256');
    for (const name of WATCHED) {
      const bytes = await readFile(join(this.#options.dir, name)).catch((error: NodeJS.ErrnoException) => Buffer.from(`<${error.code ?? 'unreadable'}>`));
      hash.update(name).update('\0').update(bytes).update('\0');
    }
    return hash.digest('hex');
  }
}

function sameIntermediate(a: IntermediateCa, b: IntermediateCa): boolean {
  return a.certificate.fingerprint256 === b.certificate.fingerprint256 && a.certChainPem === b.certChainPem && a.trustBundlePem === b.trustBundlePem;
}
