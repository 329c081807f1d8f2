import type { ActivitySink } from "../services/activity-service.js";
import type { Caller } from "./principal.js";
import { tokenHash } from "./tokens.js";

/**
 * How long an API key's verified caller is reused: the longest a revoked key, a removed or disabled
 * member, or a changed role or entitlement keeps working on a server (every replica's cache runs
 * out within it, so no cross-replica invalidation is needed).
 */
export const CALLER_CACHE_TTL_MS = 500;

/** Entries kept at most; past it the oldest go first (a flood of distinct keys cannot grow it). */
const MAX_ENTRIES = 10_000;

/**
 * Verified callers of API keys for `CALLER_CACHE_TTL_MS`, keyed by the SHA-256 of the whole token
 * (never the key id alone: a wrong secret for a cached key id misses and is refused as ever). Only
 * successes are cached, so every refusal is still counted and recorded. It saves the three store
 * reads of each authenticated request (key, holder, entitlements) under load.
 *
 * On this server an IAM change (a key revoked, a member removed, disabled or given another role,
 * an entitlement granted or revoked: every `iam.*` event of the history) empties it at once
 * (`forgetOnIamChange`); other replicas see it when their entries run out.
 */
export class CallerCache {
  readonly #entries = new Map<string, { caller: Caller; expiresAt: number }>();

  constructor(private readonly ttlMs = CALLER_CACHE_TTL_MS) {}

  /** The caller `token` was verified as within the TTL, or undefined. */
  get(token: string, now = Date.now()): Caller | undefined {
    const key = tokenHash(token);
    const entry = this.#entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= now) {
      this.#entries.delete(key);
      return undefined;
    }
    return entry.caller;
  }

  /** The activity sink that empties the cache whenever an `iam.*` event is recorded. */
  readonly forgetOnIamChange: ActivitySink = async (_trx, event) => {
    if (event.action.startsWith("iam.")) this.#entries.clear();
  };

  /**
   * Remembers that `token` was just verified as `caller`; never past `notAfterMs` (the key's own
   * expiry), so an expiring key is not honoured a moment longer from the cache.
   */
  set(token: string, caller: Caller, now = Date.now(), notAfterMs = Infinity): void {
    if (this.#entries.size >= MAX_ENTRIES) {
      const oldest = this.#entries.keys().next();
      if (!oldest.done) this.#entries.delete(oldest.value);
    }
    this.#entries.set(tokenHash(token), {
      // A frozen copy, handed to every request within the TTL: no handler can change the next
      // request's caller (a write throws), and no request pays for a copy (3 µs each).
      caller: deepFreeze(structuredClone(caller)),
      expiresAt: Math.min(now + this.ttlMs, notAfterMs),
    });
  }
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
