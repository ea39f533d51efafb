import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import {
  CaError,
  CaErrorCodes,
  CaFiles,
  DEFAULT_JOIN_TOKEN_TTL_SECONDS,
  MAX_JOIN_TOKEN_TTL_SECONDS,
  KeyTypes,
  buildTrustBundle,
  createIntermediateCa,
  createRootCa,
  formatInspection,
  inspectCertificates,
  loadIntermediateCa,
  loadRootCa,
  mintJoinToken,
  writeIntermediateCa,
  writeRootCa,
  writeWorkloadCertificate,
  writeWorkloadPkcs12,
  type KeyType,
} from '../../ca/index.js';
import { UsageError, clusterNameProblem, formatSpiffeId, parseDurationMs, parseSpiffeId, trustDomainProblem } from '../../mesh/index.js';

/** `10y`, `365d`, `24h`, `90m`, `3600s` → whole seconds. */
function ttlFlag(name: string, text: string): number {
  const years = /^(\d+)y$/.exec(text.trim());
  let seconds: number;
  try {
    seconds = years ? Number(years[1]) * 365 * 86_400 : Math.round(parseDurationMs(text) / 1000);
  } catch {
    throw new UsageError(`--${name} must be a duration such as 10y, 365d, 24h, 90m or 3600s (got "${text}")`);
  }
  if (seconds < 1) throw new UsageError(`--${name} must be at least 1s (got "${text}")`);
  return seconds;
}

function keyTypeFlag(text: string | undefined): KeyType | undefined {
  if (text === undefined) return undefined;
  if (!(KeyTypes as readonly string[]).includes(text)) throw new UsageError(`--key-type must be one of ${KeyTypes.join(', ')} (got "${text}")`);
  return text as KeyType;
}

async function refuseOverwrite(dir: string, file: string, force: boolean | undefined): Promise<void> {
  if (force) return;
  const exists = await stat(join(dir, file)).then(
    () => true,
    () => false,
  );
  if (exists) throw new UsageError(`${join(dir, file)} already exists; pick another --out or pass --force to replace it`);
}

async function readFlagFile(flag: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(`--${flag} ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** The first line of a password file; printable ASCII so Java, .NET and OpenSSL derive the same key bytes. */
function pkcs12Password(text: string, file: string): string {
  const password = text.split(/\r?\n/)[0] ?? '';
  if (password.length === 0) throw new UsageError(`--password-file ${file}: the first line is empty; write the keystore password there`);
  if (!/^[\x20-\x7e]+$/.test(password)) throw new UsageError(`--password-file ${file}: the password must be printable ASCII (readers of PKCS#12 disagree on other characters)`);
  return password;
}

const print = (text: string) => process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);

export function registerCaCommands(program: Command): void {
  const ca = program.command('ca').description('the shared-root CA: root, per-cluster intermediates, workload certificates, trust bundles, join tokens');

  ca.command('init')
    .description('create the offline root: root-key.pem (mode 0600), root-cert.pem, trust-bundle.pem')
    .requiredOption('--trust-domain <td>', 'SPIFFE trust domain, e.g. causeway.internal')
    .requiredOption('--out <dir>', 'directory to write (created if missing)')
    .option('--key-type <type>', `${KeyTypes.join(' | ')}`, 'ec-p256')
    .option('--ttl <duration>', 'validity', '10y')
    .option('--force', 'replace an existing root in --out')
    .action(async (flags: { trustDomain: string; out: string; keyType: string; ttl: string; force?: boolean }) => {
      const problem = trustDomainProblem(flags.trustDomain);
      if (problem) throw new UsageError(`--trust-domain: ${problem}`);
      const keyType = keyTypeFlag(flags.keyType);
      const ttlSeconds = ttlFlag('ttl', flags.ttl);
      await refuseOverwrite(flags.out, CaFiles.rootKey, flags.force);
      const root = await createRootCa({ trustDomain: flags.trustDomain, ttlSeconds, ...(keyType ? { keyType } : {}) });
      const files = await writeRootCa(root, flags.out);
      print(`root CA for ${root.trustDomain}: ${files.certFile} (key ${files.keyFile}, mode 0600), valid until ${new Date(root.certificate.validTo).toISOString()}`);
    });

  ca.command('intermediate')
    .description("create a cluster's intermediate (pathlen:0, URI name constraint to the trust domain): ca-key.pem (0600), ca-cert.pem, cert-chain.pem, trust-bundle.pem")
    .requiredOption('--root <dir>', 'root directory from `causeway ca init`')
    .requiredOption('--cluster <name>', 'cluster name')
    .requiredOption('--out <dir>', "directory to write: the controller's caDir")
    .option('--key-type <type>', `${KeyTypes.join(' | ')}`, 'ec-p256')
    .option('--ttl <duration>', 'validity', '1y')
    .option('--trust-bundle <file>', 'bundle to serve instead of the root alone (old + new root during a rotation)')
    .option('--force', 'replace an existing intermediate in --out')
    .action(async (flags: { root: string; cluster: string; out: string; keyType: string; ttl: string; trustBundle?: string; force?: boolean }) => {
      const problem = clusterNameProblem(flags.cluster);
      if (problem) throw new UsageError(`--cluster: ${problem}`);
      const keyType = keyTypeFlag(flags.keyType);
      const ttlSeconds = ttlFlag('ttl', flags.ttl);
      await refuseOverwrite(flags.out, CaFiles.caKey, flags.force);
      const root = await loadRootCa(flags.root);
      const bundle = flags.trustBundle === undefined ? undefined : buildTrustBundle([await readFlagFile('trust-bundle', flags.trustBundle), root.certificatePem]);
      const intermediate = await createIntermediateCa(root, { cluster: flags.cluster, ttlSeconds, ...(keyType ? { keyType } : {}), ...(bundle ? { trustBundlePem: bundle } : {}) });
      const files = await writeIntermediateCa(intermediate, flags.out);
      print(`intermediate CA for cluster ${intermediate.cluster}: ${files.certFile} (key ${files.keyFile}, mode 0600), chain ${files.certChainFile}, bundle ${files.trustBundleFile}`);
    });

  ca.command('issue')
    .description('issue a workload key and certificate (tooling, static hosts, tests): key.pem (0600), cert.pem, cert-chain.pem, trust-bundle.pem; with --format pkcs12 also workload.p12')
    .requiredOption('--ca <dir>', 'intermediate directory from `causeway ca intermediate`')
    .requiredOption('--spiffe-id <id>', 'spiffe://<td>/ns/<namespace>/sa/<service-account>')
    .requiredOption('--out <dir>', 'directory to write')
    .option('--ttl <duration>', 'validity', '24h')
    .option('--key-type <type>', `${KeyTypes.join(' | ')}`, 'ec-p256')
    .option('--common-name <cn>', 'subject CN, for tools that key on it (e.g. an etcd user)')
    .option('--force', 'replace an existing key in --out')
    .option('--format <format>', 'pem, or pkcs12: also workload.p12 (0600) holding the key, the chain and the trust bundle, for JVM and .NET workloads', 'pem')
    .option('--password-file <file>', 'with --format pkcs12: the keystore password (first line); default: generated and written to workload.p12.password (0600)')
    .action(async (flags: { ca: string; spiffeId: string; out: string; ttl: string; keyType: string; commonName?: string; force?: boolean; format: string; passwordFile?: string }) => {
      try {
        parseSpiffeId(flags.spiffeId);
      } catch (error) {
        throw new UsageError(`--spiffe-id: ${(error as Error).message}`);
      }
      if (flags.format !== 'pem' && flags.format !== 'pkcs12') throw new UsageError(`--format must be pem or pkcs12 (got "${flags.format}")`);
      if (flags.passwordFile !== undefined && flags.format !== 'pkcs12') throw new UsageError('--password-file goes with --format pkcs12');
      const password = flags.passwordFile === undefined ? undefined : pkcs12Password(await readFlagFile('password-file', flags.passwordFile), flags.passwordFile);
      const keyType = keyTypeFlag(flags.keyType);
      const ttlSeconds = ttlFlag('ttl', flags.ttl);
      await refuseOverwrite(flags.out, CaFiles.workloadKey, flags.force);
      const intermediate = await loadIntermediateCa(flags.ca);
      const cert = await intermediate.issue({ spiffeId: flags.spiffeId, ttlSeconds, ...(keyType ? { keyType } : {}), ...(flags.commonName ? { commonName: flags.commonName } : {}) }).catch((error: unknown) => {
        if (error instanceof CaError && error.code === CaErrorCodes.ttlAboveMaximum) throw new UsageError(`--ttl ${flags.ttl}: ${error.message}`);
        throw error;
      });
      const files = await writeWorkloadCertificate(cert, flags.out);
      print(`${cert.spiffeId}: ${files.certChainFile} (key ${files.keyFile}, mode 0600), valid until ${cert.notAfter.toISOString()}`);
      if (flags.format === 'pkcs12') {
        const p12 = await writeWorkloadPkcs12(cert, flags.out, password);
        print(`PKCS#12 keystore ${p12.pkcs12File} (mode 0600; alias "workload", roots as trusted entries), password ${p12.passwordFile ? `in ${p12.passwordFile} (mode 0600)` : `from ${flags.passwordFile}`}`);
      }
    });

  ca.command('inspect')
    .description('show subject, SPIFFE ID, SANs, key, validity and issuers of a PEM file; with --bundle, whether its chain verifies')
    .argument('<file>', 'PEM certificate(s): a cert-chain.pem, a cert.pem or a trust bundle')
    .option('--bundle <file>', 'trust bundle to verify the chain against')
    .option('--json', 'machine-readable output')
    .action(async (file: string, flags: { bundle?: string; json?: boolean }) => {
      const report = inspectCertificates(await readFlagFile('file', file), flags.bundle === undefined ? undefined : await readFlagFile('bundle', flags.bundle));
      print(flags.json ? JSON.stringify({ file, ...report }, null, 2) : formatInspection(report));
      if (report.verification && !report.verification.ok) throw new CaError(CaErrorCodes.certificateInvalid, `${file} does not verify against ${flags.bundle}`);
    });

  ca.command('bundle')
    .description('write a trust bundle holding several roots (root rotation: old + new)')
    .requiredOption('--add <files...>', 'root certificate PEM files (repeatable)')
    .requiredOption('--out <file>', 'bundle file to write')
    .action(async (flags: { add: string[]; out: string }) => {
      const pems = await Promise.all(flags.add.map((f) => readFlagFile('add', f)));
      const bundle = buildTrustBundle(pems);
      await writeFile(flags.out, bundle);
      print(`${flags.out}: ${bundle.match(/BEGIN CERTIFICATE/g)?.length ?? 0} root(s)`);
    });

  ca.command('token')
    .description("mint a join token for one workload identity's first certificate, signed by the cluster's intermediate")
    .option('--ca <dir>', "the cluster's intermediate directory (the controller's caDir); default $CAUSEWAY_CA_DIR")
    .option('--cluster <name>', "the cluster whose signing service accepts it (must match the intermediate's)")
    .requiredOption('--ns <namespace>', 'namespace of the identity')
    .requiredOption('--sa <serviceAccount>', 'service account of the identity')
    .option('--ttl <duration>', 'validity', `${DEFAULT_JOIN_TOKEN_TTL_SECONDS / 3600}h`)
    .option('--out <file>', 'write the token to this file (mode 0600) instead of stdout')
    .action(async (flags: { ca?: string; cluster?: string; ns: string; sa: string; ttl: string; out?: string }) => {
      const caDir = flags.ca ?? process.env.CAUSEWAY_CA_DIR;
      if (!caDir) throw new UsageError("give the cluster's intermediate directory: --ca DIR (or set CAUSEWAY_CA_DIR)");
      const ttlSeconds = ttlFlag('ttl', flags.ttl);
      if (ttlSeconds > MAX_JOIN_TOKEN_TTL_SECONDS) throw new UsageError(`--ttl must be at most 7d for a join token (got "${flags.ttl}"); it only has to last until the first certificate`);
      const intermediate = await loadIntermediateCa(caDir);
      if (flags.cluster !== undefined && flags.cluster !== intermediate.cluster) {
        throw new UsageError(`--cluster ${flags.cluster} does not match the intermediate in ${caDir}, which is cluster ${intermediate.cluster}; use that cluster's CA directory`);
      }
      let spiffeId: string;
      try {
        spiffeId = formatSpiffeId({ trustDomain: intermediate.trustDomain, namespace: flags.ns, serviceAccount: flags.sa });
      } catch (error) {
        throw new UsageError(`--ns/--sa: ${(error as Error).message}`);
      }
      const token = mintJoinToken(intermediate, { spiffeId, ttlSeconds });
      if (flags.out) {
        await writeFile(flags.out, `${token}\n`, { mode: 0o600 });
        await chmod(flags.out, 0o600);
        print(`join token for ${spiffeId} (cluster ${intermediate.cluster}, ${flags.ttl}) written to ${flags.out}`);
      } else {
        print(token);
      }
    });
}
