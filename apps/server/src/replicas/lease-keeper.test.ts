import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import type { Store } from "../store/database.js";
import { claimLease, findLease, releaseLease } from "../store/leases-store.js";
import { describeEachStore, type TestStore } from "../test-support/test-stores.js";
import { LeaseKeeper } from "./lease-keeper.js";

const logger = pino({ level: "silent" });
let stores: Store[] = [];
let dirs: string[] = [];

afterEach(async () => {
  for (const store of stores) await store.close().catch(() => undefined);
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  stores = [];
  dirs = [];
});

/** `count` handles on one fresh store, as `count` servers sharing it would hold. */
async function sharedStore(store: TestStore, count: number): Promise<Store[]> {
  const dir = mkdtempSync(join(tmpdir(), "shells-lease-"));
  dirs.push(dir);
  const handles: Store[] = [];
  for (let i = 0; i < count; i += 1) handles.push(await store.open(dir));
  stores.push(...handles);
  return handles;
}

describeEachStore((store) => {
  describe("the leases table", () => {
    it("gives a free lease to one claimant and refuses the others until it lapses or is released", async () => {
      const [a, b] = await sharedStore(store, 2);
      const claims = await Promise.all([
        claimLease(a!.db, "work", "server-a", 60_000),
        claimLease(b!.db, "work", "server-b", 60_000),
      ]);
      const winners = claims.filter((c) => c !== undefined);
      expect(winners).toHaveLength(1);
      const holder = winners[0]!.holder;
      const other = holder === "server-a" ? "server-b" : "server-a";
      expect(await claimLease(a!.db, "work", other, 60_000)).toBeUndefined();

      // The holder renews: the lease runs longer, and it keeps when it was taken.
      const renewed = await claimLease(a!.db, "work", holder, 120_000);
      expect(renewed).toMatchObject({ holder, acquired_at_ms: winners[0]!.acquired_at_ms });
      expect(renewed!.expires_at_ms).toBeGreaterThan(winners[0]!.expires_at_ms);

      await releaseLease(a!.db, "work", other); // not its lease: nothing happens
      expect(await findLease(a!.db, "work")).toMatchObject({ holder });
      await releaseLease(a!.db, "work", holder);
      expect(await claimLease(b!.db, "work", other, 60_000)).toMatchObject({ holder: other });
    });

    it("lets another claimant take a lease its holder stopped renewing", async () => {
      const [a] = await sharedStore(store, 1);
      expect(await claimLease(a!.db, "work", "dead", 50)).toBeDefined();
      expect(await claimLease(a!.db, "work", "alive", 50)).toBeUndefined();
      await new Promise((resolve) => setTimeout(resolve, 120));
      const taken = await claimLease(a!.db, "work", "alive", 50);
      expect(taken).toMatchObject({ holder: "alive" });
      expect(await claimLease(a!.db, "work", "dead", 50)).toBeUndefined();
    });
  });

  describe("lease keepers", () => {
    it("run the work on exactly one server, and move it to another within the lease's lifetime when the holder dies", async () => {
      const ttlMs = 900;
      const [a, b] = await sharedStore(store, 2);
      const running = new Set<string>();
      let overlapped = false;
      const keeper = (name: string, handle: Store) =>
        new LeaseKeeper({
          db: handle.db,
          name: "background",
          exclusive: false,
          ttlMs,
          logger,
          onAcquire: async () => {
            if (running.size > 0) overlapped = true;
            running.add(name);
          },
          onLose: () => running.delete(name),
        });
      const first = keeper("a", a!);
      const second = keeper("b", b!);
      await first.start();
      await second.start();
      expect([first.held, second.held]).toEqual([true, false]);
      expect([...running]).toEqual(["a"]);

      // The holder's store goes away mid-lease (its process is cut off): it cannot renew, stops
      // its work before its lease lapses, and the other server takes over once it has.
      const diedAt = performance.now();
      await a!.db.destroy();
      await expect.poll(() => second.held, { timeout: ttlMs * 4, interval: 25 }).toBe(true);
      expect(performance.now() - diedAt).toBeLessThan(ttlMs + ttlMs / 3 + 500);
      expect(first.held).toBe(false);
      expect([...running]).toEqual(["b"]);
      expect(overlapped).toBe(false);

      await first.close();
      await second.close();
      expect(running.size).toBe(0);
      // Given up on close: another server may take it at once.
      expect(await claimLease(b!.db, "background", "next", ttlMs)).toBeDefined();
    });
  });
});
