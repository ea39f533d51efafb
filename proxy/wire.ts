/** What the sidecar puts on the wire for apps and peer sidecars to read (proxy/README.md). */

import { ProxyErrorCodes } from './errors.js';

/** The header the app reads to learn the caller's verified SPIFFE ID (any incoming copy is removed). */
export const PEER_IDENTITY_HEADER = 'x-causeway-peer-identity';
/** The caller's cluster (from its certificate's issuing intermediate); also removed when a caller sends it. */
export const PEER_CLUSTER_HEADER = 'x-causeway-peer-cluster';
/** `x-causeway-error` of a 503 the server sidecar sends when its app does not accept the connection (safe to retry anywhere). */
export const APP_UNAVAILABLE = ProxyErrorCodes.appUnavailable;
/** `x-causeway-error` of a 503 when the app took the request and closed without answering (retry only if idempotent). */
export const APP_RESET = ProxyErrorCodes.appReset;

/**
 * Idle keep-alive: servers (app-facing and inbound) keep connections longer than the
 * client side's pool holds them, so the side that closes an idle connection is the one
 * that would reuse it — which keeps the close-while-reusing race rare.
 */
export const IDLE_KEEPALIVE_MS = 120_000;
