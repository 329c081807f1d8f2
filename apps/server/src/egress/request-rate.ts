/**
 * The request rate of one shell's egress proxy, as a token bucket: it holds up to `burst` tokens,
 * refills at `perSecond`, and every request, tunnel, redirected connection and DNS question takes
 * one; with none left the request is refused (`rate_limited`), and a loop in the shell cannot make
 * the proxy resolve, dial and log at whatever rate the shell's CPU allows.
 *
 * Written here rather than taken from a library: the rate limiters installed serve HTTP routes
 * (`@fastify/rate-limit` hooks into Fastify's request lifecycle, `express-rate-limit` is Express
 * middleware) with keyed windows in a store, while the proxy needs one in-memory counter per shell,
 * asked before decisions that are not HTTP requests at all (DNS questions, TLS redirects).
 */
export class RequestRate {
  readonly #perSecond: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;

  /** `now` is a monotonic clock in ms (`performance.now` by default). */
  constructor(perSecond: number, burst = perSecond, now: () => number = () => performance.now()) {
    this.#perSecond = perSecond;
    this.#burst = Math.max(1, burst);
    this.#now = now;
    this.#tokens = this.#burst;
    this.#at = now();
  }

  /** Takes one token; false when there is none (the request is over the rate). */
  take(): boolean {
    const now = this.#now();
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + ((now - this.#at) / 1000) * this.#perSecond,
    );
    this.#at = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
