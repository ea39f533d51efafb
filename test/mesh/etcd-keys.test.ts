import test from 'ava';
import { EtcdKeys, InvalidNameError, parseEtcdKey } from '../../mesh/index.js';

test('every key of the layout round-trips through the parser', (t) => {
  const cases: Array<[string, object]> = [
    [EtcdKeys.cluster, { kind: 'cluster' }],
    [EtcdKeys.service('default', 'reviews'), { kind: 'service', namespace: 'default', name: 'reviews' }],
    [EtcdKeys.endpoint('default', 'reviews', 'pod-1.east'), { kind: 'endpoint', namespace: 'default', name: 'reviews', endpointId: 'pod-1.east' }],
    [EtcdKeys.gateway('gw-1'), { kind: 'gateway', gatewayId: 'gw-1' }],
    [EtcdKeys.controller('10.0.0.7-15012'), { kind: 'controller', controllerId: '10.0.0.7-15012' }],
    [EtcdKeys.exportedCluster, { kind: 'exported-cluster' }],
    [EtcdKeys.heartbeat, { kind: 'heartbeat' }],
    [EtcdKeys.exportedService('default', 'reviews'), { kind: 'exported-service', namespace: 'default', name: 'reviews' }],
    [EtcdKeys.importedService('west', 'default', 'reviews'), { kind: 'imported-service', peer: 'west', namespace: 'default', name: 'reviews' }],
    [EtcdKeys.linkStatus('west'), { kind: 'link-status', peer: 'west' }],
    [EtcdKeys.reportedLinks, { kind: 'reported-links' }],
    [EtcdKeys.peerReportedLinks('west'), { kind: 'peer-reported-links', peer: 'west' }],
    [EtcdKeys.policy('authorization', 'default', 'deny-all'), { kind: 'policy', policyKind: 'authorization', namespace: 'default', name: 'deny-all' }],
    [EtcdKeys.workloadGroup('default', 'billing'), { kind: 'workload-group', namespace: 'default', name: 'billing' }],
  ];
  for (const [key, parsed] of cases) t.deepEqual(parseEtcdKey(key), parsed, key);
});

test('keys match docs/architecture.md literally', (t) => {
  t.is(EtcdKeys.importedService('west', 'default', 'reviews'), '/causeway/v1/imports/west/default/reviews');
  t.is(EtcdKeys.heartbeat, '/causeway/v1/exports/_heartbeat');
  t.is(EtcdKeys.reportedLinks, '/causeway/v1/exports/_links');
  t.is(EtcdKeys.peerReportedLinks('west'), '/causeway/v1/imports/west/_links');
  t.true(EtcdKeys.exportedService('a', 'b').startsWith(EtcdKeys.exportsPrefix));
});

for (const key of [
  '/other/v1/cluster',
  '/causeway/v1/unknown/x',
  '/causeway/v1/services/default',
  '/causeway/v1/services/Default/reviews',
  '/causeway/v1/endpoints/default/reviews/-bad-',
  '/causeway/v1/policies/routing/default/x',
  '/causeway/v1/imports/West/default/x',
  '/causeway/v1/exports/default/reviews/extra',
  '/causeway/v1/controllers/a/b',
  '/causeway/v1/controllers/-bad-',
]) {
  test(`refuses ${key}`, (t) => {
    t.throws(() => parseEtcdKey(key), { instanceOf: InvalidNameError });
  });
}

test('builders refuse bad parts instead of writing odd keys', (t) => {
  t.throws(() => EtcdKeys.service('default', 'a/b'), { instanceOf: InvalidNameError });
  t.throws(() => EtcdKeys.endpoint('default', 'svc', '../x'), { instanceOf: InvalidNameError });
});
