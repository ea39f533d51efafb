/**
 * Timer callbacks of the request exchanges (the HTTP/1.1 fast path's and HTTP/2's):
 * module functions with the exchange as argument, so that arming a timer makes no
 * closure per request.
 */

export interface RetryTimers {
  /** The route's timeout over all tries passed. */
  routeTimedOut(): void;
  /** The back-off before the next try passed. */
  retryNow(): void;
}

export function routeTimedOut(exchange: RetryTimers): void {
  exchange.routeTimedOut();
}

export function retryNow(exchange: RetryTimers): void {
  exchange.retryNow();
}
