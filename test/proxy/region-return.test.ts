import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { EtcdKeys } from '../../mesh/index.js';
import { Etcd3Store } from '../../store/index.js';
import { waitFor } from '../../testkit/ports.js';
import { startMesh, startReviewsCaller } from './helpers/clusters.js';
import { get } from './helpers/mesh.js';

// Three clusters on loopback (real etcd, controllers, federation, gateways): east and west
// share region eu, south is in us. productpage in east calls reviews, which runs in west
// and south, so west is preferred and south is the fall-back.

/** Requests at about 50/s, each answer stamped with the app that gave it and when. */
function steadyLoad(address: string) {
  let running = true;
  const answers: { app: string; at: number }[] = [];
  const loop = (async () => {
    while (running) {
      const res = await get(address, 9080, '/load').catch(() => undefined);
      if (res?.status === 200) answers.push({ app: String(res.json?.app), at: Date.now() });
      await sleep(20);
    }
  })();
  return {
    answers,
    async stop() {
      running = false;
      await loop;
    },
  };
}

test('a region returning: traffic comes back to its gateway within 5 s of the gateway serving, though a registration outlived the old process (was 22 s: the stale registration drew traffic and the gateway stayed ejected)', async (t) => {
  const world = await startMesh([
    { name: 'east', region: 'eu', zone: 'eu-1' },
    { name: 'west', region: 'eu', zone: 'eu-2' },
    { name: 'south', region: 'us', zone: 'us-1' },
  ]);
  t.teardown(() => world.close());
  const west = world.cluster('west');
  const westStore = new Etcd3Store({ endpoints: west.etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => westStore.close());
  const client = await startReviewsCaller(t, world, ['west', 'south']);
  const address = client.sidecar.outbound.lookup('default', 'reviews')!.address;
  const run = steadyLoad(address);
  t.teardown(() => run.stop());
  const since = (at: number, app: string) => run.answers.filter((a) => a.at >= at && a.app === app).length;
  await waitFor(() => since(0, 'reviews-west') >= 10, { what: 'traffic through west (same region)', timeoutMs: 20_000 });

  // West's gateway dies; its registration outlives it: etcd restores a lease after a
  // restart with a fresh TTL, and nothing refreshes it — the same as putting the old
  // value back on a lease nobody keeps alive.
  const registration = (await westStore.get(EtcdKeys.gateway('gw-west')))!.value.toString();
  await west.stopGateway();
  const down = Date.now();
  await waitFor(() => since(down, 'reviews-south') >= 10, { what: 'traffic through south', timeoutMs: 20_000 });
  const lease = await westStore.grantLease(10);
  await westStore.put(EtcdKeys.gateway('gw-west'), registration, { lease });
  // Long enough for the sidecar to try the dead address twice if it were listed (5 s,
  // then 10 s of ejection), short enough that the stale lease is still there.
  await sleep(7000);

  await west.startGateway();
  const serving = Date.now();
  await waitFor(() => since(serving, 'reviews-west') >= 1, { what: 'traffic back through west', timeoutMs: 30_000, intervalMs: 20 });
  const returnMs = run.answers.find((a) => a.at >= serving && a.app === 'reviews-west')!.at - serving;
  t.log(`return time: ${returnMs} ms from west's gateway serving to the first answer from west`);
  t.true(returnMs <= 5000, `traffic returned ${returnMs} ms after west's gateway served (at most 5000)`);
});
