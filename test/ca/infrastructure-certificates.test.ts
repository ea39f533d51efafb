import { X509Certificate } from 'node:crypto';
import test from 'ava';
import { CaError, CaErrorCodes, createInfrastructureCa, issueInfrastructureCertificate } from '../../ca/index.js';

test('server leaves carry exactly the hosts given (IPv4, IPv6 with and without "::", DNS) and serverAuth only; client leaves clientAuth and no hosts', async (t) => {
  const ca = await createInfrastructureCa({ commonName: 'test infra CA', days: 2 });
  const issuer = { caCertificatePem: ca.certificatePem, caPrivateKeyPem: ca.privateKeyPem, days: 1 };
  const server = await issueInfrastructureCertificate({ ...issuer, commonName: 'etcd', usage: 'server', hosts: ['::1', '2001:db8::', 'fe80:1:2:3:4:5:6:7', '10.0.0.1', 'etcd.example'] });
  const cert = new X509Certificate(server.certificatePem);
  t.is(cert.subjectAltName, 'DNS:etcd.example, IP Address:0:0:0:0:0:0:0:1, IP Address:2001:DB8:0:0:0:0:0:0, IP Address:FE80:1:2:3:4:5:6:7, IP Address:10.0.0.1');
  t.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  t.true(cert.checkIssued(new X509Certificate(ca.certificatePem)));
  const client = new X509Certificate((await issueInfrastructureCertificate({ ...issuer, commonName: 'root', usage: 'client' })).certificatePem);
  t.deepEqual(client.keyUsage, ['1.3.6.1.5.5.7.3.2']);
  t.is(client.subjectAltName, undefined);
  await t.throwsAsync(issueInfrastructureCertificate({ ...issuer, commonName: 'root', usage: 'client', hosts: ['x.example'] }), { instanceOf: CaError, message: /names no hosts/ });
  await t.throwsAsync(issueInfrastructureCertificate({ ...issuer, commonName: 'etcd', usage: 'server' }), { instanceOf: CaError, message: /at least one host/ });
  await t.throwsAsync(issueInfrastructureCertificate({ ...issuer, commonName: 'etcd', usage: 'server', hosts: ['::ffff:10.0.0.1'] }), { message: /plain IPv4/ });
  await t.throwsAsync(issueInfrastructureCertificate({ ...issuer, days: 5, commonName: 'etcd', usage: 'server', hosts: ['a.example'] }), { code: CaErrorCodes.ttlAboveMaximum });
});
