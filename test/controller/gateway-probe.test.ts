import test from 'ava';
import { createServer } from 'node:net';
import { EtcdKeys } from '../../mesh/index.js';
import { freePort, waitFor } from '../../testkit/ports.js';
import { controllerWorld } from './harness.js';

interface Listed {
  gateways?: { address: string; port: number }[];
}

test('a gateway registration whose port refuses stays out of /exports/_cluster until its port answers (a registration that outlived its process draws no peer traffic)', async (t) => {
  const world = await controllerWorld(t);
  await world.startController();
  const read = async (key: string) => JSON.parse((await world.store.get(key))?.value.toString() ?? '{}') as Listed;
  const port = await freePort();
  // What etcd restores after a restart: the dead process's key on a lease nobody refreshes.
  const lease = await world.store.grantLease(30);
  const registration = { schema: 1, id: 'gw-east', cluster: 'east', network: 'default', locality: { region: 'eu', zone: 'eu-1' }, address: '127.0.0.1', port };
  await world.store.put(EtcdKeys.gateway('gw-east'), JSON.stringify(registration), { lease });
  // The cluster record lists every registration: the controller has seen this one.
  await waitFor(async () => (await read(EtcdKeys.cluster)).gateways?.some((g) => g.port === port), { what: 'the registration in the cluster record' });
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.deepEqual((await read(EtcdKeys.exportedCluster)).gateways, [], 'the port refuses: peers are not told about it');

  const gateway = createServer((socket) => socket.end());
  await new Promise<void>((resolve) => gateway.listen(port, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => gateway.close(() => resolve())));
  const listening = Date.now();
  await waitFor(async () => (await read(EtcdKeys.exportedCluster)).gateways?.length === 1, { what: 'the gateway in _cluster once it answers', timeoutMs: 5000, intervalMs: 50 });
  t.deepEqual((await read(EtcdKeys.exportedCluster)).gateways, [{ address: '127.0.0.1', port }]);
  t.true(Date.now() - listening < 2000, `listed ${Date.now() - listening} ms after it listened`);
});
