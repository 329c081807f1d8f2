import { sql, type Kysely } from "kysely";
import { storeClockMs } from "./dialect.js";
import type { Database, LeaseTable } from "./schema.js";

/**
 * The `leases` table: which server runs each kind of background work. A lease is a row with its
 * holder and expiry, dated by the store's clock; one statement takes or renews it, so of several
 * servers trying at once exactly one holds it.
 */

/**
 * Takes the lease `name` for `holder` for `ttlMs` (or renews it, when `holder` has it) unless
 * another holder's lease is still running. Answers the lease as it now stands when `holder` holds
 * it, else undefined.
 */
export async function claimLease(
  db: Kysely<Database>,
  name: string,
  holder: string,
  ttlMs: number,
): Promise<LeaseTable | undefined> {
  const now = storeClockMs(db);
  return db
    .insertInto("leases")
    .values({ name, holder, acquired_at_ms: now, expires_at_ms: sql`${now} + ${ttlMs}` })
    .onConflict((oc) =>
      oc
        .column("name")
        .doUpdateSet({
          holder,
          // A renewal keeps when the holder took it; a takeover starts afresh.
          acquired_at_ms: sql`CASE WHEN leases.holder = ${holder} THEN leases.acquired_at_ms ELSE excluded.acquired_at_ms END`,
          expires_at_ms: sql`excluded.expires_at_ms`,
        })
        .where((eb) =>
          eb.or([
            eb("leases.holder", "=", holder),
            eb("leases.expires_at_ms", "<", sql<number>`excluded.acquired_at_ms`),
          ]),
        ),
    )
    .returningAll()
    .executeTakeFirst();
}

/** Gives the lease `name` up, if `holder` holds it, so another server may take it at once. */
export async function releaseLease(
  db: Kysely<Database>,
  name: string,
  holder: string,
): Promise<void> {
  await db.deleteFrom("leases").where("name", "=", name).where("holder", "=", holder).execute();
}

/** The lease `name` as it stands (held or lapsed), or undefined when nobody ever took it. */
export async function findLease(
  db: Kysely<Database>,
  name: string,
): Promise<LeaseTable | undefined> {
  return db.selectFrom("leases").selectAll().where("name", "=", name).executeTakeFirst();
}
