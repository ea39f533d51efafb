import { Resolver } from 'node:dns';
import { Agent, request } from 'node:http';
import { isIP, type LookupFunction } from 'node:net';

export interface LoadOptions {
  readonly url: string;
  /** Requests per second, paced evenly. */
  readonly rps: number;
  /** Stop after this many requests… */
  readonly requests?: number;
  /** …or after this long (whichever comes first; at least one of the two). */
  readonly durationMs?: number;
  readonly timeoutMs: number;
  /** Each successful reply's JSON must have these fields with these values to count as a success. */
  readonly expect?: Readonly<Record<string, string>>;
  /** Reuse connections (default false: each request opens a new one, as failover tests want). */
  readonly keepAlive?: boolean;
  /** Called about every `progressEveryMs` (default 500) with the counts so far. */
  readonly onProgress?: (progress: LoadProgress) => void;
  readonly progressEveryMs?: number;
  /**
   * Resolve the URL's host through this DNS server (`ip:port`, e.g. a sidecar's DNS on
   * 127.0.0.1:15053) instead of the host's resolver: a mesh name then works without
   * touching /etc/resolv.conf. A and nothing else; an IP address in the URL is used as is.
   */
  readonly dnsServer?: string;
}

export interface LoadProgress {
  readonly requests: number;
  readonly successes: number;
  readonly failures: number;
}

/** The report `causeway app load` prints as JSON. */
export interface LoadReport {
  readonly url: string;
  readonly requests: number;
  readonly successes: number;
  readonly failures: number;
  /** Failures by cause: HTTP status, `ECONNREFUSED`, `timeout`, `unexpected:<field>`… */
  readonly failuresBy: Record<string, number>;
  /** Successful replies counted by the echo app's fields. */
  readonly byService: Record<string, number>;
  readonly byCluster: Record<string, number>;
  readonly byVersion: Record<string, number>;
  readonly byPeerIdentity: Record<string, number>;
  /** The caller's cluster as the server saw it (the echo app's `peerCluster`), `none` when absent. */
  readonly byPeerCluster: Record<string, number>;
  readonly latencyMs: { readonly p50: number; readonly p90: number; readonly p99: number; readonly max: number };
  readonly durationMs: number;
}

const count = (map: Record<string, number>, key: string) => {
  map[key] = (map[key] ?? 0) + 1;
};

/** Sends paced HTTP GETs and counts what came back; never throws for a failed request. */
export async function runLoad(options: LoadOptions): Promise<LoadReport> {
  const limit = options.requests ?? Number.POSITIVE_INFINITY;
  const endAt = options.durationMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.durationMs;
  const agent = new Agent({ keepAlive: options.keepAlive ?? false, maxSockets: 256 });
  const intervalMs = 1000 / options.rps;
  const started = Date.now();
  const latencies: number[] = [];
  const failuresBy: Record<string, number> = {};
  const byService: Record<string, number> = {};
  const byCluster: Record<string, number> = {};
  const byVersion: Record<string, number> = {};
  const byPeerIdentity: Record<string, number> = {};
  const byPeerCluster: Record<string, number> = {};
  const lookup = options.dnsServer === undefined ? undefined : lookupThrough(options.dnsServer, options.timeoutMs);
  let successes = 0;
  let sent = 0;
  const inFlight = new Set<Promise<void>>();

  const one = async () => {
    const t0 = performance.now();
    const outcome = await get(options.url, options.timeoutMs, agent, lookup);
    latencies.push(performance.now() - t0);
    if (outcome.error !== undefined) return count(failuresBy, outcome.error);
    if (outcome.status < 200 || outcome.status >= 300) return count(failuresBy, `http_${outcome.status}`);
    let body: Record<string, unknown> | undefined;
    try {
      body = JSON.parse(outcome.body) as Record<string, unknown>;
    } catch {
      body = undefined;
    }
    for (const [field, value] of Object.entries(options.expect ?? {})) {
      if (String(body?.[field]) !== value) return count(failuresBy, `unexpected_${field}`);
    }
    successes++;
    if (body) {
      if (typeof body.service === 'string') count(byService, body.service);
      if (typeof body.cluster === 'string') count(byCluster, body.cluster);
      if (typeof body.version === 'string') count(byVersion, body.version);
      count(byPeerIdentity, typeof body.peerIdentity === 'string' ? body.peerIdentity : 'none');
      count(byPeerCluster, typeof body.peerCluster === 'string' ? body.peerCluster : 'none');
    }
  };

  let completed = 0;
  const progress = options.onProgress
    ? setInterval(() => options.onProgress!({ requests: completed, successes, failures: completed - successes }), options.progressEveryMs ?? 500)
    : undefined;
  while (sent < limit && Date.now() < endAt) {
    const due = started + sent * intervalMs;
    const wait = due - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (Date.now() >= endAt) break;
    sent++;
    const p: Promise<void> = one().finally(() => {
      completed++;
      inFlight.delete(p);
    });
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  if (progress) clearInterval(progress);
  agent.destroy();
  latencies.sort((a, b) => a - b);
  const pct = (q: number) => (latencies.length === 0 ? 0 : Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]! * 100) / 100);
  return {
    url: options.url,
    requests: sent,
    successes,
    failures: sent - successes,
    failuresBy,
    byService,
    byCluster,
    byVersion,
    byPeerIdentity,
    byPeerCluster,
    latencyMs: { p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: pct(1) },
    durationMs: Date.now() - started,
  };
}

/**
 * A `lookup` for node:http that asks one DNS server for A records. Errors keep the
 * resolver's codes (`ENOTFOUND` for NXDOMAIN, `ECONNREFUSED`, `ETIMEOUT`), which the report
 * counts under `failuresBy`.
 */
function lookupThrough(server: string, timeoutMs: number): LookupFunction {
  const resolver = new Resolver({ timeout: Math.max(1, Math.min(timeoutMs, 5_000)), tries: 2 });
  resolver.setServers([server]);
  return (hostname, options, callback) => {
    const family = isIP(hostname);
    if (family !== 0) {
      if (options.all) callback(null, [{ address: hostname, family }]);
      else callback(null, hostname, family);
      return;
    }
    resolver.resolve4(hostname, (error, addresses) => {
      if (error || addresses.length === 0) {
        callback(error ?? Object.assign(new Error(`no A record for ${hostname}`), { code: 'ENODATA' }), '', 4);
        return;
      }
      if (options.all) callback(null, addresses.map((address) => ({ address, family: 4 })));
      else callback(null, addresses[0]!, 4);
    });
  };
}

function get(url: string, timeoutMs: number, agent: Agent, lookup?: LookupFunction): Promise<{ status: number; body: string; error?: undefined } | { error: string }> {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (value: { status: number; body: string } | { error: string }) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(value);
    };
    const req = request(url, { agent, method: 'GET', ...(lookup ? { lookup } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        if (body.length < 65_536) body += c;
      });
      res.on('end', () => finish({ status: res.statusCode ?? 0, body }));
      res.on('error', (e: NodeJS.ErrnoException) => finish({ error: e.code ?? 'response_error' }));
    });
    const timer = setTimeout(() => {
      finish({ error: 'timeout' });
      req.destroy();
    }, timeoutMs);
    req.on('error', (e: NodeJS.ErrnoException) => finish({ error: e.code ?? e.message }));
    req.end();
  });
}
