import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { formatIpv4, parseIpv4Cidr, type Logger } from '../mesh/index.js';
import { ProxyError, ProxyErrorCodes } from './errors.js';

/**
 * The port on which a sidecar holds its claim to each /24 of its outbound range, bound on
 * the block's network address (`127.x.y.0`, which is never handed to a service). Two
 * sidecars in one network namespace cannot both bind it, so no two of them can ever hand
 * out (and answer DNS with) addresses in the same block — the silent identity swap of two
 * sidecars sharing the default range.
 */
export const RANGE_CLAIM_PORT = 15029;

/** `auto` draws a /16 from 127.64.0.0 … 127.254.0.0, starting at one derived from the workload. */
const AUTO_FIRST_OCTET = 64;
const AUTO_LAST_OCTET = 254;
const AUTO_BLOCKS = AUTO_LAST_OCTET - AUTO_FIRST_OCTET + 1;

export interface ParsedRange {
  /** First address of the range, as a 32-bit number. */
  readonly base: number;
  readonly prefixBits: number;
  readonly cidr: string;
}

/** Parses a CIDR inside 127.0.0.0/8 with an 8- to 24-bit prefix (the address is masked to the prefix). */
export function parseLoopbackRange(cidr: string): ParsedRange {
  const parsed = parseIpv4Cidr(cidr);
  if (!parsed || parsed.base >>> 24 !== 127 || parsed.prefix < 8 || parsed.prefix > 24) {
    throw new ProxyError(ProxyErrorCodes.addressExhausted, `sidecar.outboundRange "${cidr}" must be "auto" or a CIDR inside 127.0.0.0/8 with a prefix of 8 to 24 bits, e.g. 127.1.0.0/16`);
  }
  return { base: parsed.base, prefixBits: parsed.prefix, cidr: `${formatIpv4(parsed.base)}/${parsed.prefix}` };
}

/**
 * The /16 blocks `auto` tries, in order: a start derived from the workload (so a sidecar
 * gets the same addresses after a restart, and apps' cached DNS answers stay its own),
 * then every other block once.
 */
export function autoRangeCandidates(seed: string): string[] {
  const start = createHash('sha256').update(seed).digest().readUInt32BE(0) % AUTO_BLOCKS;
  const out: string[] = [];
  for (let i = 0; i < AUTO_BLOCKS; i++) out.push(`127.${AUTO_FIRST_OCTET + ((start + i) % AUTO_BLOCKS)}.0.0/16`);
  return out;
}

function blockOf(address: string): string {
  const parts = address.split('.');
  return `${parts[0]}.${parts[1]}.${parts[2]}.0`;
}

type BindResult = { ok: true; server: Server } | { ok: false; error: NodeJS.ErrnoException };

function bindClaim(address: string): Promise<BindResult> {
  return new Promise((resolve) => {
    // A claim is a listener nobody is meant to talk to: anything that connects is dropped.
    const server = createServer({ pauseOnConnect: true }, (socket) => socket.destroy());
    server.once('error', (error: NodeJS.ErrnoException) => resolve({ ok: false, error }));
    server.listen({ host: address, port: RANGE_CLAIM_PORT, backlog: 1 }, () => {
      server.removeAllListeners('error');
      server.on('error', () => {});
      resolve({ ok: true, server });
    });
  });
}

/**
 * This sidecar's outbound range and its claims on it. Every address the sidecar hands
 * out lies in a /24 it holds a claim on: the first /24 is claimed at start (an explicit
 * range that is taken refuses start-up; `auto` moves on to the next block), later /24s
 * as the allocator reaches them ({@link ensureClaimed}); a block another sidecar holds is
 * never used, and the listeners that would have lived there report it.
 */
export class OutboundRangeClaim {
  readonly range: ParsedRange;
  readonly auto: boolean;
  readonly #claims = new Map<string, Server>();
  /** Blocks found taken, with the error, so a retry does not spin. */
  readonly #taken = new Map<string, string>();
  readonly #log: Logger;

  private constructor(range: ParsedRange, auto: boolean, first: Server, log: Logger) {
    this.range = range;
    this.auto = auto;
    this.#claims.set(formatIpv4(range.base), first);
    this.#log = log;
  }

  /**
   * Claims the range a sidecar config names: `auto` (derived from `seed`, the workload's
   * `<namespace>/<service>/<inboundPort>`) or an explicit CIDR.
   */
  static async claim(setting: string, seed: string, log: Logger): Promise<OutboundRangeClaim> {
    if (setting !== 'auto') {
      const range = parseLoopbackRange(setting);
      const result = await bindClaim(formatIpv4(range.base));
      if (!result.ok) throw takenError(range.cidr, formatIpv4(range.base), result.error, true);
      log.info({ outboundRange: range.cidr }, 'outbound range claimed');
      return new OutboundRangeClaim(range, false, result.server, log);
    }
    let last: NodeJS.ErrnoException | undefined;
    for (const candidate of autoRangeCandidates(seed)) {
      const range = parseLoopbackRange(candidate);
      const result = await bindClaim(formatIpv4(range.base));
      if (result.ok) {
        log.info({ outboundRange: range.cidr }, 'outbound range claimed (auto)');
        return new OutboundRangeClaim(range, true, result.server, log);
      }
      last = result.error;
      if (result.error.code !== 'EADDRINUSE') break;
      log.debug({ candidate }, 'outbound range taken; trying the next');
    }
    throw new ProxyError(
      ProxyErrorCodes.outboundRangeTaken,
      `sidecar.outboundRange auto: no free /16 in 127.${AUTO_FIRST_OCTET}.0.0–127.${AUTO_LAST_OCTET}.0.0 could be claimed (${last?.code ?? 'unknown error'}: ${last?.message ?? ''}); set sidecar.outboundRange to a free loopback CIDR`,
      { cause: last },
    );
  }

  get cidr(): string {
    return this.range.cidr;
  }

  /** True when this sidecar holds the claim on `address`'s /24. */
  holds(address: string): boolean {
    return this.#claims.has(blockOf(address));
  }

  /** Why `address` cannot be used, when its /24 was found claimed by someone else. */
  takenReason(address: string): string | undefined {
    return this.#taken.get(blockOf(address));
  }

  /**
   * Claims the /24 of each address not yet claimed. Returns the addresses that cannot be
   * used (their block is held by another sidecar or program), each with the reason.
   */
  async ensureClaimed(addresses: Iterable<string>): Promise<Map<string, string>> {
    const refused = new Map<string, string>();
    const blocks = new Set<string>();
    for (const address of addresses) if (!this.holds(address)) blocks.add(blockOf(address));
    for (const block of blocks) {
      const result = await bindClaim(block);
      if (result.ok) {
        this.#claims.set(block, result.server);
        this.#taken.delete(block);
      } else {
        const reason = takenError(this.range.cidr, block, result.error, !this.auto).message;
        if (!this.#taken.has(block)) this.#log.error({ block: `${block}/24`, err: result.error }, 'part of the outbound range is held by someone else');
        this.#taken.set(block, reason);
      }
    }
    for (const address of addresses) {
      const reason = this.#taken.get(blockOf(address));
      if (reason && !this.holds(address)) refused.set(address, reason);
    }
    return refused;
  }

  async close(): Promise<void> {
    const closing = [...this.#claims.values()].map((server) => new Promise<void>((resolve) => server.close(() => resolve())));
    this.#claims.clear();
    await Promise.all(closing);
  }
}

function takenError(cidr: string, address: string, error: NodeJS.ErrnoException, explicit: boolean): ProxyError {
  const who = error.code === 'EADDRINUSE' ? `another sidecar on this host already claims it (or a program listens on ${address}:${RANGE_CLAIM_PORT} or *:${RANGE_CLAIM_PORT})` : `${error.code ?? 'error'}: ${error.message}`;
  const fix = explicit ? 'give each sidecar on one host a disjoint sidecar.outboundRange, or set it to "auto"' : 'set sidecar.outboundRange to a free loopback CIDR';
  return new ProxyError(ProxyErrorCodes.outboundRangeTaken, `sidecar.outboundRange ${cidr}: ${address}/24 cannot be claimed — ${who}; ${fix}`, { cause: error });
}
