import { randomUUID } from 'node:crypto';
import type { Logger } from '../mesh/index.js';

/**
 * `x-request-id`, as Envoy and Istio keep it (proxy/README.md "Access log"): the caller's
 * sidecar gives every outbound HTTP request one, so both sides' access-log lines and the
 * app behind the server sidecar share it. An app's own id is kept when it is acceptable.
 */

export const REQUEST_ID_HEADER = 'x-request-id';

const MAX_REQUEST_ID_LENGTH = 128;

/** Visible ASCII (0x21–0x7E), 1 to 128 characters: what the sidecar forwards as the app sent it. */
export function acceptableRequestId(value: string): boolean {
  if (value.length === 0 || value.length > MAX_REQUEST_ID_LENGTH) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

/** Hands out the ids of outbound requests (`sidecar.requestId.generate`). */
export class RequestIdSource {
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /**
   * The id to send on in place of the app's `x-request-id`: undefined when the app's
   * stands, a new UUID v4 when it sent none or one that is not acceptable.
   */
  replacement(value: string | undefined): string | undefined {
    if (value === undefined) return randomUUID();
    if (acceptableRequestId(value)) return undefined;
    this.#log.debug({ requestId: value.slice(0, 2 * MAX_REQUEST_ID_LENGTH) }, 'x-request-id from the app is not 1-128 visible ASCII characters; replaced by a new one');
    return randomUUID();
  }
}
