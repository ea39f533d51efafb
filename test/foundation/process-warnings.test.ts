import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import test from 'ava';
import { stringify } from 'yaml';
import { startEtcd } from '../../testkit/etcd.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CAUSEWAY = join(ROOT, 'bin', 'causeway.js');

// The README's by-hand west runs a TLS etcd at https://127.0.0.1:…: every command against
// it printed Node's DEP0123 ("Setting the TLS ServerName to an IP address…"), which grpc-js
// triggers inside etcd3 and nobody can act on.
test('regression: commands against a TLS etcd addressed by IP print no DEP0123', async (t) => {
  const etcd = await startEtcd({ name: 'tls-ip', tls: true });
  t.teardown(() => etcd.destroy());
  const dir = mkdtempSync(join(tmpdir(), 'cw-warnings-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const root = etcd.rootClient!;
  const config = join(dir, 'west.yaml');
  writeFileSync(config, stringify({ cluster: { name: 'west', locality: { region: 'eu', zone: 'eu-2' } }, etcd: { endpoints: etcd.endpoints, tls: { ca: root.caFile, cert: root.certFile, key: root.keyFile } } }));
  const services = join(dir, 'services.yaml');
  writeFileSync(services, stringify({ name: 'reviews', namespace: 'default', ports: [{ name: 'http', port: 9080, protocol: 'http' }], serviceAccounts: ['spiffe://causeway.internal/ns/default/sa/reviews'] }));
  t.regex(etcd.endpoints[0]!, /^https:\/\/127\.0\.0\.1:\d+$/);
  const applied = spawnSync(process.execPath, [CAUSEWAY, 'service', 'apply', '-f', services, '--config', config], { encoding: 'utf8', timeout: 120_000 });
  t.is(applied.status, 0, applied.stderr);
  t.regex(applied.stdout, /reviews\.default/);
  t.notRegex(applied.stderr, /DEP0123|TLS ServerName/);
});

test('other warnings are still printed, as Node prints them', (t) => {
  const script = `import { quietUnactionableWarnings } from ${JSON.stringify(join(ROOT, 'cli', 'process-warnings.ts'))};
quietUnactionableWarnings();
process.emitWarning('Setting the TLS ServerName to an IP address is not permitted', { type: 'DeprecationWarning', code: 'DEP0123' });
process.emitWarning('something worth reading', { type: 'DeprecationWarning', code: 'DEP9999' });`;
  const run = spawnSync(process.execPath, ['--import=tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  t.is(run.status, 0, run.stderr);
  t.notRegex(run.stderr, /DEP0123/);
  t.regex(run.stderr, /^\(node:\d+\) \[DEP9999\] DeprecationWarning: something worth reading$/m);
});
