import type { ActivityEvent, CapStatus, ExecResult, Shell } from "@shells/contract";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

let t: TestApp;

beforeEach(async () => {
  // Checkpoints and cap sweeps every 100 ms, so a cap is enforced within a fraction of a second.
  t = await createTestApp({ meteringIntervalMs: 100 });
});
afterEach(async () => {
  await t.close();
});

async function createShell(body: Record<string, unknown> = {}) {
  return t.call("POST", "/api/v1/shells", { language: "bash", ...body });
}

async function setCaps(caps: unknown[], project = "default") {
  const res = await t.call("PUT", `/api/v1/projects/${project}/caps`, { caps });
  expect(res.statusCode, res.body).toBe(200);
  return res.json<{ items: CapStatus[] }>().items;
}

async function events(action: string): Promise<ActivityEvent[]> {
  return (await t.call("GET", `/api/v1/activity?action=${action}&order=asc&limit=100`)).json<{
    items: ActivityEvent[];
  }>().items;
}

describe("project caps", () => {
  it("refuse a create over the concurrent-shells cap with quota_exceeded naming the cap and its use, per class", async () => {
    await setCaps([{ metric: "concurrent_shells", limit: 1, runtime: "container" }]);
    expect((await createShell()).statusCode).toBe(201);
    const refused = await createShell();
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error).toMatchObject({
      code: "quota_exceeded",
      message: expect.stringMatching(/concurrent_shells.*1 of 1 shells/),
      details: {
        quota: "concurrent_shells",
        project: "default",
        cap: { metric: "concurrent_shells", limit: 1, runtime: "container" },
        used: 1,
        limit: 1,
      },
    });
    // The cap counts container shells only.
    expect((await createShell({ runtime: "wasm", language: "python" })).statusCode).toBe(201);
    expect((await events("shell.create")).at(-2)).toMatchObject({
      outcome: "denied",
      details: { quota: "concurrent_shells" },
    });
    const [status] = (await t.call("GET", "/api/v1/caps")).json<{ items: CapStatus[] }>().items;
    expect(status).toMatchObject({ used: 1, percent: 100, state: "reached" });
  });

  it("stop running shells with kill reason quota when a period cap is reached, warn at 80 % first, and refuse the next create and start", async () => {
    await setCaps([{ metric: "running_seconds", period: "day", limit: 1 }]);
    const shell = (await createShell()).json<Shell>();
    const exec = await t.call("POST", `/api/v1/shells/${shell.id}/exec`, {
      command: ["sleep", "30"],
    });
    const result = exec.json<ExecResult>();
    // Ended by the cap (after 1 s of running time), not by the end of its 30 s sleep.
    expect(result.killReason).toBe("quota");
    // The exec ends as the stop kills its processes; the stop is recorded right after.
    await expect
      .poll(async () => (await t.call("GET", `/api/v1/shells/${shell.id}`)).json<Shell>())
      .toMatchObject({ status: "stopped", statusReason: expect.stringMatching(/^quota: /) });

    const [warning] = await events("quota.warning");
    const [reached] = await events("quota.reached");
    const [stop] = await events("quota.stopped");
    expect(warning).toMatchObject({
      actor: { type: "system" },
      target: { type: "project" },
      details: { cap: { metric: "running_seconds", period: "day", limit: 1 } },
    });
    expect(warning!.seq).toBeLessThan(reached!.seq);
    expect(reached!.details).toMatchObject({ stopping: [shell.id] });
    expect(stop).toMatchObject({ target: { type: "shell", id: shell.id } });
    expect(
      (await events("shell.action.stop")).find((e) => e.target?.id === shell.id)?.details,
    ).toMatchObject({ reason: "quota" });

    const refused = await createShell();
    expect(refused.statusCode).toBe(409);
    expect(refused.json().error.details).toMatchObject({ quota: "running_seconds" });
    expect(refused.json().error.details.used).toBeGreaterThanOrEqual(1);
    const start = await t.call("POST", `/api/v1/shells/${shell.id}/actions/start`, {});
    expect(start.statusCode).toBe(409);
    expect(start.json().error.code).toBe("quota_exceeded");

    // Raised once per period, however many sweeps run.
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(await events("quota.warning")).toHaveLength(1);
    expect(await events("quota.reached")).toHaveLength(1);
  });

  it("cap a class's cost without touching other classes", async () => {
    // 0.00002 at the wasm default of 0.01 per hour is 7.2 s of running time.
    await setCaps([{ metric: "cost", period: "month", limit: "0.00002", runtime: "wasm" }]);
    const wasm = (await createShell({ runtime: "wasm", language: "python" })).json<Shell>();
    const container = (await createShell()).json<Shell>();
    await expect
      .poll(async () => (await t.call("GET", `/api/v1/shells/${wasm.id}`)).json<Shell>().status, {
        timeout: 12_000,
        interval: 200,
      })
      .toBe("stopped");
    expect((await t.call("GET", `/api/v1/shells/${container.id}`)).json<Shell>().status).toBe(
      "running",
    );
    const [status] = (await t.call("GET", "/api/v1/caps?project=default")).json<{
      items: CapStatus[];
    }>().items;
    expect(status).toMatchObject({ state: "reached", cap: { limit: "0.00002" } });
    expect(status!.used).toMatch(/^0\.0000[2-9]\d?$/);
  }, 20_000);

  it("refuse two caps of one kind, an unknown project, and answer the caps set", async () => {
    const twice = await t.call("PUT", "/api/v1/projects/default/caps", {
      caps: [
        { metric: "concurrent_shells", limit: 1 },
        { metric: "concurrent_shells", limit: 2 },
      ],
    });
    expect(twice.statusCode).toBe(400);
    expect(twice.json().error.code).toBe("validation_failed");
    const unknown = await t.call("PUT", "/api/v1/projects/nowhere/caps", { caps: [] });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().error.code).toBe("project_not_found");
    const set = await setCaps([
      { metric: "concurrent_shells", limit: 5 },
      { metric: "running_seconds", period: "month", limit: 3600, runtime: "microvm" },
    ]);
    expect(set.map((s) => [s.cap.metric, s.state, s.used])).toEqual([
      ["concurrent_shells", "ok", 0],
      ["running_seconds", "ok", 0],
    ]);
    expect(set[1]).toMatchObject({ periodStart: expect.stringMatching(/-01T00:00:00.000Z$/) });
    expect(await setCaps([])).toEqual([]);
  });
});
