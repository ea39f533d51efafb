import { connect } from 'node:net';
import test from 'ava';
import { Etcd3Store } from '../../store/index.js';
import { startEtcd, startFaultProxy } from '../../testkit/index.js';

test('a plain etcd starts, serves and is destroyed', async (t) => {
  const etcd = await startEtcd({ name: 'plain' });
  t.teardown(() => etcd.destroy());
  const client = new Etcd3Store({ endpoints: etcd.endpoints, dialTimeoutMs: 5000 });
  t.teardown(() => client.close());
  await client.put('/causeway/v1/cluster', '{}');
  t.is((await client.get('/causeway/v1/cluster'))?.value.toString(), '{}');
  await etcd.restart();
  t.is((await client.get('/causeway/v1/cluster'))?.value.toString(), '{}', 'data survives a restart');
});

test('a TLS etcd takes the client certificate CN as the user (RBAC)', async (t) => {
  const etcd = await startEtcd({ name: 'tls', tls: true });
  t.teardown(() => etcd.destroy());
  etcd.etcdctl(['user', 'add', 'reader', '--no-password']);
  etcd.etcdctl(['role', 'add', 'exports-reader']);
  etcd.etcdctl(['role', 'grant-permission', 'exports-reader', 'read', '--prefix=true', '/causeway/v1/exports/']);
  etcd.etcdctl(['user', 'grant-role', 'reader', 'exports-reader']);
  etcd.enableAuth();
  etcd.etcdctl(['put', '/causeway/v1/exports/default/a', 'x']);
  etcd.etcdctl(['put', '/causeway/v1/endpoints/default/a/e1', 'y']);
  const reader = etcd.pki!.issue('reader');
  const client = new Etcd3Store({ endpoints: etcd.endpoints, tls: { ca: etcd.pki!.caCertFile, cert: reader.certFile, key: reader.keyFile }, dialTimeoutMs: 5000 });
  t.teardown(() => client.close());
  t.is((await client.get('/causeway/v1/exports/default/a'))?.value.toString(), 'x');
  await t.throwsAsync(client.get('/causeway/v1/endpoints/default/a/e1'), { message: /permission denied/ });
  await t.throwsAsync(client.put('/causeway/v1/exports/default/a', 'z'), { message: /permission denied/ });
});

test('the fault proxy cuts and refuses connections', async (t) => {
  const etcd = await startEtcd({ name: 'faulty' });
  t.teardown(() => etcd.destroy());
  const port = Number(new URL(etcd.clientUrl).port);
  const proxy = await startFaultProxy({ host: '127.0.0.1', port });
  t.teardown(() => proxy.close());
  const client = new Etcd3Store({ endpoints: [proxy.url()], dialTimeoutMs: 5000 });
  t.teardown(() => client.close());
  await client.put('k', 'v');
  t.true(proxy.connections() >= 1);
  proxy.cut({ refuse: true });
  t.is(proxy.connections(), 0);
  const refused = await new Promise<boolean>((resolve) => {
    const socket = connect(proxy.port, '127.0.0.1');
    socket.on('close', () => resolve(true));
    socket.on('data', () => resolve(false));
  });
  t.true(refused);
  proxy.heal();
  t.is((await client.get('k'))?.value.toString(), 'v');
});
