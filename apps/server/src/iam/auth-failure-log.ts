import type { FastifyBaseLogger } from "fastify";
import type { ActivityService } from "../services/activity-service.js";
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

interface OpenWindow {
  first: AuthFailure;
  /** Refusals after the first, not yet written. */
  repeats: number;
  last: RequestOrigin;
  openedAt: string;
  timer: NodeJS.Timeout;
}

const DEFAULT_MAX_OPEN_WINDOWS = 10_000;
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
  readonly #windows = new Map<string, OpenWindow>();

  constructor(
    private readonly activity: ActivityService,
    private readonly options: AuthFailureLogOptions,
  ) {}

  /** Records one refusal: written now when it opens a window, else counted into the window. */
  async record(failure: AuthFailure): Promise<void> {
    let key = JSON.stringify([
      failure.orgId,
      failure.keyId ?? "",
      failure.origin.ip,
      failure.reason,
    ]);
    if (
      !this.#windows.has(key) &&
      this.#windows.size >= (this.options.maxOpenWindows ?? DEFAULT_MAX_OPEN_WINDOWS)
    ) {
      // Too many distinct sources at once (many addresses): they share one window so memory and
      // rows stay bounded; the first of them names its own address and reason.
      key = OVERFLOW_KEY;
    }
    const open = this.#windows.get(key);
    if (open) {
      open.repeats += 1;
      open.last = failure.origin;
      return;
    }
    const timer = setTimeout(() => {
      this.#closeWindow(key).catch((error: unknown) =>
        this.options.logger.error({ err: error }, "could not record refused authentications"),
      );
    }, this.options.windowMs);
    timer.unref();
    this.#windows.set(key, {
      first: failure,
      repeats: 0,
      last: failure.origin,
      openedAt: new Date().toISOString(),
      timer,
    });
    await this.#write(failure, failure.origin, 1);
  }

  /** Writes every open window's count now (at shutdown). */
  async close(): Promise<void> {
    for (const key of [...this.#windows.keys()]) await this.#closeWindow(key);
  }

  async #closeWindow(key: string): Promise<void> {
    const open = this.#windows.get(key);
    if (!open) return;
    clearTimeout(open.timer);
    this.#windows.delete(key);
    if (open.repeats > 0)
      await this.#write(open.first, open.last, open.repeats, {
        since: open.openedAt,
        until: new Date().toISOString(),
      });
  }

  async #write(
    failure: AuthFailure,
    origin: RequestOrigin,
    count: number,
    span: Record<string, string> = {},
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
