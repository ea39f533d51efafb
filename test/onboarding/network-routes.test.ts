import test from 'ava';
import { NETWORK_LABEL, type Snapshot, type SnapshotTarget } from '../../mesh/index.js';
import { reachOtherNetworks } from '../../proxy/network-routes.js';

const locality = { region: 'eu', zone: 'eu-1' };
const endpoint = (address: string, labels: Record<string, string>, healthy = true): SnapshotTarget => ({ kind: 'endpoint', cluster: 'east', address, port: 15006, locality, priority: 0, weight: 1, labels, healthy, stale: false, identity: 'spiffe://causeway.internal/ns/default/sa/web', endpointId: address });
const peerGateway: SnapshotTarget = { kind: 'gateway', cluster: 'west', address: '192.0.2.1', port: 15443, locality: { region: 'us', zone: 'us-1' }, priority: 2, weight: 3, labels: {}, healthy: true, stale: false };
const snapshot = (targets: SnapshotTarget[]): Snapshot => ({
  schema: 1,
  version: 'v1',
  cluster: 'east',
  trustDomain: 'causeway.internal',
  trustBundle: [],
  services: [{ name: 'web', namespace: 'default', ports: [{ name: 'http', port: 8080, protocol: 'http' }], serviceAccounts: ['spiffe://causeway.internal/ns/default/sa/web'], subsets: {}, targets }],
  authorization: [],
  traffic: [],
});

test('endpoints in another network are replaced by one target: the cluster gateway, weighted by their healthy count', (t) => {
  const vm = { [NETWORK_LABEL]: 'vms' };
  const input = snapshot([endpoint('10.0.0.5', {}), endpoint('172.16.0.7', vm), endpoint('172.16.0.8', vm, false), peerGateway]);
  const out = reachOtherNetworks(input, { labels: {}, networkGateway: '10.0.0.2:15443' });
  const targets = out.services[0]!.targets;
  t.deepEqual(targets.map((x) => `${x.kind} ${x.cluster} ${x.address}:${x.port} w${x.weight}`), ['endpoint east 10.0.0.5:15006 w1', 'gateway west 192.0.2.1:15443 w3', 'gateway east 10.0.0.2:15443 w1']);
  t.true(targets[2]!.healthy);
  t.is(targets[2]!.identity, undefined, "through a gateway the service's allowed identities apply");
});

test("from the VM's side, the cluster's own endpoints are the other network", (t) => {
  const input = snapshot([endpoint('10.0.0.5', {}), endpoint('172.16.0.7', { [NETWORK_LABEL]: 'vms' })]);
  const out = reachOtherNetworks(input, { labels: { [NETWORK_LABEL]: 'vms' }, networkGateway: '172.16.0.2:15443' });
  t.deepEqual(out.services[0]!.targets.map((x) => `${x.kind} ${x.address}`), ['endpoint 172.16.0.7', 'gateway 172.16.0.2']);
});

test('without a networkGateway, or with every endpoint in the same network, the snapshot is unchanged', (t) => {
  const input = snapshot([endpoint('10.0.0.5', {}), endpoint('172.16.0.7', { [NETWORK_LABEL]: 'vms' })]);
  t.is(reachOtherNetworks(input, { labels: {} }), input);
  const same = snapshot([endpoint('10.0.0.5', {})]);
  t.is(reachOtherNetworks(same, { labels: {}, networkGateway: '10.0.0.2:15443' }), same);
});

test('a workload outside the cluster networks reaches peers through its own gateway (one target per peer, SNI still naming the peer); cluster workloads keep going direct', (t) => {
  const secondWest: SnapshotTarget = { ...peerGateway, address: '192.0.2.2', healthy: false };
  const input = snapshot([endpoint('172.16.0.7', { [NETWORK_LABEL]: 'vms' }), secondWest, peerGateway]);
  const vm = reachOtherNetworks(input, { labels: { [NETWORK_LABEL]: 'vms' }, networkGateway: '172.16.0.2:15443' });
  t.deepEqual(vm.services[0]!.targets.map((x) => `${x.kind} ${x.cluster} ${x.address} ${x.healthy}`), ['endpoint east 172.16.0.7 true', 'gateway west 172.16.0.2 true']);
  const inCluster = reachOtherNetworks(snapshot([endpoint('10.0.0.5', {}), peerGateway]), { labels: {}, networkGateway: '10.0.0.2:15443' });
  t.deepEqual(inCluster.services[0]!.targets.map((x) => `${x.kind} ${x.cluster} ${x.address}`), ['endpoint east 10.0.0.5', 'gateway west 192.0.2.1']);
});
