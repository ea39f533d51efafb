// `causeway federation probe` (federation/export-store-probe.ts) against a real export
// store: etcd with the TLS flags `federation init` prints, auth on. The probe dials the
// store as a link dials a gateway — host:port with the export-store SNI — so the store's
// own address stands in for the gateway here; the topologies' WAN steps run it through one.
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createExportStorePki, FederationError, FederationErrorCodes, probeExportStore } from '../../federation/index.js';
import { startExportStore } from './export-store-fixture.js';

const hostPort = (endpoint: string) => new URL(endpoint).host;

test('lists the exports a certificate may read, by the export-store SNI, without _cluster, _heartbeat and _links', async (t) => {
  const store = await startExportStore(t, 'west', { auth: true });
  await store.root.put('/causeway/v1/exports/_cluster', '{}');
  await store.root.put('/causeway/v1/exports/_heartbeat', '{}');
  await store.root.put('/causeway/v1/exports/_links', '{}');
  await store.root.put('/causeway/v1/exports/default/reviews', '{}');
  const result = await probeExportStore({
    peer: 'west',
    gateways: store.etcd.endpoints.map(hostPort),
    trustDomain: 'causeway.internal',
    ca: store.pki.caCertFile,
    cert: store.pki.controllerCertFile,
    key: store.pki.controllerKeyFile,
    dialTimeoutMs: 2000,
  });
  t.is(result.serverName, 'exports.west.cw1.causeway.internal');
  t.is(result.exports, 1);
  t.deepEqual(result.keys, ['/causeway/v1/exports/default/reviews']);
});

test('is refused without a client certificate, and with one of another CA', async (t) => {
  const store = await startExportStore(t, 'west', { auth: true });
  const dir = mkdtempSync(join(tmpdir(), 'cw-probe-other-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  // CN=root too, but from another cluster's export-store CA: the handshake must refuse it.
  const other = await createExportStorePki({ cluster: 'east', trustDomain: 'causeway.internal', dir, days: 1 });
  const base = { peer: 'west', gateways: store.etcd.endpoints.map(hostPort), trustDomain: 'causeway.internal', ca: store.pki.caCertFile, dialTimeoutMs: 2000 };
  for (const [what, credentials] of [
    ['no client certificate', {}],
    ["another CA's certificate", { cert: other.controllerCertFile, key: other.controllerKeyFile }],
  ] as const) {
    const error = await t.throwsAsync(probeExportStore({ ...base, ...credentials }), { instanceOf: FederationError }, what);
    t.is(error?.code, FederationErrorCodes.etcdPermissionDenied, `${what}: ${error?.message}`);
  }
});

test('a certificate without its key is refused before anything is dialled', async (t) => {
  const error = await t.throwsAsync(
    probeExportStore({ peer: 'west', gateways: ['127.0.0.1:1'], trustDomain: 'causeway.internal', ca: '/nonexistent/ca.pem', cert: '/nonexistent/cert.pem' }),
    { instanceOf: FederationError },
  );
  t.is(error?.code, FederationErrorCodes.probeInvalid);
});
