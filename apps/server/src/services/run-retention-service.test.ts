import {
  verifyEvidenceBundle,
  type ActivityEvent,
  type EvidenceBundle,
  type Run,
  type RunRetention,
} from "@shells/contract";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { sha256 } from "../audit/sha256.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";
import { describeEachStore } from "../test-support/test-stores.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const DAY_MS = 24 * 3600 * 1000;

describeEachStore((store) => {
  describe("retention of what runs keep", () => {
    it("is set per org and per project, a project's setting winning, with the server's default below both, each change recorded", async () => {
      t = await createTestApp({ openStore: store.open, env: { SHELLS_RUN_RETENTION_DAYS: "45" } });
      const a = t;
      const get = async (url: string) => (await a.call("GET", url)).json<RunRetention>();
      expect(await get("/api/v1/org/retention")).toMatchObject({
        project: null,
        days: null,
        effectiveDays: 45,
      });
      expect((await t.call("PUT", "/api/v1/org/retention", { days: 10 })).statusCode).toBe(200);
      expect(await get("/api/v1/projects/default/retention")).toMatchObject({
        project: "default",
        days: null,
        effectiveDays: 10,
      });
      const set = await t.call("PUT", "/api/v1/projects/default/retention", { days: 0.5 });
      expect(set.json<RunRetention>()).toMatchObject({ days: 0.5, effectiveDays: 0.5 });
      expect(set.json<RunRetention>().updatedBy?.id).toBeTruthy();
      await t.call("PUT", "/api/v1/org/retention", { days: null });
      expect((await get("/api/v1/org/retention")).effectiveDays).toBe(45);
      expect((await get("/api/v1/projects/default/retention")).effectiveDays).toBe(0.5);

      const bad = await t.call("PUT", "/api/v1/org/retention", { days: -1 });
      expect(bad.statusCode).toBe(400);
      expect(bad.json().error.code).toBe("validation_failed");
      const unknown = await t.call("PUT", "/api/v1/projects/nope/retention", { days: 1 });
      expect(unknown.statusCode).toBe(404);
      expect(unknown.json().error.code).toBe("project_not_found");

      const updates = (
        await t.call("GET", "/api/v1/activity?action=retention.update&order=asc&limit=10")
      ).json<{ items: ActivityEvent[] }>().items;
      expect(updates.map((e) => e.details)).toEqual([
        { project: null, from: null, to: 10 },
        { project: "default", from: null, to: 0.5 },
        { project: null, from: 10, to: null },
      ]);
    });

    it("removes a run's artifacts, changes and diff once its retention ran out by the clock, records it, and answers artifact_expired", async () => {
      let now = new Date();
      t = await createTestApp({
        openStore: store.open,
        clock: () => now,
        env: { SHELLS_RETENTION_SWEEP_SECONDS: "0.1" },
      });
      const a = t;
      await t.call("PUT", "/api/v1/org/retention", { days: 10 });
      const started = await t.call("POST", "/api/v1/runs", {
        language: "bash",
        files: [{ path: "a.txt", content: "one\n" }],
        command: ["sh", "-c", "echo two > a.txt; mkdir -p out; echo chart > out/c.svg"],
        artifacts: ["out/*.{png,svg}"],
      });
      const id = started.json<Run>().id;
      await expect
        .poll(async () => (await a.call("GET", `/api/v1/runs/${id}`)).json<Run>().status, {
          timeout: 10_000,
        })
        .toBe("succeeded");
      const read = () => a.call("GET", `/api/v1/runs/${id}/artifacts/content?path=out/c.svg`);
      expect((await read()).body).toBe("chart\n");
      expect((await t.call("GET", `/api/v1/runs/${id}/diff`)).statusCode).toBe(200);
      const orgId = (await t.store.db.selectFrom("runs").select("org_id").executeTakeFirstOrThrow())
        .org_id;
      const artifactDir = join(t.dataDir, "runs", orgId, id);
      const diffFile = join(t.dataDir, "run-diffs", orgId, `${id}.json`);
      expect(existsSync(artifactDir) && existsSync(diffFile)).toBe(true);

      // Two days on: within the org's ten days, nothing goes.
      now = new Date(Date.now() + 2 * DAY_MS);
      await new Promise((r) => setTimeout(r, 400));
      expect((await read()).statusCode).toBe(200);

      // The project keeps one day: the next sweep removes them, and records it once they are gone.
      await t.call("PUT", "/api/v1/projects/default/retention", { days: 1 });
      const expiries = async () =>
        (await a.call("GET", `/api/v1/runs/${id}/activity`))
          .json<{ items: ActivityEvent[] }>()
          .items.filter((e) => e.action === "run.retention.expire");
      await expect.poll(async () => (await expiries()).length, { timeout: 5000 }).toBe(1);
      expect((await t.call("GET", `/api/v1/runs/${id}`)).json<Run>().expiredAt).toBe(
        now.toISOString(),
      );
      for (const url of [
        `/api/v1/runs/${id}/artifacts/content?path=out/c.svg`,
        `/api/v1/runs/${id}/diff`,
        `/api/v1/runs/${id}/changes`,
      ]) {
        const gone = await t.call("GET", url);
        expect(gone.statusCode, url).toBe(410);
        expect(gone.json().error).toMatchObject({
          code: "artifact_expired",
          details: { expiredAt: now.toISOString() },
        });
      }
      expect(existsSync(artifactDir) || existsSync(diffFile)).toBe(false);
      // The record keeps the manifest with hashes; the history says what went and why.
      const run = (await t.call("GET", `/api/v1/runs/${id}`)).json<Run>();
      expect(run.artifacts.map((x) => x.path)).toEqual(["out/c.svg"]);
      const expire = await expiries();
      expect(expire[0]).toMatchObject({
        actor: { type: "system" },
        details: {
          retentionDays: 1,
          artifactsRemoved: 1,
          workspaceChangesRemoved: true,
          workspaceDiffRemoved: true,
        },
      });
      // Its evidence bundle still verifies: the hashes stay signed, and the removal is too.
      const bundle = (await t.call("GET", `/api/v1/runs/${id}/evidence`)).json<EvidenceBundle>();
      expect(bundle.workspaceChanges).toBeNull();
      expect(bundle.workspaceDiff).toBeNull();
      const verified = await verifyEvidenceBundle(sha256, bundle);
      expect(verified.problem).toBeNull();
      expect(verified.checked).toContain(
        "workspace changes removed by retention (a signed event records it)",
      );
      // A bundle that hides the removal event no longer verifies.
      const at = bundle.events.findIndex((e) => e.action === "run.retention.expire");
      bundle.events.splice(at, 1);
      bundle.proofs.splice(at, 1);
      expect((await verifyEvidenceBundle(sha256, bundle)).ok).toBe(false);
    });
  });
});
