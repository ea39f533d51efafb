import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { stringify } from 'yaml';
import { freePort, startProcess, waitFor } from '../../testkit/index.js';

/**
 * A real Prometheus server (Debian's `prometheus`, installed with the test packages) on
 * loopback, scraping `targets` (host:port of /metrics) every second, each target labelled
 * with its cluster as deploy/prometheus asks; stopped and its data removed with the test.
 */
export async function startPrometheus(t: ExecutionContext, targets: ReadonlyArray<{ target: string; cluster: string }>): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'cw-ui-prometheus-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = join(dir, 'prometheus.yml');
  writeFileSync(config, stringify({ global: { scrape_interval: '1s', evaluation_interval: '1s' }, scrape_configs: [{ job_name: 'sidecars', static_configs: targets.map((x) => ({ targets: [x.target], labels: { cluster: x.cluster } })) }] }));
  const port = await freePort();
  const proc = startProcess('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'], { name: 'prometheus' });
  t.teardown(() => proc.kill());
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.status === 200, { timeoutMs: 60_000, what: 'prometheus ready' });
  return url;
}
