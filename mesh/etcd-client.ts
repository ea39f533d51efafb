import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions } from 'etcd3';
import type { EtcdConnection } from './config/schemas.js';
import { CausewayError } from './errors.js';

/**
 * Opens an etcd3 client for a validated {@link EtcdConnection}. With TLS files, the
 * client certificate's CN is the etcd user (DESIGN.md "etcd security").
 * etcd3 1.1.2 does not handle compaction on watch resume: callers re-list on `error`.
 */
export function connectEtcd(connection: EtcdConnection): Etcd3 {
  const options: IOptions = { hosts: [...connection.endpoints], dialTimeout: connection.dialTimeoutMs };
  if (connection.tls) {
    try {
      options.credentials = {
        rootCertificate: readFileSync(connection.tls.ca),
        ...(connection.tls.cert ? { certChain: readFileSync(connection.tls.cert) } : {}),
        ...(connection.tls.key ? { privateKey: readFileSync(connection.tls.key) } : {}),
      };
    } catch (error) {
      throw new CausewayError('CW_ETCD_TLS_UNREADABLE', `cannot read etcd TLS files (${(error as Error).message}); check etcd.tls paths`, { cause: error });
    }
  }
  if (connection.username) options.auth = { username: connection.username, password: connection.password ?? '' };
  return new Etcd3(options);
}
