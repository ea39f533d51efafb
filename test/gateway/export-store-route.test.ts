import test from 'ava';
import { EtcdKeys, exportStoreSni, parseConfigText } from '../../mesh/index.js';
import { connectFederationStore, FederationError } from '../../federation/index.js';
import { exportStoreTargets } from '../../gateway/catalog-routes.js';
import { startExportStore } from '../federation/export-store-fixture.js';
import { TD, metric, startGateway } from './helpers.js';

test("the export-store SNI of this cluster reaches the export store through the gateway, TLS end to end (the store's own certificate, the client's own login)", async (t) => {
  const store = await startExportStore(t, 'east', { auth: true });
  await store.root.commit([{ put: EtcdKeys.exportedCluster, value: '{"through":"the gateway"}' }]);
  const config = parseConfigText(
    'cluster',
    `cluster: { name: east, locality: { region: r, zone: z } }\netcd: { endpoints: [http://127.0.0.1:2379] }\nexportStore: { endpoints: [${store.etcd.clientUrl}], tls: { ca: a, cert: b, key: c } }\n`,
    'east.yaml',
  );
  const targets = exportStoreTargets(config);
  t.deepEqual(targets, [{ address: '127.0.0.1', port: Number(new URL(store.etcd.clientUrl).port) }]);
  const { gateway, port } = await startGateway({ cluster: 'east', trustDomain: TD, exportStore: targets });
  t.teardown(() => gateway.close());

  // The client dials the gateway's address and names the export store: the certificate it
  // verifies is the export store's (the gateway holds none), the login its own CN=root.
  const through = connectFederationStore({ ...store.rootConnection, endpoints: [`https://127.0.0.1:${port}`], serverName: exportStoreSni('east', TD) });
  t.teardown(() => through.close());
  t.is((await through.get(EtcdKeys.exportedCluster))?.value.toString(), '{"through":"the gateway"}');
  await through.put(EtcdKeys.heartbeat, '{"written":"through the gateway"}');
  t.is((await store.root.get(EtcdKeys.heartbeat))?.value.toString(), '{"written":"through the gateway"}');

  // Without the SNI the gateway has no route: the address alone reaches nothing.
  const nameless = connectFederationStore({ ...store.rootConnection, endpoints: [`https://127.0.0.1:${port}`], dialTimeoutMs: 1000 });
  t.teardown(() => nameless.close());
  await t.throwsAsync(nameless.get(EtcdKeys.exportedCluster), { instanceOf: FederationError });
  // Another cluster's export-store name is not this gateway's to route.
  const other = connectFederationStore({ ...store.rootConnection, endpoints: [`https://127.0.0.1:${port}`], serverName: exportStoreSni('west', TD), dialTimeoutMs: 1000 });
  t.teardown(() => other.close());
  await t.throwsAsync(other.get(EtcdKeys.exportedCluster), { instanceOf: FederationError });
  t.true((await metric(gateway, 'causeway_gateway_refusals_total', { reason: 'unknown-sni' })) >= 1);
});

test('without exportStore in the config there is no export-store route', (t) => {
  const config = parseConfigText('cluster', 'cluster: { name: east, locality: { region: r, zone: z } }\netcd: { endpoints: [http://127.0.0.1:2379] }\n', 'east.yaml');
  t.is(exportStoreTargets(config), undefined);
});
