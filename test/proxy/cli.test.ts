import test from 'ava';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { run } from '../../cli/main.js';
import { loadSidecarConfig } from '../../proxy/index.js';
import { tempDir } from './helpers/mesh.js';

function captureStderr(): { text: () => string; restore: () => void } {
  let text = '';
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = ((chunk: string | Uint8Array) => {
    text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  }) as typeof process.stderr.write;
  return { text: () => text, restore: () => (process.stderr.write = write) };
}

test('causeway sidecar: a bad config exits 2 naming the path; a missing file exits 2', async (t) => {
  const dir = tempDir('cw-sidecar-cli-');
  t.teardown(() => dir.remove());
  const file = join(dir.dir, 'workload.yaml');
  writeFileSync(file, 'cluster: east\nlocality: { region: eu, zone: eu-1 }\nnamespace: default\nservice: reviews\nserviceAccount: reviews\ncontroller: { address: 127.0.0.1:15012 }\nadvertiseAddress: 10.0.0.5\nstateDir: /tmp/x\nsidecar: { outboundRange: 10.0.0.0/8, maxAttempts: 0 }\n');
  const err = captureStderr();
  try {
    t.is(await run(['sidecar', '--config', file]), 2);
    t.is(await run(['sidecar', '--config', join(dir.dir, 'missing.yaml')]), 2);
  } finally {
    err.restore();
  }
  t.regex(err.text(), /sidecar\.outboundRange: expected a loopback CIDR/);
  t.regex(err.text(), /sidecar\.maxAttempts/);
  t.regex(err.text(), /cannot read config file/);
});

test('a plain WorkloadConfig file is a valid sidecar config; the sidecar section only tunes', (t) => {
  const dir = tempDir('cw-sidecar-cli-');
  t.teardown(() => dir.remove());
  const file = join(dir.dir, 'workload.yaml');
  writeFileSync(file, 'cluster: east\nlocality: { region: eu, zone: eu-1 }\nnamespace: default\nservice: reviews\nserviceAccount: reviews\ncontroller: { address: 127.0.0.1:15012 }\nadvertiseAddress: 10.0.0.5\nstateDir: /tmp/x\nupstreams: [{ service: ratings.default, port: 9080, localPort: 19080 }]\n');
  const config = loadSidecarConfig(file);
  t.is(config.inboundPort, 15006);
  t.is(config.dnsPort, 15053);
  t.is(config.sidecar.outboundRange, 'auto');
  t.is(config.sidecar.dns.outside, 'forward');
  t.is(config.upstreams[0]?.localAddress, '127.0.0.1');
  t.true(Object.isFrozen(config.sidecar));
});
