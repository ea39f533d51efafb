import test from 'ava';
import { InvalidNameError, formatMeshDnsName, parseMeshDnsName } from '../../mesh/index.js';

const domain = 'causeway.internal';

test('any-cluster name', (t) => {
  t.deepEqual(parseMeshDnsName('reviews.default.svc.causeway.internal.', domain), {
    kind: 'mesh',
    name: { service: 'reviews', namespace: 'default', cluster: undefined, portName: undefined, protocol: undefined },
  });
});

test('cluster-pinned name, case-insensitive as DNS is', (t) => {
  const match = parseMeshDnsName('Reviews.Default.SVC.West.Causeway.Internal', domain);
  t.is(match.kind, 'mesh');
  if (match.kind === 'mesh') t.is(match.name.cluster, 'west');
});

test('SRV-style name carries the port name', (t) => {
  const match = parseMeshDnsName('_http._tcp.reviews.default.svc.causeway.internal', domain);
  t.true(match.kind === 'mesh' && match.name.portName === 'http' && match.name.protocol === 'tcp');
});

test('names outside the mesh domain are "outside", not errors', (t) => {
  t.deepEqual(parseMeshDnsName('example.com', domain), { kind: 'outside' });
  t.deepEqual(parseMeshDnsName('notcauseway.internal', domain), { kind: 'outside' });
});

test('format round-trips', (t) => {
  for (const parts of [
    { service: 'a', namespace: 'b' },
    { service: 'a', namespace: 'b', cluster: 'east' },
    { service: 'a', namespace: 'b', portName: 'grpc' },
  ]) {
    const text = formatMeshDnsName(parts, domain);
    const match = parseMeshDnsName(text, domain);
    t.is(match.kind, 'mesh');
    if (match.kind === 'mesh') {
      t.is(match.name.service, 'a');
      t.is(match.name.cluster, parts.cluster);
    }
  }
});

for (const [what, input] of [
  ['the domain itself', 'causeway.internal'],
  ['missing svc label', 'reviews.default.causeway.internal'],
  ['too many labels', 'a.reviews.default.svc.west.causeway.internal'],
  ['underscore service', 'my_svc.default.svc.causeway.internal'],
  ['bad SRV protocol', '_http._sctp.reviews.default.svc.causeway.internal'],
  ['cluster too long', `reviews.default.svc.${'c'.repeat(33)}.causeway.internal`],
] as const) {
  test(`refuses ${what}`, (t) => {
    t.throws(() => parseMeshDnsName(input, domain), { instanceOf: InvalidNameError });
  });
}
