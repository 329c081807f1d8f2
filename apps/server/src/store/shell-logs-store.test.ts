import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { addMeteredShell, seedMeteredOrg } from "../test-support/metered-shells.js";
import { describeEachStore } from "../test-support/test-stores.js";
import type { Store } from "./database.js";
import { appendShellLog, tailShellLogs } from "./shell-logs-store.js";

const T0 = Date.UTC(2026, 2, 1, 10);
const opened: { store: Store; dir: string }[] = [];
afterEach(async () => {
  for (const { store, dir } of opened.splice(0)) {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

describeEachStore((testStore) => {
  describe("a shell's log", () => {
    it("keeps the newest lines, and a line written in a transaction only if it commits", async () => {
      const dir = mkdtempSync(join(tmpdir(), "shells-logs-"));
      const store = await testStore.open(dir);
      opened.push({ store, dir });
      await seedMeteredOrg(store, T0);
      await addMeteredShell(store, "sh-a", T0);
      const line = (message: string) => ({ kind: "exec" as const, message, retention: 10 });
      const messages = async () =>
        (await tailShellLogs(store.db, "org1", "sh-a", 1000)).map((entry) => entry.message);
      // The hundredth line written drops all but the newest ten.
      for (let i = 1; i <= 100; i += 1)
        await appendShellLog(store.db, "org1", "sh-a", line(`${i}`));
      expect(await messages()).toEqual([
        "91",
        "92",
        "93",
        "94",
        "95",
        "96",
        "97",
        "98",
        "99",
        "100",
      ]);
      await expect(
        store.db.transaction().execute(async (trx) => {
          await appendShellLog(store.db, "org1", "sh-a", line("rolled back"), trx);
          throw new Error("cut");
        }),
      ).rejects.toThrow("cut");
      await store.db
        .transaction()
        .execute((trx) => appendShellLog(store.db, "org1", "sh-a", line("committed"), trx));
      expect((await messages()).slice(-2)).toEqual(["100", "committed"]);
    });
  });
});
