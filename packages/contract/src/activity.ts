import { z } from "zod";

/** Who did something. `anonymous` is a caller whose credential could not be verified. */
export const Actor = z.strictObject({
  type: z.enum(["user", "agent", "system", "anonymous"]),
  id: z.string(),
  /** API key the actor used, when it used one. */
  keyId: z.string().optional(),
});
export type Actor = z.infer<typeof Actor>;

/** What an event is about. */
export const Target = z.strictObject({
  type: z.string(),
  id: z.string(),
});
export type Target = z.infer<typeof Target>;

/** One entry of the append-only activity history. */
export const ActivityEvent = z.strictObject({
  id: z.string(),
  /** Position in the org's chain, starting at 1. */
  seq: z.int(),
  orgId: z.string(),
  actor: Actor,
  /** Dotted verb, e.g. `shell.create`, `shell.exec`, `shell.action.snapshot`, `auth.failed`. */
  action: z.string(),
  target: Target.nullable(),
  outcome: z.enum(["success", "failure", "denied"]),
  /** Structured context: never secret material. */
  details: z.record(z.string(), z.unknown()),
  time: z.iso.datetime(),
  /** Hash of the previous event in the org's chain (64 zeros for the first). */
  prevHash: z.string(),
  /** SHA-256 over this event's fields and `prevHash`. */
  hash: z.string(),
});
export type ActivityEvent = z.infer<typeof ActivityEvent>;

/** The `prevHash` of the first event in a chain. */
export const GENESIS_HASH = "0".repeat(64);

/** JSON with object keys sorted at every depth, so equal values hash equally. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

/** The fields an event's hash covers: everything but `id` and `hash` itself. */
export type HashedFields = Omit<ActivityEvent, "id" | "hash">;

/**
 * The text an event's hash is taken over: its hashed fields as canonical JSON. A server may hash it
 * with its platform's synchronous SHA-256; the result is the same as `activityEventHash`.
 */
export function activityHashInput(event: HashedFields): string {
  const fields: HashedFields = {
    seq: event.seq,
    orgId: event.orgId,
    actor: event.actor,
    action: event.action,
    target: event.target,
    outcome: event.outcome,
    details: event.details,
    time: event.time,
    prevHash: event.prevHash,
  };
  return canonicalJson(fields);
}

/**
 * SHA-256 (hex) of an event's hashed fields. Uses WebCrypto so servers, the SDK and browsers
 * compute the same value.
 */
export async function activityEventHash(event: HashedFields): Promise<string> {
  const bytes = new TextEncoder().encode(activityHashInput(event));
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The last event a verification saw: record its hash elsewhere to anchor the chain. */
export interface ChainHead {
  eventId: string;
  seq: number;
  time: string;
  hash: string;
}

/**
 * What a chain verification establishes, and what it cannot without an external record of the head
 * (an attacker with write access to the store can drop the newest events, or edit one and recompute
 * every hash after it, and the chain still links).
 */
export const CHAIN_VERIFICATION_SCOPE = {
  proves:
    "every event's hash matches its contents and links to the previous event, from the first event to the last one seen",
  cannotProve:
    "that no events were removed from the end, or that the chain was not rewritten and re-hashed after an edit; compare the head hash with one recorded elsewhere (verify --expect-head <hash>) to detect that",
} as const;

/** Outcome of re-computing a chain. */
export type ChainVerification = (
  | { ok: true; checked: number; head: ChainHead | null }
  | {
      ok: false;
      checked: number;
      /** The first event that does not hold; null when every event held but the expected head is missing. */
      eventId: string | null;
      seq: number | null;
      reason: string;
      head: ChainHead | null;
    }
) & {
  /** The head the caller recorded earlier, when one was given, and whether the chain still has it. */
  expectedHead?: { hash: string; found: boolean };
  proves: string;
  cannotProve: string;
};

/** Options of `verifyActivityChain`. */
export interface ChainVerificationOptions {
  /**
   * A head hash recorded earlier, outside the store: verification fails unless the chain still
   * contains an event with this hash. Detects a truncated tail and a rewritten chain, as of then.
   */
  expectHead?: string;
}

/**
 * Re-computes a chain of events given in `seq` order, starting at seq 1, and names the first event
 * that does not hold: a hash that does not match its fields, a link to the wrong predecessor, or a
 * gap in the sequence. Returns the head it reached, so the caller can record it elsewhere; given
 * `expectHead`, also fails when no event in the chain has that hash.
 */
export async function verifyActivityChain(
  events: Iterable<ActivityEvent> | AsyncIterable<ActivityEvent>,
  options: ChainVerificationOptions = {},
): Promise<ChainVerification> {
  const expected = options.expectHead?.trim().toLowerCase();
  let prevHash = GENESIS_HASH;
  let expectedSeq = 1;
  let checked = 0;
  let head: ChainHead | null = null;
  let foundExpected = false;
  const expectation = () =>
    expected === undefined ? {} : { expectedHead: { hash: expected, found: foundExpected } };
  for await (const event of events) {
    const fail = (reason: string): ChainVerification => ({
      ok: false,
      checked,
      eventId: event.id,
      seq: event.seq,
      reason,
      head,
      ...expectation(),
      ...CHAIN_VERIFICATION_SCOPE,
    });
    if (event.seq !== expectedSeq)
      return fail(
        `expected seq ${expectedSeq}, found ${event.seq} (an event was removed or inserted)`,
      );
    if (event.prevHash !== prevHash) return fail("prevHash does not link to the previous event");
    if ((await activityEventHash(event)) !== event.hash)
      return fail("hash does not match the event's contents");
    prevHash = event.hash;
    expectedSeq += 1;
    checked += 1;
    head = { eventId: event.id, seq: event.seq, time: event.time, hash: event.hash };
    if (event.hash === expected) foundExpected = true;
  }
  if (expected !== undefined && !foundExpected) {
    return {
      ok: false,
      checked,
      eventId: null,
      seq: null,
      reason: `the recorded head ${expected} is not in the chain: events were removed from the end, or the chain was rewritten`,
      head,
      ...expectation(),
      ...CHAIN_VERIFICATION_SCOPE,
    };
  }
  return { ok: true, checked, head, ...expectation(), ...CHAIN_VERIFICATION_SCOPE };
}

/** Query of `GET /api/v1/activity`. */
export const ActivityQuery = z.strictObject({
  shell: z.string().max(64).optional(),
  actor: z.string().max(128).optional(),
  /** Exact action, or a prefix ending in `.` (`shell.action.`). */
  action: z.string().max(128).optional(),
  /** `asc` walks the chain from its start (what `audit verify` does); default `desc`, newest first. */
  order: z.enum(["asc", "desc"]).default("desc"),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().max(512).optional(),
});
export type ActivityQuery = z.input<typeof ActivityQuery>;
