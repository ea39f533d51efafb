#!/usr/bin/env node
// Installs the Debian packages Causeway's tests, demo and benchmarks need, when missing.
// Usage: node scripts/ensure-system-packages.mjs [test|demo|bench]
// Plain JavaScript on purpose: it runs before `npm ci` has given us Node 24 and tsx.
import { execFileSync, spawnSync } from 'node:child_process';

const NEEDS = {
  // command on PATH -> Debian package providing it
  // dockerd (not docker: a docker client alone may be on PATH) and debootstrap: the Docker
  // tier (test/docker/) starts its own engine and builds its base images offline.
  // keytool and javac: PKCS#12 keystores are checked by the JDK's keytool and a Java TLS
  // client (`java Client.java` needs the compiler). promtool: the alert and recording rules
  // in deploy/prometheus/ are checked and unit-tested by Prometheus' own tool; prometheus:
  // the real server a topology's prom/prometheus service runs (chained-gateways' alert test).
  test: {
    etcd: 'etcd-server', etcdctl: 'etcd-client', openssl: 'openssl', 'docker-compose': 'docker-compose', ip: 'iproute2', 'systemd-analyze': 'systemd', setpriv: 'util-linux',
    // nft and tc: the topology runner's fault steps (partition, loss, delay) inside its
    // namespaces; nsenter: the same steps under Docker, entering a container's namespace.
    nft: 'nftables', tc: 'iproute2', nsenter: 'util-linux',
    dockerd: 'docker.io', debootstrap: 'debootstrap', keytool: 'openjdk-17-jdk-headless', javac: 'openjdk-17-jdk-headless',
    promtool: 'prometheus', prometheus: 'prometheus',
    // chromium: the mesh view's browser test (test/ui/) drives it headless through puppeteer-core.
    chromium: 'chromium',
    // nghttp and curl: real HTTP/2 clients for the sidecar's h2c tests (Upgrade: h2c, prior knowledge).
    nghttp: 'nghttp2-client', curl: 'curl',
  },
  demo: { etcd: 'etcd-server', etcdctl: 'etcd-client', openssl: 'openssl', ip: 'iproute2' },
  bench: {
    etcd: 'etcd-server', etcdctl: 'etcd-client', openssl: 'openssl', haproxy: 'haproxy', nginx: 'nginx-light',
    wrk: 'wrk', h2load: 'nghttp2-client', curl: 'curl',
  },
};
// Files (not commands) that a package provides.
const FILE_NEEDS = { bench: { '/usr/lib/nginx/modules/ngx_stream_module.so': 'libnginx-mod-stream' } };

const purpose = process.argv[2] ?? 'test';
if (!(purpose in NEEDS)) {
  process.stderr.write(`ensure-system-packages: unknown purpose "${purpose}"; use test, demo or bench\n`);
  process.exit(2);
}
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const missing = new Set();
for (const [cmd, pkg] of Object.entries(NEEDS[purpose])) if (!has(cmd)) missing.add(pkg);
for (const [file, pkg] of Object.entries(FILE_NEEDS[purpose] ?? {})) {
  if (spawnSync('test', ['-e', file]).status !== 0) missing.add(pkg);
}
if (missing.size === 0) process.exit(0);
const list = [...missing];
if (process.getuid?.() !== 0) {
  process.stderr.write(`causeway needs these Debian packages: ${list.join(' ')}\nrun as root: apt-get update && apt-get install -y ${list.join(' ')}\n`);
  process.exit(1);
}
process.stderr.write(`installing Debian packages: ${list.join(' ')}\n`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
const apt = (args) => execFileSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env });
try {
  apt(['install', '-y', '-q', '--no-install-recommends', ...list]);
} catch {
  apt(['update', '-q']);
  apt(['install', '-y', '-q', '--no-install-recommends', ...list]);
}
// Debian starts services it installs; Causeway runs its own instances on its own ports
// (and the Docker tier its own dockerd, with its own data root and socket).
for (const service of ['etcd', 'haproxy', 'nginx', 'docker', 'prometheus']) spawnSync('service', [service, 'stop'], { stdio: 'ignore' });
