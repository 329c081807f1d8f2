import SQLite from "better-sqlite3";
import { Kysely, Migrator, SqliteDialect } from "kysely";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../config.js";
import { describeEachStore } from "../test-support/test-stores.js";
import { openSqliteStore, redactDatabaseUrl, type Store } from "./database.js";
import { listCaps, replaceProjectCaps } from "./caps-store.js";
import { migrationProvider } from "./migrations.js";
import type { Database } from "./schema.js";
import { isUniqueViolation, UNIQUE_CONSTRAINTS } from "./unique-violation.js";

let store: Store | undefined;
const dirs: string[] = [];
afterEach(async () => {
  await store?.close();
  store = undefined;
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function freshDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "shells-store-"));
  dirs.push(dir);
  return dir;
}

describe("the store's database URL", () => {
  it("never shows its password in a log or an error", () => {
    const url = "postgres://shells:s3cret-pass@db.internal:5432/shells?sslmode=require";
    const shown = redactDatabaseUrl(url);
    expect(shown).not.toContain("s3cret-pass");
    expect(shown).toBe("postgres://shells:redacted@db.internal:5432/shells?sslmode=require");
    expect(redactDatabaseUrl("postgres://db/shells?password=s3cret-pass")).not.toContain("s3cret");
    expect(redactDatabaseUrl("not a url s3cret-pass")).not.toContain("s3cret");
  });

  it("selects PostgreSQL from SHELLS_DATABASE_URL and refuses anything else, without echoing it", () => {
    const url = "postgresql://shells:s3cret-pass@127.0.0.1/shells";
    expect(loadConfig([], { SHELLS_DATABASE_URL: url })).toMatchObject({ databaseUrl: url });
    expect(loadConfig([], {}).databaseUrl).toBeUndefined();
    let message = "";
    try {
      loadConfig([], { SHELLS_DATABASE_URL: "mysql://shells:s3cret-pass@127.0.0.1/shells" });
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).toContain("SHELLS_DATABASE_URL: must be a postgres://");
    expect(message).not.toContain("s3cret-pass");
  });
});

describe("migrating an existing SQLite store", () => {
  it("keeps the order its project caps were set in", async () => {
    const path = join(freshDir(), "shells.db");
    // A store as the release before cap positions left it, with caps in it.
    const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: new SQLite(path) }) });
    const migrated = await new Migrator({ db, provider: migrationProvider }).migrateTo(
      "0019_templates",
    );
    expect(migrated.error).toBeUndefined();
    const now = new Date().toISOString();
    await db.insertInto("orgs").values({ id: "org-1", name: "one", created_at: now }).execute();
    await db
      .insertInto("projects")
      .values({ id: "prj-1", org_id: "org-1", name: "default", created_at: now })
      .execute();
    for (const [id, metric] of [
      ["cap-z", "running_seconds"],
      ["cap-a", "concurrent_shells"],
    ] as const)
      await db
        .insertInto("project_caps")
        .values({
          id,
          org_id: "org-1",
          project_id: "prj-1",
          metric,
          period: metric === "running_seconds" ? "day" : null,
          runtime: null,
          limit_value: 5,
          created_at: now,
        })
        .execute();
    await db.destroy();

    store = await openSqliteStore(path);
    expect((await listCaps(store.db, "org-1")).map((c) => c.id)).toEqual(["cap-z", "cap-a"]);
  });
});

describeEachStore((testStore) => {
  it("keeps a project's caps in the order they were given", async () => {
    store = await testStore.open(freshDir());
    const now = new Date().toISOString();
    await store.db
      .insertInto("orgs")
      .values({ id: "org-1", name: "one", created_at: now })
      .execute();
    await store.db
      .insertInto("projects")
      .values({ id: "prj-1", org_id: "org-1", name: "default", created_at: now })
      .execute();
    const cap = (id: string, metric: "cost" | "concurrent_shells" | "running_seconds") => ({
      id,
      metric,
      period: metric === "concurrent_shells" ? null : ("month" as const),
      runtime: null,
      limit_value: 7,
      created_at: now,
    });
    await replaceProjectCaps(store.db, "org-1", "prj-1", [
      cap("cap-m", "running_seconds"),
      cap("cap-b", "cost"),
      cap("cap-x", "concurrent_shells"),
    ]);
    expect((await listCaps(store.db, "org-1")).map((c) => [c.id, c.limit_value])).toEqual([
      ["cap-m", 7],
      ["cap-b", 7],
      ["cap-x", 7],
    ]);
  });

  it("recognises a unique violation, and which constraint it broke", async () => {
    store = await testStore.open(freshDir());
    const now = new Date().toISOString();
    await store.db
      .insertInto("orgs")
      .values({ id: "org-1", name: "one", created_at: now })
      .execute();
    const error = await store.db
      .insertInto("orgs")
      .values({ id: "org-2", name: "one", created_at: now })
      .execute()
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(isUniqueViolation(error)).toBe(true);
    expect(isUniqueViolation(error, UNIQUE_CONSTRAINTS.templateName)).toBe(false);
    expect(isUniqueViolation(new Error("no"))).toBe(false);

    const template = (id: string) =>
      store!.db
        .insertInto("templates")
        .values({
          id,
          org_id: "org-1",
          project_id: null,
          name: "base",
          latest_version: 1,
          created_by_type: "user",
          created_by_id: "usr-1",
          created_at: now,
          updated_at: now,
        })
        .execute();
    await template("tpl-1");
    const taken = await template("tpl-2").then(
      () => null,
      (e: unknown) => e,
    );
    expect(isUniqueViolation(taken, UNIQUE_CONSTRAINTS.templateName)).toBe(true);
    expect(isUniqueViolation(taken, UNIQUE_CONSTRAINTS.bindingName)).toBe(false);
  });
});
