import type { FastifyBaseLogger } from "fastify";
import type { ActivityService } from "../services/activity-service.js";
import { WindowedLog, type WindowSpan } from "../services/windowed-log.js";
import type { RequestOrigin } from "./authenticate.js";

/** One refused authentication, before it is written to the activity history. */
export interface AuthFailure {
  /** The chain it belongs to: the org a known key or session names, else the system org. */
  orgId: string;
  /** The API key the token named, when it named one we know. */
  keyId?: string | undefined;
  origin: RequestOrigin;
  /** Why it was refused; never credential material. */
  reason: string;
}

/** How refusals are aggregated. */
export interface AuthFailureLogOptions {
  /** Length of an aggregation window, ms. */
  windowMs: number;
  /** Most (org, key, address, reason) windows open at once; further sources share one window. */
  maxOpenWindows?: number;
  logger: FastifyBaseLogger;
}

const OVERFLOW_KEY = "*";

/**
 * Writes refused authentications to the activity history in bounded, aggregated form. Anyone can
 * send a bad token, so one row per try would let an anonymous caller grow an org's hash chain (and
 * the store's write lock) without limit. Instead the first refusal per (org, key, address, reason)
 * in a window is recorded at once as an `auth.failed` event with `details.count: 1`; the repeats in
 * that window are counted and written as one more `auth.failed` event with `details.count` when the
 * window closes (or on `close()`). The counts of all events add up to the number of refusals.
 */
export class AuthFailureLog {
  readonly #log: WindowedLog<AuthFailure>;

  constructor(
    private readonly activity: ActivityService,
    options: AuthFailureLogOptions,
  ) {
    this.#log = new WindowedLog({
      ...options,
      what: "refused authentications",
      keyOf: (failure) =>
        JSON.stringify([failure.orgId, failure.keyId ?? "", failure.origin.ip, failure.reason]),
      // Too many distinct sources at once (many addresses): they share one window so memory and
      // rows stay bounded; the first of them names its own address and reason.
      overflowKey: () => OVERFLOW_KEY,
      write: (first, last, count, _sum, span) => this.#write(first, last.origin, count, span),
    });
  }

  /** Records one refusal: written now when it opens a window, else counted into the window. */
  record(failure: AuthFailure): Promise<void> {
    return this.#log.record(failure);
  }

  /** Writes every open window's count now (at shutdown). */
  close(): Promise<void> {
    return this.#log.close();
  }

  async #write(
    failure: AuthFailure,
    origin: RequestOrigin,
    count: number,
    span: WindowSpan | undefined,
  ): Promise<void> {
    await this.activity.record({
      orgId: failure.orgId,
      actor: {
        type: "anonymous",
        id: "anonymous",
        ...(failure.keyId ? { keyId: failure.keyId } : {}),
      },
      action: "auth.failed",
      target: null,
      outcome: "denied",
      details: {
        reason: failure.reason,
        method: origin.method,
        route: origin.route,
        ip: origin.ip,
        count,
        ...span,
      },
    });
  }
}
