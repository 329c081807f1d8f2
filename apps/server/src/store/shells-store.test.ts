import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { addMeteredShell, seedMeteredOrg } from "../test-support/metered-shells.js";
import { describeEachStore } from "../test-support/test-stores.js";
import type { Store } from "./database.js";
import { memoryHeldAcrossOrgs, setShellState } from "./shells-store.js";

const T0 = Date.UTC(2026, 2, 1, 10);
const opened: { store: Store; dir: string }[] = [];
afterEach(async () => {
  for (const { store, dir } of opened.splice(0)) {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

describeEachStore((testStore) => {
  describe("the memory the host has promised its shells", () => {
    it("sums the shells provisioning, running or paused, and none stopped or deleted", async () => {
      const dir = mkdtempSync(join(tmpdir(), "shells-memory-"));
      const store = await testStore.open(dir);
      opened.push({ store, dir });
      await seedMeteredOrg(store, T0);
      const shells = [
        ["sh-provisioning", "provisioning", 64],
        ["sh-running", "running", 128],
        ["sh-paused", "paused", 256],
        ["sh-stopped", "stopped", 512],
        ["sh-deleted", "deleted", 1024],
      ] as const;
      for (const [id, status, memoryMb] of shells) {
        await addMeteredShell(store, id, T0);
        await store.db
          .updateTable("shells")
          .set({ resources: JSON.stringify({ memoryMb }) })
          .where("id", "=", id)
          .execute();
        await setShellState(store.db, "org1", id, {
          status,
          ...(status === "deleted" ? { deleted_at: new Date(T0).toISOString() } : {}),
        });
      }
      expect(await memoryHeldAcrossOrgs(store.db)).toBe(64 + 128 + 256);
    });
  });
});
