import { verifyActivityChain, type ActivityEvent, type Shell } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { CrashingSimulator } from "../test-support/crashing-simulator.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** A running shell, whose row is then set as a step cut by a crash would have left it. */
async function shellLeftAs(
  app: TestApp,
  fields: { status?: string; delete_requested_by?: string },
): Promise<Shell> {
  const shell = (await app.call("POST", "/api/v1/shells", { language: "bash" })).json<Shell>();
  await app.store.db.updateTable("shells").set(fields).where("id", "=", shell.id).execute();
  return shell;
}

/** Closes the app and starts it again over the same data dir and the same surviving sandboxes. */
async function restart(app: TestApp, backend: CrashingSimulator): Promise<TestApp> {
  const dataDir = app.dataDir;
  await app.close({ remove: false });
  return createTestApp({ dataDir, backends: [backend] });
}

async function reconcileEvents(app: TestApp, shellId: string): Promise<ActivityEvent[]> {
  const events = (await app.call("GET", `/api/v1/activity?shell=${shellId}&order=asc`)).json()
    .items as ActivityEvent[];
  return events.filter((e) => e.action === "shell.reconcile");
}

describe("reconciliation at start-up", () => {
  it("stops a sandbox still running for a shell the store says is stopped", async () => {
    const backend = new CrashingSimulator();
    const shell = await shellLeftAs((t = await createTestApp({ backends: [backend] })), {
      status: "stopped",
    });
    t = await restart(t, backend);
    expect((await t.call("GET", `/api/v1/shells/${shell.id}`)).json().status).toBe("stopped");
    expect(await backend.list()).toEqual([expect.objectContaining({ state: "stopped" })]);
    expect((await reconcileEvents(t, shell.id)).map((e) => e.details.result)).toEqual([
      "sandbox_stopped",
    ]);
  });

  it("reclaims the sandbox of a shell whose create never answered, and marks the shell error", async () => {
    const backend = new CrashingSimulator();
    const shell = await shellLeftAs((t = await createTestApp({ backends: [backend] })), {
      status: "provisioning",
    });
    t = await restart(t, backend);
    const after = (await t.call("GET", `/api/v1/shells/${shell.id}`)).json<Shell>();
    expect(after.status).toBe("error");
    expect(after.statusReason).toMatch(/provisioning was cut off.*restart the shell/);
    expect(await backend.list()).toEqual([]);
    const restarted = await t.call("POST", `/api/v1/shells/${shell.id}/actions/restart`);
    expect(restarted.json().shell.status).toBe("running");
  });

  it("marks a stopped shell whose sandbox is gone error, and restart provisions it", async () => {
    const shell = await shellLeftAs((t = await createTestApp()), { status: "stopped" });
    // A new simulator: every sandbox of the old one is gone, as with a host that lost its disks.
    t = await restart(t, new CrashingSimulator());
    const after = (await t.call("GET", `/api/v1/shells/${shell.id}`)).json<Shell>();
    expect(after.status).toBe("error");
    expect(after.statusReason).toMatch(/sandbox lost/);
    const restarted = await t.call("POST", `/api/v1/shells/${shell.id}/actions/restart`);
    expect(restarted.json().shell.status).toBe("running");
  });

  it("ends a run a dead process left running with host_restart, and deletes its shell", async () => {
    const backend = new CrashingSimulator();
    const shell = await shellLeftAs((t = await createTestApp({ backends: [backend] })), {
      status: "running",
    });
    const orgId = (await t.store.db.selectFrom("shells").select("org_id").executeTakeFirstOrThrow())
      .org_id;
    const runId = "run_cut_by_a_crash";
    await t.store.db
      .insertInto("runs")
      .values({
        id: runId,
        org_id: orgId,
        shell_id: shell.id,
        status: "running",
        language: "bash",
        runtime: "container",
        created_by_type: "user",
        created_by_id: "usr-runner",
        exit_code: null,
        kill_reason: null,
        result: null,
        artifacts: "[]",
        output_tail: null,
        workspace_changes: null,
        template: null,
        pending_request: null,
        error: null,
        created_at: new Date().toISOString(),
        finished_at: null,
      })
      .execute();
    t = await restart(t, backend);
    const run = (await t.call("GET", `/api/v1/runs/${runId}`)).json();
    expect(run).toMatchObject({ status: "failed", killReason: "host_restart" });
    expect(run.error).toMatch(/control plane stopped while the run was running/);
    expect((await t.call("GET", `/api/v1/shells/${shell.id}`)).json().status).toBe("deleted");
    expect(await backend.list()).toEqual([]);
    const events = (await t.call("GET", `/api/v1/activity?order=asc`)).json()
      .items as ActivityEvent[];
    expect(events.filter((e) => e.action === "run.finish" && e.target?.id === runId)).toHaveLength(
      1,
    );
    expect((await verifyActivityChain(events)).ok).toBe(true);
  });

  it("finishes a delete that began, in the caller's name, and the history still verifies", async () => {
    const backend = new CrashingSimulator();
    const shell = await shellLeftAs((t = await createTestApp({ backends: [backend] })), {
      delete_requested_by: "usr-asker",
    });
    t = await restart(t, backend);
    const after = (await t.call("GET", `/api/v1/shells/${shell.id}`)).json<Shell>();
    expect(after).toMatchObject({ status: "deleted", statusReason: "deleted by usr-asker" });
    expect(await backend.list()).toEqual([]);
    const events = (await t.call("GET", "/api/v1/activity?order=asc&limit=500")).json()
      .items as ActivityEvent[];
    expect(events.filter((e) => e.action === "shell.delete")).toEqual([
      expect.objectContaining({
        target: { type: "shell", id: shell.id },
        details: { name: shell.name, requestedBy: "usr-asker", finishedAfterRestart: true },
      }),
    ]);
    expect((await verifyActivityChain(events)).ok).toBe(true);
  });
});
