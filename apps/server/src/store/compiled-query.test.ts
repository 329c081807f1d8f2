import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { addMeteredShell, seedMeteredOrg } from "../test-support/metered-shells.js";
import { describeEachStore } from "../test-support/test-stores.js";
import type { Kysely } from "kysely";
import { compiledOnce, type QueryParam } from "./compiled-query.js";
import type { Store } from "./database.js";
import type { Database } from "./schema.js";
import { findShell } from "./shells-store.js";

const T0 = Date.UTC(2026, 2, 1, 10);
const opened: { store: Store; dir: string }[] = [];
afterEach(async () => {
  for (const { store, dir } of opened.splice(0)) {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

describeEachStore((testStore) => {
  async function seeded(shellIds: string[]): Promise<Store> {
    const dir = mkdtempSync(join(tmpdir(), "shells-compiled-"));
    const store = await testStore.open(dir);
    opened.push({ store, dir });
    await seedMeteredOrg(store, T0);
    for (const id of shellIds) await addMeteredShell(store, id, T0);
    return store;
  }

  describe("a shell looked up by its query compiled once", () => {
    it("binds each call's own values, on every store it runs against, and never reaches another org", async () => {
      const first = await seeded(["sh-a", "sh-b"]);
      const second = await seeded(["sh-c"]);
      expect((await findShell(first.db, "org1", "sh-a"))?.id).toBe("sh-a");
      expect((await findShell(first.db, "org1", "sh-b"))?.id).toBe("sh-b");
      expect(await findShell(first.db, "org1", "sh-c")).toBeUndefined();
      // The same query on another database answers from that one.
      expect((await findShell(second.db, "org1", "sh-c"))?.project_name).toBe("default");
      expect(await findShell(second.db, "org1", "sh-a")).toBeUndefined();
      // Another org's id and a value that looks like SQL find nothing.
      expect(await findShell(first.db, "org2", "sh-a")).toBeUndefined();
      expect(await findShell(first.db, "org1", "sh-a' or '1'='1")).toBeUndefined();
    });

    it("runs in a transaction of its database, seeing that transaction's own writes", async () => {
      const store = await seeded([]);
      const projectName = compiledOnce((db: Kysely<Database>, param: QueryParam<"id">) =>
        db.selectFrom("projects").select("name").where("id", "=", param("id")),
      );
      await store.db.transaction().execute(async (trx) => {
        await trx
          .insertInto("projects")
          .values({ id: "prj-new", org_id: "org1", name: "fresh", created_at: "2026-03-01" })
          .execute();
        expect(await projectName(store.db, { id: "prj-new" }, trx)).toEqual([{ name: "fresh" }]);
      });
      expect(await projectName(store.db, { id: "prj1" })).toEqual([{ name: "default" }]);
    });
  });
});
