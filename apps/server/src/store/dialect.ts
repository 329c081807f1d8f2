import {
  PostgresAdapter,
  sql,
  type Kysely,
  type QueryExecutorProvider,
  type RawBuilder,
} from "kysely";
import type { Database } from "./schema.js";

/**
 * The SQL the store's two dialects write differently, in one place. Every query elsewhere is
 * portable; where a dialect needs its own words (a scalar max, a JSON field) or its own locking,
 * the query asks here.
 */

/** The store's database: the embedded SQLite file, or a PostgreSQL server shared by replicas. */
export type StoreDialect = "sqlite" | "postgres";

/** Which dialect a store handle (or a transaction of it) speaks. */
export function dialectOf(db: QueryExecutorProvider): StoreDialect {
  // Kysely keeps the dialect's adapter on the executor every handle and transaction shares
  // (`getExecutor` is in its typings, documented as internal: this is the one place that asks).
  return db.getExecutor().adapter instanceof PostgresAdapter ? "postgres" : "sqlite";
}

/** The larger of two values (SQLite's two-argument `max`, PostgreSQL's `greatest`). */
export function greatest<T>(db: QueryExecutorProvider, a: unknown, b: unknown): RawBuilder<T> {
  return dialectOf(db) === "postgres" ? sql<T>`greatest(${a}, ${b})` : sql<T>`max(${a}, ${b})`;
}

/** The smaller of two values (SQLite's two-argument `min`, PostgreSQL's `least`). */
export function least<T>(db: QueryExecutorProvider, a: unknown, b: unknown): RawBuilder<T> {
  return dialectOf(db) === "postgres" ? sql<T>`least(${a}, ${b})` : sql<T>`min(${a}, ${b})`;
}

/** A top-level field of a JSON text column, as text (null when absent). */
export function jsonText(
  db: QueryExecutorProvider,
  column: RawBuilder<unknown>,
  key: string,
): RawBuilder<string | null> {
  return dialectOf(db) === "postgres"
    ? sql<string | null>`(${column}::jsonb ->> ${sql.lit(key)})`
    : sql<string | null>`json_extract(${column}, ${sql.lit(`$.${key}`)})`;
}

/** A top-level integer field of a JSON text column (null when absent). */
export function jsonInteger(
  db: QueryExecutorProvider,
  column: RawBuilder<unknown>,
  key: string,
): RawBuilder<number | null> {
  return dialectOf(db) === "postgres"
    ? sql<number | null>`(${column}::jsonb ->> ${sql.lit(key)})::bigint`
    : sql<number | null>`json_extract(${column}, ${sql.lit(`$.${key}`)})`;
}

/**
 * Makes the rest of the transaction `trx` the only one, across every process on the store, that
 * holds `key` (released at commit or rollback). SQLite needs nothing: the store has one writer, and
 * a transaction holds it to the end. PostgreSQL runs transactions side by side, so read-then-write
 * work (the next link of an org's activity chain) takes a transaction-scoped advisory lock.
 */
export async function lockForTransaction(trx: QueryExecutorProvider, key: string): Promise<void> {
  if (dialectOf(trx) !== "postgres") return;
  await sql`SELECT pg_advisory_xact_lock(hashtextextended(${key}, 0))`.execute(trx);
}

/**
 * Holds the `shells` rows of `shellIds` until the transaction `trx` ends, so their meters move one
 * transaction at a time (PostgreSQL; on SQLite the transaction already is the only writer). Rows
 * are taken in id order: transactions that lock several shells never wait on each other in a
 * cycle, and one that changes a single shell locks its row first anyway (it updates it).
 */
export async function lockShellRows(
  trx: Kysely<Database>,
  shellIds: readonly string[],
): Promise<void> {
  if (dialectOf(trx) !== "postgres" || shellIds.length === 0) return;
  const sorted = [...new Set(shellIds)].sort();
  for (let i = 0; i < sorted.length; i += 1000)
    await trx
      .selectFrom("shells")
      .select("id")
      .where("id", "in", sorted.slice(i, i + 1000))
      .orderBy("id")
      .forUpdate()
      .execute();
}

/**
 * The database server's clock, in ms since the epoch. Leases are dated by it, so replicas whose
 * own clocks drift still agree on when one lapses.
 */
export function storeClockMs(db: QueryExecutorProvider): RawBuilder<number> {
  return dialectOf(db) === "postgres"
    ? sql<number>`(extract(epoch from clock_timestamp()) * 1000)::bigint`
    : sql<number>`CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)`;
}
