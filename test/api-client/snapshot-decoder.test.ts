import test from 'ava';
import { SnapshotDecoder } from '../../api-client/index.js';
import { Snapshot } from '../../mesh/index.js';

const service = (name: string, address = '10.0.0.1') => ({
  name,
  namespace: 'default',
  ports: [{ name: 'http', port: 9080 }],
  serviceAccounts: ['spiffe://causeway.internal/ns/default/sa/x'],
  targets: [{ kind: 'endpoint', cluster: 'east', address, port: 15006, locality: { region: 'eu', zone: 'eu-1' }, priority: 0, weight: 1, healthy: true }],
});
const snapshot = (services: unknown[]) => JSON.stringify({ schema: 1, version: 'v', cluster: 'east', trustDomain: 'causeway.internal', trustBundle: [], services, authorization: [], traffic: [] });

test('decodes exactly as Snapshot.parse does, sharing unchanged services with the previous snapshot', (t) => {
  const decoder = new SnapshotDecoder();
  const first = decoder.decode(snapshot([service('a'), service('b')]));
  const second = decoder.decode(snapshot([service('a'), service('b', '10.0.0.2')]));
  if (!first.ok || !second.ok) return t.fail('decode failed');
  t.deepEqual(second.snapshot, Snapshot.parse(JSON.parse(snapshot([service('a'), service('b', '10.0.0.2')]))));
  t.is(second.snapshot.services[0], first.snapshot.services[0], 'unchanged service reused');
  t.not(second.snapshot.services[1], first.snapshot.services[1]);
});

test('a bad service, a bad envelope or bad JSON is refused with the path', (t) => {
  const decoder = new SnapshotDecoder();
  const bad = decoder.decode(snapshot([service('a'), { ...service('b'), targets: [{ kind: 'teleport' }] }]));
  t.false(bad.ok);
  t.regex(bad.ok ? '' : bad.reason, /services\[1\]\.targets\[0\]/);
  const envelope = decoder.decode(JSON.stringify({ schema: 2, services: [] }));
  t.regex(envelope.ok ? '' : envelope.reason, /schema/);
  t.regex((decoder.decode('{') as { reason: string }).reason, /not JSON/);
});
