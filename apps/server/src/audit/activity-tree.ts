import {
  MerkleTreeReader,
  activityLeafHash,
  leftSiblingsOf,
  subtreesCompletedBy,
  type ActivityEvent,
} from "@shells/contract";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import { activityEventOf } from "../store/activity-rows.js";
import { compiledOnce, type QueryParam } from "../store/compiled-query.js";
import type { Database } from "../store/schema.js";
import { sha256 } from "./sha256.js";

/** Events read per query while filling in leaves of events recorded before the tree existed. */
const CATCH_UP_BATCH = 1000;

/** The org's last leaf. */
const lastLeaf = compiledOnce((db: Kysely<Database>, param: QueryParam<"orgId">) =>
  db
    .selectFrom("activity_tree")
    .select("idx")
    .where("org_id", "=", param("orgId"))
    .where("level", "=", 0)
    .orderBy("idx", "desc")
    .limit(1),
);

/** One complete subtree's hash. */
const subtreeHash = compiledOnce(
  (db: Kysely<Database>, param: QueryParam<"orgId" | "level" | "index">) =>
    db
      .selectFrom("activity_tree")
      .select("hash")
      .where("org_id", "=", param("orgId"))
      .where("level", "=", param("level") as unknown as number)
      .where("idx", "=", param("index") as unknown as number),
);

/**
 * Each org's activity history as an RFC 6962 Merkle tree, stored as its complete subtrees
 * (`activity_tree`). A leaf is written in the same transaction as its event, from the event as it
 * was recorded, and rows are only ever added: a later edit of an activity row, a deleted row or a
 * cut tail leaves the tree as it was, so proofs and checkpoints keep attesting what was recorded
 * and any verifier that re-hashes the history sees the difference.
 */
export class ActivityTree {
  constructor(private readonly db: Kysely<Database>) {}

  /** Leaves the org's tree holds. */
  async size(orgId: string, db: Kysely<Database> = this.db): Promise<number> {
    const [last] = await lastLeaf(this.db, { orgId }, db);
    return last ? last.idx + 1 : 0;
  }

  /**
   * Adds `event` as leaf `seq - 1`, inside the transaction `trx` that records it. Events recorded
   * before the tree existed are added first, in order. When the tree already holds that leaf (the
   * history was cut after the tree recorded it) the tree is left as it is (`kept`); when an earlier
   * event is missing from the history it stays behind (`behind`).
   */
  async append(
    trx: Kysely<Database>,
    event: ActivityEvent,
  ): Promise<"appended" | "kept" | "behind"> {
    const size = await this.size(event.orgId, trx);
    const index = event.seq - 1;
    if (size > index) return "kept";
    if (size < index && !(await this.#catchUp(trx, event.orgId, size, index))) return "behind";
    // Hashed as a reader will see it: the stored JSON, not the values the caller passed in.
    const stored = JSON.parse(JSON.stringify(event)) as ActivityEvent;
    await this.#add(trx, event.orgId, index, activityLeafHash(sha256, stored));
    return "appended";
  }

  /** Leaf hashes from leaf `from` on, at most `limit`. */
  async leaves(orgId: string, from: number, limit: number): Promise<Uint8Array[]> {
    const rows = await this.db
      .selectFrom("activity_tree")
      .select("hash")
      .where("org_id", "=", orgId)
      .where("level", "=", 0)
      .where("idx", ">=", from)
      .orderBy("idx")
      .limit(limit)
      .execute();
    return rows.map((row) => row.hash);
  }

  /**
   * A reader of the org's roots and proofs, for tree sizes up to what the tree holds now. Each
   * stored subtree it needs is one primary-key lookup.
   */
  reader(orgId: string, db: Kysely<Database> = this.db): MerkleTreeReader {
    return new MerkleTreeReader(sha256, async (level, index) => {
      const row = await db
        .selectFrom("activity_tree")
        .select("hash")
        .where("org_id", "=", orgId)
        .where("level", "=", level)
        .where("idx", "=", index)
        .executeTakeFirst();
      if (!row)
        throw new AppError(
          "audit_tree_damaged",
          `The stored activity tree lacks subtree (${level}, ${index}): the store was altered outside the server.`,
          { level, index },
        );
      return row.hash;
    });
  }

  async #add(trx: Kysely<Database>, orgId: string, index: number, leafHash: Uint8Array) {
    const siblings: Uint8Array[] = [];
    for (const at of leftSiblingsOf(index)) {
      const [row] = await subtreeHash(this.db, { orgId, level: at.level, index: at.index }, trx);
      if (!row)
        throw new Error(`activity tree of ${orgId} lacks subtree (${at.level}, ${at.index})`);
      siblings.push(row.hash);
    }
    const nodes = subtreesCompletedBy(sha256, index, leafHash, siblings);
    await trx
      .insertInto("activity_tree")
      .values(nodes.map((n) => ({ org_id: orgId, level: n.level, idx: n.index, hash: n.hash })))
      .execute();
  }

  /**
   * Adds leaves `from` … `to - 1` from the stored events (recorded before the tree existed).
   * Answers false, adding nothing more, at a missing event: the tree then stays behind the history
   * (checkpoints say so) rather than stop the history from recording.
   */
  async #catchUp(trx: Kysely<Database>, orgId: string, from: number, to: number) {
    for (let next = from; next < to;) {
      const rows = await trx
        .selectFrom("activity")
        .selectAll()
        .where("org_id", "=", orgId)
        .where("seq", ">", next)
        .where("seq", "<=", Math.min(to, next + CATCH_UP_BATCH))
        .orderBy("seq")
        .execute();
      if (rows[0]?.seq !== next + 1) return false;
      for (const row of rows) {
        if (row.seq !== next + 1) return false;
        await this.#add(trx, orgId, next, activityLeafHash(sha256, activityEventOf(row)));
        next += 1;
      }
    }
    return true;
  }
}
