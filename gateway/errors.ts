import { CausewayError } from '../mesh/index.js';

/** Stable codes of the gateway's own errors (refusals are metric reasons, not errors). */
export const GatewayErrorCodes = {
  notListening: 'CW_GATEWAY_NOT_LISTENING',
  routesInvalid: 'CW_GATEWAY_ROUTES_INVALID',
  routesUnreadable: 'CW_GATEWAY_ROUTES_UNREADABLE',
  catalogUnavailable: 'CW_GATEWAY_CATALOG_UNAVAILABLE',
  workerFailed: 'CW_GATEWAY_WORKER_FAILED',
  relayUnavailable: 'CW_GATEWAY_RELAY_UNAVAILABLE',
} as const;

export class GatewayError extends CausewayError {}
