/**
 * What `bench:scale` reads off the running parts: a process's resident memory from /proc,
 * Prometheus samples from a component's `/metrics`, and an etcd's database size and
 * watcher count from its own `/metrics` (on the client URL; client certificate for a TLS
 * etcd such as an export store).
 */
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';

/** Resident set size of `pid` in bytes (VmRSS), or NaN when the process is gone. */
export function residentBytes(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

export interface ClientTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

/** The text of `url` (Prometheus exposition), over https with the client certificate when `tls` is given. */
export function scrape(url: string, tls?: ClientTls): Promise<string> {
  if (!tls) return fetch(url, { signal: AbortSignal.timeout(10_000) }).then((res) => (res.ok ? res.text() : Promise.reject(new Error(`${url}: HTTP ${res.status}`))));
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca: readFileSync(tls.ca), cert: readFileSync(tls.cert), key: readFileSync(tls.key), timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: HTTP ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

/** The sum of every sample of `name` (any labels) in an exposition text; NaN when absent. */
export function metricSum(text: string, name: string): number {
  let sum = NaN;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{')) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    sum = Number.isNaN(sum) ? value : sum + value;
  }
  return sum;
}

export interface EtcdFigures {
  /** Physical size of the backend database file. */
  readonly dbBytes: number;
  /** Of which in use (the rest is free pages a defrag would return). */
  readonly dbInUseBytes: number;
  /** Watchers registered on this etcd (every client's watches together). */
  readonly watchers: number;
}

export async function etcdFigures(clientUrl: string, tls?: ClientTls): Promise<EtcdFigures> {
  const text = await scrape(`${clientUrl}/metrics`, tls);
  return {
    dbBytes: metricSum(text, 'etcd_mvcc_db_total_size_in_bytes'),
    dbInUseBytes: metricSum(text, 'etcd_mvcc_db_total_size_in_use_in_bytes'),
    watchers: metricSum(text, 'etcd_debugging_mvcc_watcher_total'),
  };
}

export interface MemoryAfterGc {
  readonly rssBytes: number;
  readonly heapUsedBytes: number;
}

/**
 * A full garbage collection in a Node process started with `--inspect-port=<port>` (the
 * inspector off until SIGUSR1 opens it, on loopback), then its `process.memoryUsage()`:
 * what it retains, without the garbage a heap figure between collections includes.
 */
export async function memoryAfterGc(pid: number, inspectorPort: number): Promise<MemoryAfterGc> {
  const base = `http://127.0.0.1:${inspectorPort}`;
  const deadline = Date.now() + 30_000;
  let target: Array<{ webSocketDebuggerUrl: string }> = [];
  for (let attempt = 0; target.length === 0; attempt++) {
    // Again every few seconds: a process busy at the first signal may not have opened it.
    if (attempt % 20 === 0) process.kill(pid, 'SIGUSR1');
    try {
      target = (await (await fetch(`${base}/json/list`, { signal: AbortSignal.timeout(5000) })).json()) as typeof target;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`inspector of pid ${pid} did not open on ${base} within 30 s: ${(error as Error).message}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const ws = new WebSocket(target[0]!.webSocketDebuggerUrl);
  try {
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => resolve();
      ws.onerror = () => reject(new Error(`inspector of pid ${pid}: websocket failed`));
    });
    let nextId = 1;
    const call = (method: string, params: object = {}) =>
      new Promise<{ result?: { result?: { value?: string } } }>((resolve, reject) => {
        const id = nextId++;
        const timer = setTimeout(() => reject(new Error(`inspector of pid ${pid}: no answer to ${method}`)), 60_000);
        const onMessage = (event: MessageEvent) => {
          const message = JSON.parse(String(event.data)) as { id?: number; result?: { result?: { value?: string } } };
          if (message.id !== id) return;
          clearTimeout(timer);
          ws.removeEventListener('message', onMessage);
          resolve(message);
        };
        ws.addEventListener('message', onMessage);
        ws.send(JSON.stringify({ id, method, params }));
      });
    await call('HeapProfiler.collectGarbage');
    const answer = await call('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())' });
    const usage = JSON.parse(answer.result?.result?.value ?? '{}') as { rss?: number; heapUsed?: number };
    return { rssBytes: usage.rss ?? NaN, heapUsedBytes: usage.heapUsed ?? NaN };
  } finally {
    ws.close();
  }
}
