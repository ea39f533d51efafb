import { X509Certificate } from 'node:crypto';
import test from 'ava';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { loadIntermediateCa, verifyJoinToken } from '../../ca/index.js';
import { causeway, openssl, tempDir } from './helpers.js';

test.serial('causeway ca: init → intermediate → issue → token → inspect → bundle, checked by openssl', async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  const east = join(dir, 'east');
  const svid = join(dir, 'reviews');
  t.is((await causeway('ca', 'init', '--trust-domain', 'causeway.internal', '--out', root)).code, 0);
  t.is((await stat(join(root, 'root-key.pem'))).mode & 0o777, 0o600);
  const again = await causeway('ca', 'init', '--trust-domain', 'causeway.internal', '--out', root);
  t.is(again.code, 2, 'an existing root is never overwritten without --force');
  t.regex(again.stderr, /already exists; pick another --out or pass --force/);

  t.is((await causeway('ca', 'intermediate', '--root', root, '--cluster', 'east', '--out', east)).code, 0);
  const text = (await openssl(['x509', '-in', join(east, 'ca-cert.pem'), '-noout', '-text'])).stdout;
  t.regex(text, /pathlen:0/);
  t.regex(text, /Permitted:\s+URI:causeway\.internal/);
  t.is((await openssl(['verify', '-CAfile', join(east, 'trust-bundle.pem'), join(east, 'ca-cert.pem')])).code, 0);

  const issued = await causeway('ca', 'issue', '--ca', east, '--spiffe-id', 'spiffe://causeway.internal/ns/default/sa/reviews', '--ttl', '2h', '--out', svid);
  t.is(issued.code, 0, issued.stderr);
  t.is((await stat(join(svid, 'key.pem'))).mode & 0o777, 0o600);
  const verify = await openssl(['verify', '-CAfile', join(svid, 'trust-bundle.pem'), '-untrusted', join(east, 'ca-cert.pem'), join(svid, 'cert.pem')]);
  t.is(verify.code, 0, verify.stderr);

  const inspect = await causeway('ca', 'inspect', join(svid, 'cert-chain.pem'), '--bundle', join(root, 'trust-bundle.pem'), '--json');
  t.is(inspect.code, 0, inspect.stderr);
  const report = JSON.parse(inspect.stdout) as { certificates: { spiffeId?: string; key: string }[]; verification: { ok: boolean; spiffeId: string } };
  t.is(report.certificates[0]?.spiffeId, 'spiffe://causeway.internal/ns/default/sa/reviews');
  t.is(report.certificates[0]?.key, 'ECDSA P-256');
  t.true(report.verification.ok);
  const human = await causeway('ca', 'inspect', join(svid, 'cert-chain.pem'));
  t.regex(human.stdout, /SPIFFE ID:\s+spiffe:\/\/causeway\.internal\/ns\/default\/sa\/reviews/);
  t.regex(human.stdout, /expires in 1h59m|expires in 2h0m/);

  const token = await causeway('ca', 'token', '--ca', east, '--cluster', 'east', '--ns', 'default', '--sa', 'reviews', '--ttl', '1h');
  t.is(token.code, 0, token.stderr);
  const claims = verifyJoinToken(token.stdout.trim(), await loadIntermediateCa(east));
  t.is(claims.sub, 'spiffe://causeway.internal/ns/default/sa/reviews');
  t.is(claims.aud, 'controller.east.cw1.causeway.internal');
  t.is(claims.exp - claims.iat, 3600);
  const tokenFile = join(dir, 'reviews.token');
  t.is((await causeway('ca', 'token', '--ca', east, '--ns', 'default', '--sa', 'reviews', '--out', tokenFile)).code, 0);
  t.is((await stat(tokenFile)).mode & 0o777, 0o600);
  t.is(verifyJoinToken((await readFile(tokenFile, 'utf8')).trim(), await loadIntermediateCa(east)).sub, claims.sub);
  const tooLong = await causeway('ca', 'token', '--ca', east, '--ns', 'default', '--sa', 'reviews', '--ttl', '30d');
  t.is(tooLong.code, 2);
  t.regex(tooLong.stderr, /at most 7d/);
  process.env.CAUSEWAY_CA_DIR = east;
  try {
    const fromEnv = await causeway('ca', 'token', '--cluster', 'east', '--ns', 'default', '--sa', 'reviews', '--ttl', '1h');
    t.is(fromEnv.code, 0, fromEnv.stderr);
  } finally {
    delete process.env.CAUSEWAY_CA_DIR;
  }
  t.is((await causeway('ca', 'token', '--cluster', 'east', '--ns', 'default', '--sa', 'reviews')).code, 2, 'no --ca and no CAUSEWAY_CA_DIR');
  const wrongCluster = await causeway('ca', 'token', '--ca', east, '--cluster', 'west', '--ns', 'default', '--sa', 'reviews');
  t.is(wrongCluster.code, 2);

  t.is((await causeway('ca', 'init', '--trust-domain', 'causeway.internal', '--out', join(dir, 'root2'))).code, 0);
  const bundle = await causeway('ca', 'bundle', '--add', join(root, 'root-cert.pem'), join(dir, 'root2', 'root-cert.pem'), '--out', join(dir, 'bundle.pem'));
  t.is(bundle.code, 0, bundle.stderr);
  t.is((await readFile(join(dir, 'bundle.pem'), 'utf8')).match(/BEGIN CERTIFICATE/g)?.length, 2);
  const notUnderRoot2 = await causeway('ca', 'inspect', join(svid, 'cert-chain.pem'), '--bundle', join(dir, 'root2', 'root-cert.pem'));
  t.is(notUnderRoot2.code, 1);
  t.regex(notUnderRoot2.stdout, /verifies:\s+NO/);
});

test.serial('causeway ca: bad input exits 2 with a message that says what to do', async (t) => {
  const dir = await tempDir(t);
  const badKey = await causeway('ca', 'init', '--trust-domain', 'causeway.internal', '--out', dir, '--key-type', 'dsa-1024');
  t.is(badKey.code, 2);
  t.regex(badKey.stderr, /--key-type must be one of ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096/);
  const badTtl = await causeway('ca', 'init', '--trust-domain', 'causeway.internal', '--out', dir, '--ttl', 'forever');
  t.is(badTtl.code, 2);
  const badTd = await causeway('ca', 'init', '--trust-domain', 'Bad Domain', '--out', dir);
  t.is(badTd.code, 2);
  t.regex(badTd.stderr, /--trust-domain/);
  const noRoot = await causeway('ca', 'intermediate', '--root', join(dir, 'missing'), '--cluster', 'east', '--out', join(dir, 'east'));
  t.is(noRoot.code, 1);
  t.regex(noRoot.stderr, /cannot read the root certificate .*causeway ca init/);
});

test.serial('regression: causeway ca issue --ttl 30d is refused (exit 2) naming the 7d maximum and the flag, and writes nothing; 7d is issued', async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'root');
  const east = join(dir, 'east');
  t.is((await causeway('ca', 'init', '--trust-domain', 'causeway.internal', '--out', root)).code, 0);
  t.is((await causeway('ca', 'intermediate', '--root', root, '--cluster', 'east', '--out', east)).code, 0);
  const spiffeId = 'spiffe://causeway.internal/ns/default/sa/reviews';

  const long = await causeway('ca', 'issue', '--ca', east, '--spiffe-id', spiffeId, '--ttl', '30d', '--out', join(dir, 'long'));
  t.is(long.code, 2, long.stderr);
  t.regex(long.stderr, /--ttl 30d: 30d is above the 7d maximum of a workload certificate; ask for 7d or less/);
  t.regex(long.stderr, /ca\/README\.md "Profiles"/);
  await t.throwsAsync(stat(join(dir, 'long', 'key.pem')), { code: 'ENOENT' });

  const week = await causeway('ca', 'issue', '--ca', east, '--spiffe-id', spiffeId, '--ttl', '7d', '--out', join(dir, 'week'));
  t.is(week.code, 0, week.stderr);
  const cert = await readFile(join(dir, 'week', 'cert.pem'), 'utf8');
  const lifetimeMs = new Date(new X509Certificate(cert).validTo).getTime() - Date.now();
  t.true(lifetimeMs <= 7 * 86_400_000 && lifetimeMs > 7 * 86_400_000 - 120_000, `lifetime ${lifetimeMs} ms`);
});
