import SQLite from "better-sqlite3";
import { Kysely, Migrator, SqliteDialect } from "kysely";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { migrationProvider } from "./migrations.js";
import type { Database } from "./schema.js";

/** The store: a Kysely handle plus what it takes to close it. */
export interface Store {
  db: Kysely<Database>;
  close(): Promise<void>;
}

/**
 * Opens (creating if needed) the SQLite store at `path` (`:memory:` for one held in memory, gone
 * when closed) and applies pending migrations.
 * WAL lets readers proceed during a write; the busy timeout makes a second process wait for the
 * write lock instead of failing at once.
 */
export async function openSqliteStore(path: string): Promise<Store> {
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const sqlite = new SQLite(path);
  sqlite.pragma("journal_mode = WAL");
  sqlite.pragma("busy_timeout = 5000");
  sqlite.pragma("foreign_keys = ON");
  sqlite.pragma("synchronous = NORMAL");
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: sqlite }) });
  const { error, results } = await new Migrator({
    db,
    provider: migrationProvider,
  }).migrateToLatest();
  const failed = results?.find((r) => r.status === "Error");
  if (error || failed) {
    await db.destroy();
    throw new Error(`store migration ${failed?.migrationName ?? ""} failed on ${path}`, {
      cause: error,
    });
  }
  return { db, close: () => db.destroy() };
}
