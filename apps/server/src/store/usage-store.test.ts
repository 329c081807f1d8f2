import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  addMeteredShell,
  moveMeteredShell,
  seedMeteredOrg,
} from "../test-support/metered-shells.js";
import { describeEachStore } from "../test-support/test-stores.js";
import type { Store } from "./database.js";
import { isUniqueViolation } from "./unique-violation.js";
import {
  HOUR_MS,
  checkpointIntervals,
  closeStaleIntervals,
  openIntervals,
  openMissingIntervals,
  rollOpenIntervals,
  sumUsage,
} from "./usage-store.js";

/** 2026-03-01T10:00:00Z: the tests' clock starts on an hour. */
const T0 = Date.UTC(2026, 2, 1, 10);

let dir: string;
let store: Store;

const addShell = (id: string, atMs: number) => addMeteredShell(store, id, atMs);
const move = (id: string, status: string, atMs: number) =>
  moveMeteredShell(store, id, status, atMs);

/** Seconds per state of one shell over a range, open intervals counted to `nowMs`. */
async function secondsOf(
  shellId: string,
  nowMs: number,
  range = { fromMs: 0, toMs: nowMs },
): Promise<Record<string, number>> {
  const rows = await sumUsage(store.db, "org1", { ...range, shellId }, [], nowMs);
  const out: Record<string, number> = {};
  for (const row of rows) out[row.state] = (out[row.state] ?? 0) + row.ms / 1000;
  return out;
}

describeEachStore((testStore) => {
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "shells-usage-"));
    store = await testStore.open(dir);
    await seedMeteredOrg(store, T0);
  });

  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  describe("metered intervals", () => {
    it("count each state's time to the millisecond as the shell moves through its lifecycle", async () => {
      await addShell("sh-a", T0);
      await move("sh-a", "running", T0 + 1_250);
      await move("sh-a", "stopped", T0 + 5_250);
      await move("sh-a", "running", T0 + 7_000);
      await move("sh-a", "deleted", T0 + 9_500);
      expect(await secondsOf("sh-a", T0 + 60_000)).toEqual({
        provisioning: 1.25,
        running: 6.5,
        stopped: 1.75,
      });
      expect(await openIntervals(store.db)).toEqual([]);
    });

    it("keeps one open interval per shell: a repeated state is no new interval, a second open one is refused", async () => {
      await addShell("sh-a", T0);
      await move("sh-a", "running", T0 + 1_000);
      await move("sh-a", "running", T0 + 2_000);
      expect(await openIntervals(store.db)).toHaveLength(1);
      expect(await secondsOf("sh-a", T0 + 3_000)).toEqual({ provisioning: 1, running: 2 });
      const second = await store.db
        .insertInto("usage_intervals")
        .values({
          org_id: "org1",
          project_id: "prj1",
          shell_id: "sh-a",
          runtime: "container",
          state: "running",
          actor_id: null,
          rates_id: null,
          started_at_ms: T0,
          ended_at_ms: null,
          checkpoint_ms: T0,
          cpu_epoch: null,
          cpu_mark_usec: null,
        })
        .execute()
        .then(
          () => null,
          (error: unknown) => error,
        );
      expect(isUniqueViolation(second)).toBe(true);
    });

    it("splits open intervals at hour boundaries, so hourly groups are exact and carry the CPU mark on", async () => {
      await addShell("sh-a", T0 + HOUR_MS - 2_000);
      await move("sh-a", "running", T0 + HOUR_MS - 1_000);
      const [open] = await openIntervals(store.db);
      await checkpointIntervals(store.db, T0 + HOUR_MS - 500, [
        {
          id: open!.id,
          cpuUsec: 400,
          memoryMbMs: 0,
          egressBytes: 0,
          cpuEpoch: "e1",
          cpuMarkUsec: 400,
        },
      ]);
      expect(await rollOpenIntervals(store.db, T0 + HOUR_MS)).toBe(1);
      const [next] = await openIntervals(store.db);
      expect(next).toMatchObject({
        started_at_ms: T0 + HOUR_MS,
        cpu_epoch: "e1",
        cpu_mark_usec: 400,
      });
      const byHour = await sumUsage(
        store.db,
        "org1",
        { fromMs: 0, toMs: T0 + 2 * HOUR_MS },
        ["hour"],
        T0 + HOUR_MS + 30_000,
      );
      const running = byHour.filter((r) => r.state === "running");
      expect(running.map((r) => [r.period_ms, r.ms])).toEqual([
        [T0, 1_000],
        [T0 + HOUR_MS, 30_000],
      ]);
    });

    it("clips intervals to a range and counts their counters pro rata", async () => {
      await addShell("sh-a", T0);
      await move("sh-a", "running", T0);
      const [open] = await openIntervals(store.db);
      await checkpointIntervals(store.db, T0 + 10_000, [
        {
          id: open!.id,
          cpuUsec: 1_000_000,
          memoryMbMs: 0,
          egressBytes: 100,
          cpuEpoch: null,
          cpuMarkUsec: null,
        },
      ]);
      await move("sh-a", "stopped", T0 + 10_000);
      const rows = await sumUsage(
        store.db,
        "org1",
        { fromMs: T0 + 2_500, toMs: T0 + 5_000, state: "running" },
        [],
        T0 + 20_000,
      );
      expect(rows).toMatchObject([{ ms: 2_500, cpu_usec: 250_000, egress_bytes: 25 }]);
    });

    describe("after a crash (the process ended without a last checkpoint)", () => {
      it("closes what was open at its last checkpoint and continues shells found in the same state from there: nothing lost, nothing counted twice", async () => {
        await addShell("sh-kept", T0);
        await move("sh-kept", "running", T0 + 1_000);
        await addShell("sh-lost", T0);
        await move("sh-lost", "running", T0 + 1_000);
        await checkpointIntervals(store.db, T0 + 10_000, []);
        // The process dies at T0 + 11.5 s; the next one starts at T0 + 20 s.
        await store.close();
        store = await testStore.open(dir);
        const stale = await closeStaleIntervals(store.db);
        expect(stale.map((s) => [s.shell_id, s.checkpoint_ms])).toEqual([
          ["sh-kept", T0 + 10_000],
          ["sh-lost", T0 + 10_000],
        ]);
        // Closing is idempotent: a second pass finds nothing open and changes nothing.
        expect(await closeStaleIntervals(store.db)).toEqual([]);
        // Reconciliation finds sh-lost's sandbox gone (error) and sh-kept still running.
        await move("sh-lost", "error", T0 + 20_000);
        expect(await openMissingIntervals(store.db, T0 + 20_000, stale)).toBe(1);
        expect(await openMissingIntervals(store.db, T0 + 20_000, stale)).toBe(0);
        const now = T0 + 25_000;
        // The sandbox ran on while the control plane was down: all 24 s, each once.
        expect(await secondsOf("sh-kept", now)).toEqual({ provisioning: 1, running: 24 });
        // When it stopped is unknown: counted up to the last checkpoint, never past it.
        expect(await secondsOf("sh-lost", now)).toEqual({ provisioning: 1, running: 9, error: 5 });
      });

      it("counts nothing twice across repeated crashes and restarts", async () => {
        await addShell("sh-a", T0);
        await move("sh-a", "running", T0);
        let clock = T0;
        for (let restart = 0; restart < 5; restart += 1) {
          clock += 4_000;
          await checkpointIntervals(store.db, clock, []);
          clock += 1_500; // dies 1.5 s after its last checkpoint
          await store.close();
          store = await testStore.open(dir);
          clock += 500; // back half a second later
          await openMissingIntervals(store.db, clock, await closeStaleIntervals(store.db));
        }
        const rows = await store.db
          .selectFrom("usage_intervals")
          .selectAll()
          .orderBy("id")
          .execute();
        for (let i = 1; i < rows.length; i += 1)
          expect(rows[i]!.started_at_ms).toBe(rows[i - 1]!.ended_at_ms);
        expect(await secondsOf("sh-a", clock)).toEqual({ running: (clock - T0) / 1000 });
      });
    });
  });
});
