import SQLite from "better-sqlite3";
import { Kysely, Migrator, PostgresDialect, SqliteDialect, sql, type SqliteDatabase } from "kysely";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import pg from "pg";
import type { StoreDialect } from "./dialect.js";
import { AdvisoryLifecycleLock, type LifecycleLock } from "./lifecycle-lock.js";
import { migrationProvider } from "./migrations.js";
import type { Database } from "./schema.js";

/** The store: a Kysely handle, the dialect it speaks, and what it takes to close it. */
export interface Store {
  db: Kysely<Database>;
  dialect: StoreDialect;
  /**
   * The lifecycle lock of servers sharing this store, built on `local` (this process's): SQLite
   * has one server, so `local` itself; PostgreSQL adds a lock every replica sees.
   */
  lifecycleLock(local: LifecycleLock): LifecycleLock;
  close(): Promise<void>;
}

/** Where the store lives: a PostgreSQL URL when one is configured, else SQLite in the data dir. */
export async function openStore(
  config: { databaseUrl?: string | undefined; dataDir: string },
  options: { onPoolError?: (error: Error) => void } = {},
): Promise<Store> {
  return config.databaseUrl
    ? openPostgresStore(config.databaseUrl, options)
    : openSqliteStore(join(config.dataDir, "shells.db"));
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
  const db = new Kysely<Database>({
    dialect: new SqliteDialect({ database: withStatementCache(sqlite) }),
  });
  await migrate(db, path);
  return { db, dialect: "sqlite", lifecycleLock: (local) => local, close: () => db.destroy() };
}

/** Distinct SQL texts whose prepared statements are kept; past it the oldest is dropped. */
const STATEMENT_CACHE_SIZE = 1000;

/**
 * The database as Kysely's SQLite driver sees it, with each SQL text prepared once: Kysely prepares
 * a statement for every query, and preparing costs about as much as running a point lookup. A
 * statement is reused only after its previous run returned (`all`/`run` are synchronous); the
 * store never streams a query (`iterate`), which would hold a statement busy across awaits.
 */
function withStatementCache(sqlite: SQLite.Database): SqliteDatabase {
  const statements = new Map<string, SQLite.Statement>();
  return {
    close: () => sqlite.close(),
    prepare: (sqlText: string) => {
      let statement = statements.get(sqlText);
      if (!statement) {
        statement = sqlite.prepare(sqlText);
        if (statements.size >= STATEMENT_CACHE_SIZE) {
          const oldest = statements.keys().next();
          if (!oldest.done) statements.delete(oldest.value);
        }
        statements.set(sqlText, statement);
      }
      return statement;
    },
  };
}

/** PostgreSQL type ids whose text form the store reads as JS numbers. */
const INT8_OID = 20;
const NUMERIC_OID = 1700;

/**
 * Parses values the way the SQLite store returns them: `bigint` columns (every integer column on
 * PostgreSQL: millisecond times, byte counts) and `count`/`sum` results are numbers, not the
 * strings `pg` gives by default. Every such value the store holds is far below 2^53.
 */
const STORE_TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID || oid === NUMERIC_OID
      ? (value: string) => Number(value)
      : pg.types.getTypeParser(oid, format)) as pg.CustomTypesConfig["getTypeParser"],
};

/**
 * Opens the PostgreSQL store at `url` (`postgres://user:password@host:port/database`) over a
 * connection pool and applies pending migrations; several servers may share it (migrations take
 * an advisory lock, so replicas starting together apply each one once).
 */
export async function openPostgresStore(
  url: string,
  options: { onPoolError?: (error: Error) => void; maxConnections?: number } = {},
): Promise<Store> {
  const pool = new pg.Pool({
    connectionString: url,
    types: STORE_TYPES,
    max: options.maxConnections ?? 10,
  });
  // An idle connection the server dropped (a restart, a failover) is replaced on next use; the
  // pool reports it here instead of crashing the process.
  pool.on("error", (error) => options.onPoolError?.(error));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  // The store lives in the connection's current schema (`public`, or the URL's `search_path`);
  // the migrator's own tables are named in it, so another schema's never count as this one's.
  const schema = await sql<{ name: string }>`SELECT current_schema() AS name`.execute(db).then(
    (r) => r.rows[0]?.name,
    () => undefined,
  );
  await migrate(db, redactDatabaseUrl(url), schema);
  // Lifecycle locks hold a connection each while their work runs on the main pool, so they have
  // a pool of their own: waiting for a lock never starves the work that would release it.
  const lockPool = new pg.Pool({ connectionString: url, types: STORE_TYPES, max: 16 });
  lockPool.on("error", (error) => options.onPoolError?.(error));
  return {
    db,
    dialect: "postgres",
    lifecycleLock: (local) => new AdvisoryLifecycleLock(local, lockPool),
    close: async () => {
      await db.destroy();
      await lockPool.end();
    },
  };
}

/** A database URL with its password masked, for logs and error messages. */
export function redactDatabaseUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "redacted";
    for (const name of [...parsed.searchParams.keys()])
      if (/pass/i.test(name)) parsed.searchParams.set(name, "redacted");
    return parsed.toString();
  } catch {
    return "(a database URL that does not parse)";
  }
}

async function migrate(db: Kysely<Database>, where: string, schema?: string): Promise<void> {
  const { error, results } = await new Migrator({
    db,
    provider: migrationProvider,
    ...(schema ? { migrationTableSchema: schema } : {}),
  }).migrateToLatest();
  const failed = results?.find((r) => r.status === "Error");
  if (error || failed) {
    await db.destroy();
    throw new Error(`store migration ${failed?.migrationName ?? ""} failed on ${where}`, {
      cause: error,
    });
  }
}
