import type { RateCard, Shell, UsageReport } from "@shells/contract";
import { SimulatorBackend } from "@shells/sandbox";
import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("GET /api/v1/usage", () => {
  it("reports seconds per state and cost by class and project, as JSON and as CSV", async () => {
    t = await createTestApp();
    const created = Date.now();
    const a = (await t.call("POST", "/api/v1/shells", { language: "bash" })).json<Shell>();
    await t.call("POST", "/api/v1/shells", { language: "python", runtime: "wasm" });
    await sleep(600);
    await t.call("POST", `/api/v1/shells/${a.id}/actions/stop`, {});
    await sleep(300);
    const res = await t.call("GET", "/api/v1/usage?groupBy=class,project");
    expect(res.statusCode, res.body).toBe(200);
    const report = res.json<UsageReport>();
    const elapsed = (Date.now() - created) / 1000;
    expect(report.groupBy).toEqual(["class", "project"]);
    expect(report.rows.map((r) => [r.runtime, r.project])).toEqual([
      ["container", "default"],
      ["wasm", "default"],
    ]);
    const container = report.rows[0]!;
    expect(container.seconds.running).toBeGreaterThan(0.5);
    expect(container.seconds.running + container.seconds.stopped).toBeLessThanOrEqual(elapsed);
    expect(container.seconds.stopped).toBeGreaterThan(0.2);
    expect(report.total.seconds.running).toBeCloseTo(
      report.rows[0]!.seconds.running + report.rows[1]!.seconds.running,
      3,
    );
    expect(report.currency).toBe("USD");

    const csv = await t.call("GET", "/api/v1/usage?groupBy=class", undefined, {
      accept: "text/csv",
    });
    expect(csv.statusCode).toBe(200);
    expect(csv.headers["content-type"]).toMatch(/^text\/csv/);
    const lines = csv.body.trimEnd().split("\r\n");
    expect(lines[0]).toMatch(/^runtime,provisioning_seconds,running_seconds,/);
    expect(lines.slice(1).map((l) => l.split(",")[0])).toEqual(["container", "wasm", "total"]);
    const byFormat = await t.call("GET", "/api/v1/usage?format=csv");
    expect(byFormat.headers["content-type"]).toMatch(/^text\/csv/);
    const json = await t.call("GET", "/api/v1/usage?format=json", undefined, {
      accept: "text/csv",
    });
    expect(json.json<UsageReport>().groupBy).toEqual([]);
  });

  it("filters by shell, actor and class, and refuses ranges and groupings that make no sense", async () => {
    t = await createTestApp();
    const a = (await t.call("POST", "/api/v1/shells", { language: "bash" })).json<Shell>();
    await t.call("POST", "/api/v1/shells", { language: "bash" });
    await sleep(200);
    const byShell = (
      await t.call("GET", `/api/v1/usage?shell=${a.id}&groupBy=shell,actor`)
    ).json<UsageReport>();
    expect(byShell.rows).toHaveLength(1);
    expect(byShell.rows[0]).toMatchObject({ shell: a.id, actor: expect.stringMatching(/^usr/) });
    const nobody = (await t.call("GET", "/api/v1/usage?actor=usr-nobody")).json<UsageReport>();
    expect(nobody.total.seconds.running).toBe(0);
    const microvm = (await t.call("GET", "/api/v1/usage?runtime=microvm")).json<UsageReport>();
    expect(microvm.rows).toEqual([]);

    for (const [query, code] of [
      ["from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "validation_failed"],
      ["groupBy=hour,day", "validation_failed"],
      ["groupBy=weekday", "validation_failed"],
      ["project=nowhere", "project_not_found"],
    ] as const) {
      const res = await t.call("GET", `/api/v1/usage?${query}`);
      expect(res.json().error.code, query).toBe(code);
      expect(res.statusCode).toBeLessThan(500);
    }
  });

  it("keeps counting a shell whose sandbox runs on across a restart of the control plane, once", async () => {
    const backend = new SimulatorBackend();
    t = await createTestApp({ backends: [backend], meteringIntervalMs: 100 });
    const created = Date.now();
    const shell = (await t.call("POST", "/api/v1/shells", { language: "bash" })).json<Shell>();
    await sleep(700);
    const dataDir = t.dataDir;
    await t.close({ remove: false });
    // Down for longer than the tolerance below: losing the downtime would fail the test.
    await sleep(1_500);
    t = await createTestApp({ dataDir, backends: [backend], meteringIntervalMs: 100 });
    await sleep(500);
    const report = (await t.call("GET", `/api/v1/usage?shell=${shell.id}`)).json<UsageReport>();
    const truth = (Date.now() - created) / 1000;
    const metered = report.total.seconds.running + report.total.seconds.provisioning;
    expect(metered).toBeLessThanOrEqual(truth);
    expect(metered).toBeGreaterThan(truth - 1);
  });
});

describe("rates", () => {
  it("are read by everyone, changed by admins from now on, and recorded", async () => {
    t = await createTestApp();
    const before = (await t.call("GET", "/api/v1/usage/rates")).json<RateCard>();
    expect(before).toMatchObject({
      currency: "USD",
      effectiveAt: null,
      classes: { wasm: { runningPerHour: "0.01" }, container: { runningPerHour: "0.04" } },
    });
    const wasm = Number(before.classes.wasm.runningPerHour);
    const container = Number(before.classes.container.runningPerHour);
    const microvm = Number(before.classes.microvm.runningPerHour);
    expect(wasm).toBeLessThan(container);
    expect(container).toBeLessThan(microvm);
    const changed = await t.call("PUT", "/api/v1/usage/rates", {
      currency: "EUR",
      classes: { microvm: { stoppedPerHour: "0.5" } },
    });
    expect(changed.statusCode, changed.body).toBe(200);
    expect(changed.json<RateCard>()).toMatchObject({
      currency: "EUR",
      classes: { microvm: { stoppedPerHour: "0.50", runningPerHour: "0.08" } },
      effectiveAt: expect.any(String),
    });
    const bad = await t.call("PUT", "/api/v1/usage/rates", {
      classes: { container: { runningPerHour: "0.1234567" } },
    });
    expect(bad.statusCode).toBe(400);
    const [event] = (await t.call("GET", "/api/v1/activity?action=usage.rates.update")).json<{
      items: { details: { to: RateCard } }[];
    }>().items;
    expect(event?.details.to.currency).toBe("EUR");
  });
});
