import type { PeerCertificate } from 'node:tls';
import { credentials, type ChannelOptions } from '@grpc/grpc-js';
import { spiffeIdFromSubjectAltName } from '../ca/index.js';
import { controllerSni, fallbackControllerServerName, parseSpiffeId } from '../mesh/index.js';

/** PEM material of one TLS identity plus the roots it trusts. */
export interface TlsIdentity {
  /** PEM private key. */
  readonly key: string | Buffer;
  /** PEM certificates, leaf first, then the issuing intermediate. */
  readonly certChain: string | Buffer;
  /** PEM root certificates (several during root rotation). */
  readonly trustBundle: string | Buffer;
}

/** The single SPIFFE ID of an X.509-SVID, or undefined when there is not exactly one. */
export function spiffeIdOfCertificate(cert: Pick<PeerCertificate, 'subjectaltname'> | undefined): string | undefined {
  return spiffeIdFromSubjectAltName(cert?.subjectaltname);
}

/** How a node reaches its controller over mTLS. */
export interface ControllerConnection {
  /** `host:port` of the controller (15012), or of a gateway that routes `serverName` to it. */
  readonly address: string;
  /**
   * The node's workload key, certificate chain and trust bundle. A function is called
   * on every (re)connect, so a renewed certificate is picked up without restarting.
   */
  readonly tls: TlsIdentity | (() => TlsIdentity);
  /** The SPIFFE ID the controller must present (`controllerIdentity(trustDomain)` from mesh/). */
  readonly expectedServerId: string;
  /** TLS SNI; default `controllerSni(cluster, trustDomain)` when `cluster` is known (what gateways route on). */
  readonly serverName?: string;
  /** The controller's cluster, for the default SNI (the DiscoveryClient takes it from its Hello). */
  readonly cluster?: string;
  /** Reconnect backoff: exponential from `initialMs` to `maxMs` with full jitter (default 100 ms → 5 s). */
  readonly backoff?: { readonly initialMs?: number; readonly maxMs?: number };
}

/** The channel credentials and options of a node's connection to its controller: mTLS, the controller checked by SPIFFE ID. */
export function controllerChannel(options: ControllerConnection): { credentials: ReturnType<typeof credentials.createSsl>; options: ChannelOptions } {
  const tls = typeof options.tls === 'function' ? options.tls() : options.tls;
  const asBuffer = (v: string | Buffer) => (typeof v === 'string' ? Buffer.from(v) : v);
  const creds = credentials.createSsl(asBuffer(tls.trustBundle), asBuffer(tls.key), asBuffer(tls.certChain), {
    checkServerIdentity: (_host: string, cert: PeerCertificate) => {
      const id = spiffeIdOfCertificate(cert);
      if (id !== options.expectedServerId) {
        return new Error(`controller presented identity ${id ?? '(none)'}, expected ${options.expectedServerId}`);
      }
      return undefined;
    },
  });
  const channelOptions: ChannelOptions = {
    'grpc.max_receive_message_length': 256 * 1024 * 1024,
    'grpc.keepalive_time_ms': 10_000,
    'grpc.keepalive_timeout_ms': 5_000,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.initial_reconnect_backoff_ms': options.backoff?.initialMs ?? 100,
    'grpc.max_reconnect_backoff_ms': options.backoff?.maxMs ?? 5_000,
  };
  // The controller is verified by SPIFFE ID, so SNI only matters to gateways. Without a
  // name, grpc-js would send the address's IP as SNI, which RFC 6066 forbids (DEP0123).
  const serverName =
    options.serverName ?? (options.cluster ? controllerSni(options.cluster, parseSpiffeId(options.expectedServerId).trustDomain) : fallbackControllerServerName(options.address));
  if (serverName) channelOptions['grpc.ssl_target_name_override'] = serverName;
  return { credentials: creds, options: channelOptions };
}
