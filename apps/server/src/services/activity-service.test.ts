import { activityEventHash, verifyActivityChain, type ActivityEvent } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";
import { describeEachStore } from "../test-support/test-stores.js";
import { ActivityService } from "./activity-service.js";

let t: TestApp;

afterEach(async () => {
  await t?.close();
});

async function chain(): Promise<ActivityEvent[]> {
  return (await t.call("GET", "/api/v1/activity?order=asc&limit=500")).json().items;
}

/** Some history: a few shells created and deleted. */
async function makeHistory(): Promise<void> {
  for (const name of ["one", "two", "three"]) {
    const shell = (await t.call("POST", "/api/v1/shells", { language: "bash", name })).json();
    await t.call("DELETE", `/api/v1/shells/${shell.id}`);
  }
}

describeEachStore((store) => {
  describe("verifying the activity chain", () => {
    it("reports its head and says what it cannot prove", async () => {
      t = await createTestApp({ openStore: store.open });
      await makeHistory();
      const events = await chain();
      const last = events.at(-1)!;
      const result = await verifyActivityChain(events);
      expect(result).toMatchObject({
        ok: true,
        checked: events.length,
        head: { eventId: last.id, seq: last.seq, time: last.time, hash: last.hash },
      });
      expect(result.proves).toContain("links to the previous event");
      expect(result.cannotProve).toContain("removed from the end");
      expect(result.cannotProve).toContain("--expect-head");
    });

    it("passes a truncated tail on its own, and fails it against the head recorded before", async () => {
      t = await createTestApp({ openStore: store.open });
      await makeHistory();
      const recordedHead = (await verifyActivityChain(await chain())).head!.hash;
      await t.store.db
        .deleteFrom("activity")
        .where("seq", ">", (await chain()).length - 3)
        .execute();

      const truncated = await chain();
      expect(await verifyActivityChain(truncated)).toMatchObject({ ok: true });
      const anchored = await verifyActivityChain(truncated, { expectHead: recordedHead });
      expect(anchored).toMatchObject({
        ok: false,
        eventId: null,
        expectedHead: { hash: recordedHead, found: false },
      });
      expect(anchored.ok === false && anchored.reason).toContain("not in the chain");
    });

    it("passes a chain edited and re-hashed on its own, and fails it against the head recorded before", async () => {
      t = await createTestApp({ openStore: store.open });
      await makeHistory();
      const recordedHead = (await verifyActivityChain(await chain())).head!.hash;

      // Rewrite: drop an event's trace of a deletion, then recompute every hash after it.
      const rows = await t.store.db.selectFrom("activity").selectAll().orderBy("seq").execute();
      let prevHash = rows[0]!.prev_hash;
      let edited = false;
      for (const row of rows) {
        const action: string =
          !edited && row.action === "shell.delete" ? "shell.action.logs" : row.action;
        edited ||= action !== row.action;
        const hash = await activityEventHash({
          seq: row.seq,
          orgId: row.org_id,
          actor: JSON.parse(row.actor),
          action,
          target:
            row.target_type && row.target_id ? { type: row.target_type, id: row.target_id } : null,
          outcome: row.outcome,
          details: JSON.parse(row.details),
          time: row.time,
          prevHash,
        });
        await t.store.db
          .updateTable("activity")
          .set({ action, prev_hash: prevHash, hash })
          .where("id", "=", row.id)
          .execute();
        prevHash = hash;
      }
      expect(edited).toBe(true);

      const rewritten = await chain();
      expect(await verifyActivityChain(rewritten)).toMatchObject({ ok: true });
      expect(await verifyActivityChain(rewritten, { expectHead: recordedHead })).toMatchObject({
        ok: false,
        expectedHead: { found: false },
      });
    });

    it("passes against a recorded head the chain has since grown past", async () => {
      t = await createTestApp({ openStore: store.open });
      await makeHistory();
      const recordedHead = (await verifyActivityChain(await chain())).head!.hash;
      await makeHistory();
      expect(await verifyActivityChain(await chain(), { expectHead: recordedHead })).toMatchObject({
        ok: true,
        expectedHead: { hash: recordedHead, found: true },
      });
    });
  });

  describe("appending at once", () => {
    it("keeps one chain per org, with no fork and no gap, when two servers append to it together", async () => {
      t = await createTestApp({ openStore: store.open });
      const orgId = (await t.call("GET", "/api/v1/me")).json().orgId as string;
      // A second connection pool on the same store, as another server sharing it has (a SQLite
      // store has one server).
      const other = store.dialect === "postgres" ? await store.open(t.dataDir) : t.store;
      try {
        const servers = [new ActivityService(t.store.db), new ActivityService(other.db)];
        const before = (await chain()).length;
        const appended = await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            servers[i % 2]!.record({
              orgId,
              actor: { type: "system", id: "test" },
              action: `test.append.${i}`,
              target: null,
              outcome: "success",
            }),
          ),
        );
        const events = await chain();
        expect(events).toHaveLength(before + 40);
        expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
        expect(new Set(appended.map((e) => e.seq)).size).toBe(40);
        expect(await verifyActivityChain(events)).toMatchObject({ ok: true });
      } finally {
        if (other !== t.store) await other.close();
      }
    });
  });

  describe("activity sinks", () => {
    it("run in the event's transaction: a sink that fails leaves neither the event nor its writes", async () => {
      t = await createTestApp({ openStore: store.open });
      const activity = new ActivityService(t.store.db);
      const orgId = (await t.call("GET", "/api/v1/me")).json().orgId as string;
      activity.addSink(async (trx, event) => {
        await trx
          .insertInto("projects")
          .values({ id: `prj-${event.id}`, org_id: orgId, name: event.id, created_at: event.time })
          .execute();
        if (event.action === "test.fail") throw new Error("sink failed");
      });
      const record = (action: string) =>
        activity.record({
          orgId,
          actor: { type: "system", id: "test" },
          action,
          target: null,
          outcome: "success",
        });
      const kept = await record("test.ok");
      await expect(record("test.fail")).rejects.toThrow("sink failed");
      const events = await chain();
      expect(events.map((e) => e.action)).toContain("test.ok");
      expect(events.map((e) => e.action)).not.toContain("test.fail");
      const projects = await t.store.db.selectFrom("projects").select("name").execute();
      expect(projects.map((p) => p.name)).toContain(kept.id);
      expect(projects).toHaveLength(2);
    });

    it("the writes an event reports commit with it: an event that cannot be recorded leaves none", async () => {
      t = await createTestApp({ openStore: store.open });
      const activity = new ActivityService(t.store.db);
      const orgId = (await t.call("GET", "/api/v1/me")).json().orgId as string;
      activity.addSink(async (_trx, event) => {
        if (event.action === "test.fail") throw new Error("sink failed");
      });
      const record = (action: string) =>
        activity.record(
          {
            orgId,
            actor: { type: "system", id: "test" },
            action,
            target: null,
            outcome: "success",
          },
          async (trx) => {
            await trx
              .insertInto("projects")
              .values({ id: `prj-${action}`, org_id: orgId, name: action, created_at: "now" })
              .execute();
          },
        );
      await record("test.ok");
      await expect(record("test.fail")).rejects.toThrow("sink failed");
      const projects = await t.store.db.selectFrom("projects").select("name").execute();
      expect(projects.map((p) => p.name)).toContain("test.ok");
      expect(projects.map((p) => p.name)).not.toContain("test.fail");
    });
  });
});
