import {
  ActivityQuery,
  GENESIS_HASH,
  activityHashInput,
  type ActivityEvent,
  type Actor,
  type Page,
  type Target,
} from "@shells/contract";
import { sql, type Kysely, type Transaction } from "kysely";
import { createHash } from "node:crypto";
import { z } from "zod";
import { newId, nowIso } from "../ids.js";
import { ActivityTree } from "../audit/activity-tree.js";
import { activityEventOf } from "../store/activity-rows.js";
import { compiledOnce, type QueryParam } from "../store/compiled-query.js";
import { lockForTransaction } from "../store/dialect.js";
import type { ActivityTable, Database } from "../store/schema.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { decodeCursor, encodeCursor } from "./cursor.js";

/** What a caller records; the service adds id, sequence, time and the chain hashes. */
export interface ActivityInput {
  orgId: string;
  actor: Actor;
  action: string;
  target: Target | null;
  outcome: ActivityEvent["outcome"];
  details?: Record<string, unknown>;
}

/**
 * Work an appended event triggers that must commit or roll back with it: it runs inside the
 * event's own transaction (the webhook outbox writes its deliveries this way, so an event is never
 * recorded without them, nor they without it).
 */
export type ActivitySink = (trx: Transaction<Database>, event: ActivityEvent) => Promise<void>;

/** The org's last event: the head of its chain, which the next event links to. */
const chainHead = compiledOnce((db: Kysely<Database>, param: QueryParam<"orgId">) =>
  db
    .selectFrom("activity")
    .select(["seq", "hash"])
    .where("org_id", "=", param("orgId"))
    .orderBy("seq", "desc")
    .limit(1),
);

/** An event's row, every column of `activity` bound. */
const insertEvent = compiledOnce((db: Kysely<Database>, param: QueryParam<keyof ActivityTable>) =>
  db.insertInto("activity").values({
    id: param("id"),
    org_id: param("org_id"),
    seq: param("seq") as unknown as number,
    actor: param("actor"),
    actor_id: param("actor_id"),
    action: param("action"),
    target_type: param("target_type"),
    target_id: param("target_id"),
    outcome: param("outcome") as ActivityTable["outcome"],
    details: param("details"),
    time: param("time"),
    prev_hash: param("prev_hash"),
    hash: param("hash"),
  }),
);

/** Org id under which events with no attributable org (an unknown API key) are chained. */
export const SYSTEM_ORG = "_system";

/**
 * The append-only activity history. Each org's events form a hash chain: an event's hash covers
 * its fields and the previous event's hash, so editing, removing or inserting a row is detectable
 * by re-computing the chain. Each event is also a leaf of the org's Merkle tree, which signed
 * checkpoints cover (see `audit/`).
 */
export class ActivityService {
  readonly #sinks: ActivitySink[] = [];
  readonly #tree: ActivityTree;

  constructor(private readonly db: Kysely<Database>) {
    this.#tree = new ActivityTree(db);
  }

  /** Runs `sink` for every event appended from now on, in the event's transaction. */
  addSink(sink: ActivitySink): void {
    this.#sinks.push(sink);
  }

  /** Appends an event that `caller` caused, in the caller's org and as the caller's act. */
  recordFor(
    caller: Caller,
    action: string,
    target: { type: string; id: string },
    details: Record<string, unknown>,
    outcome: "success" | "denied" = "success",
  ): Promise<ActivityEvent> {
    return this.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action,
      target,
      outcome,
      details,
    });
  }

  /**
   * Appends one event to its org's chain. Appends to one org's chain are serialised across every
   * server on the store (the org's chain lock, held to commit), so each event links to the one
   * committed before it: no forks, no gaps; the unique (org, seq) key refuses anything else.
   * `alongside`: the writes the event reports (a shell's log line), made first in the event's
   * transaction, so they and the event commit together or not at all.
   */
  async record(
    input: ActivityInput,
    alongside?: (trx: Transaction<Database>) => Promise<void>,
  ): Promise<ActivityEvent> {
    return this.db.transaction().execute(async (trx) => {
      await alongside?.(trx);
      await lockForTransaction(trx, `activity:${input.orgId}`);
      const [last] = await chainHead(this.db, { orgId: input.orgId }, trx);
      const fields = {
        seq: (last?.seq ?? 0) + 1,
        orgId: input.orgId,
        actor: input.actor,
        action: input.action,
        target: input.target,
        outcome: input.outcome,
        details: input.details ?? {},
        time: nowIso(),
        prevHash: last?.hash ?? GENESIS_HASH,
      };
      const event: ActivityEvent = {
        id: newId("ev", 14),
        ...fields,
        // Node's synchronous SHA-256: the same digest as the contract's WebCrypto one, without a
        // thread-pool round trip inside the chain's transaction.
        hash: createHash("sha256").update(activityHashInput(fields)).digest("hex"),
      };
      const row: ActivityTable = {
        id: event.id,
        org_id: event.orgId,
        seq: event.seq,
        actor: JSON.stringify(event.actor),
        actor_id: event.actor.id,
        action: event.action,
        target_type: event.target?.type ?? null,
        target_id: event.target?.id ?? null,
        outcome: event.outcome,
        details: JSON.stringify(event.details),
        time: event.time,
        prev_hash: event.prevHash,
        hash: event.hash,
      };
      await insertEvent(this.db, row, trx);
      // The event's leaf in the org's Merkle tree, committed with it (see ActivityTree).
      await this.#tree.append(trx, event);
      for (const sink of this.#sinks) await sink(trx, event);
      return event;
    });
  }

  /** Every event of the org about any of `targetIds`, in chain order (bounded). */
  async forTargets(orgId: string, targetIds: string[], limit = 5000): Promise<ActivityEvent[]> {
    const rows = await this.db
      .selectFrom("activity")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("target_id", "in", targetIds)
      .orderBy("seq")
      .limit(limit)
      .execute();
    return rows.map(activityEventOf);
  }

  /** A page of the org's events, filtered. */
  async list(orgId: string, query: z.output<typeof ActivityQuery>): Promise<Page<ActivityEvent>> {
    let q = this.db.selectFrom("activity").selectAll().where("org_id", "=", orgId);
    if (query.shell) q = q.where("target_type", "=", "shell").where("target_id", "=", query.shell);
    if (query.actor) q = q.where("actor_id", "=", query.actor);
    if (query.action) {
      q = query.action.endsWith(".")
        ? q.where(sql<string>`substr(action, 1, ${query.action.length})`, "=", query.action)
        : q.where("action", "=", query.action);
    }
    if (query.cursor) {
      const { seq } = decodeCursor(query.cursor, z.strictObject({ seq: z.int().min(0) }));
      q = q.where("seq", query.order === "asc" ? ">" : "<", seq);
    }
    const rows = await q
      .orderBy("seq", query.order)
      .limit(query.limit + 1)
      .execute();
    const items = rows.slice(0, query.limit).map(activityEventOf);
    const last = items.at(-1);
    return {
      items,
      nextCursor: rows.length > query.limit && last ? encodeCursor({ seq: last.seq }) : null,
    };
  }
}
