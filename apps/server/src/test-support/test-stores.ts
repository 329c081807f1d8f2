import { randomBytes } from "node:crypto";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe } from "vitest";
import { openPostgresStore, openSqliteStore, type Store } from "../store/database.js";
import type { StoreDialect } from "../store/dialect.js";

/**
 * The PostgreSQL server tests use: `SHELLS_TEST_POSTGRES_URL` (a role that may create databases),
 * else the role CI makes on the local cluster (`.ci/run`).
 */
export const TEST_POSTGRES_URL =
  process.env.SHELLS_TEST_POSTGRES_URL ??
  "postgres://shells_test:shells_test@127.0.0.1:5432/postgres";

/** A store dialect a suite runs over. */
export interface TestStore {
  dialect: StoreDialect;
  /**
   * Opens the store of `dataDir`, migrated: a fresh one for a new data dir, the same one again for
   * a data dir opened before (a restart).
   */
  open: (dataDir: string) => Promise<Store>;
}

/** The embedded default: a SQLite file in the data dir. */
export const SQLITE_TEST_STORE: TestStore = {
  dialect: "sqlite",
  open: (dataDir) => openSqliteStore(join(dataDir, "shells.db")),
};

/** Whether the test server answers, and if not, why (said once per file, loudly). */
async function postgresReachable(): Promise<string | null> {
  const client = new pg.Client({
    connectionString: TEST_POSTGRES_URL,
    connectionTimeoutMillis: 3000,
  });
  try {
    await client.connect();
    await client.query("SELECT 1");
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** `url` pointing at database `name`. */
function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

/** A database of its own on the test server, for a test that starts servers over it. */
export interface TestDatabase {
  name: string;
  /** Its URL, as `SHELLS_DATABASE_URL` takes it. */
  url: string;
  /** Drops it, ending the connections still open to it. */
  drop(): Promise<void>;
}

/** Runs one statement on the test server (in `database`, default the one the URL names). */
async function runStatement(statement: string, database?: string): Promise<void> {
  const client = new pg.Client({
    connectionString: database ? withDatabase(TEST_POSTGRES_URL, database) : TEST_POSTGRES_URL,
  });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

/**
 * Creates `shells_test_<random>` on the test server (C collation: text sorts by code point, as
 * SQLite compares it).
 */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `shells_test_${randomBytes(6).toString("hex")}`;
  await runStatement(
    `CREATE DATABASE ${name} TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'`,
  );
  return {
    name,
    url: withDatabase(TEST_POSTGRES_URL, name),
    drop: () => runStatement(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}

/**
 * A PostgreSQL database of its own for one test file (`shells_test_<random>`, created in
 * `beforeAll` and dropped in `afterAll`), and in it a schema of its own for each data dir, so every
 * test starts from an empty, freshly migrated store as it does on SQLite.
 */
function postgresTestStore(): TestStore {
  let database: TestDatabase | undefined;
  const schemas = new Map<string, string>();
  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });
  return {
    dialect: "postgres",
    open: async (dataDir) => {
      if (!database) throw new Error("the test database is made in beforeAll");
      let schema = schemas.get(dataDir);
      if (!schema) {
        schema = `store_${schemas.size + 1}`;
        schemas.set(dataDir, schema);
        await runStatement(`CREATE SCHEMA ${schema}`, database.name);
      }
      const url = new URL(database.url);
      url.searchParams.set("options", `-c search_path=${schema}`);
      return openPostgresStore(url.toString());
    },
  };
}

/** Why the test server cannot be reached, or null when it answers. */
export const POSTGRES_UNREACHABLE = await postgresReachable();
const unreachable = POSTGRES_UNREACHABLE;
if (unreachable)
  console.warn(
    `\n!!! PostgreSQL is not reachable at ${new URL(TEST_POSTGRES_URL).host} (${unreachable}): ` +
      "the PostgreSQL variants of the store suites are SKIPPED. Set SHELLS_TEST_POSTGRES_URL, or " +
      "start the local cluster as .ci/run does.\n",
  );

/**
 * Runs `suite` once per store dialect: on SQLite, and on a real PostgreSQL (a database of its
 * own, dropped afterwards). Without a reachable PostgreSQL its variant is registered skipped, so
 * the report shows every test that did not run.
 */
export function describeEachStore(suite: (store: TestStore) => void): void {
  describe("on SQLite", () => suite(SQLITE_TEST_STORE));
  if (unreachable) describe.skip("on PostgreSQL (not reachable)", () => suite(SQLITE_TEST_STORE));
  else describe("on PostgreSQL", () => suite(postgresTestStore()));
}
