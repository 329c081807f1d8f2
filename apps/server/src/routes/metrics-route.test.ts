import { afterEach, describe, expect, it } from "vitest";
import { parsePrometheusText, sumSamples } from "../test-support/prometheus-text.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

const METRICS_TOKEN = "metrics-token-0123456789";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function scrape(app: TestApp) {
  const res = await app.app.inject({
    method: "GET",
    url: "/metrics",
    headers: { authorization: `Bearer ${METRICS_TOKEN}` },
  });
  expect(res.statusCode, res.body).toBe(200);
  expect(res.headers["content-type"]).toMatch(/^text\/plain; version=0\.0\.4/);
  return parsePrometheusText(res.body);
}

describe("/metrics", () => {
  it("parses as Prometheus text and moves as shells are created, exec'd, killed and deleted", async () => {
    t = await createTestApp({ env: { SHELLS_METRICS_TOKEN: METRICS_TOKEN } });
    const before = await scrape(t);
    expect(before.get("shells_shells")?.type).toBe("gauge");
    expect(before.get("shells_shell_create_duration_seconds")?.type).toBe("histogram");
    expect(sumSamples(before, "shells_shells", { status: "running" })).toBe(0);

    const created: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await t.call("POST", "/api/v1/shells", { language: "bash" });
      expect(res.statusCode, res.body).toBe(201);
      created.push(res.json().id as string);
    }
    const [first, second] = created as [string, string];
    const killed = await t.call("POST", `/api/v1/shells/${first}/exec`, {
      command: ["sleep", "5"],
      timeoutMs: 50,
    });
    expect(killed.json().killReason).toBe("wall_clock");
    const ok = await t.call("POST", `/api/v1/shells/${first}/exec`, { command: ["true"] });
    expect(ok.statusCode).toBe(200);
    await t.call("DELETE", `/api/v1/shells/${second}`);

    const after = await scrape(t);
    const running = { status: "running", runtime: "container", region: "local" };
    expect(sumSamples(after, "shells_shells", running)).toBe(1);
    expect(sumSamples(after, "shells_shells", { status: "deleted" })).toBe(1);
    expect(
      sumSamples(after, "shells_shell_create_duration_seconds_count", { outcome: "success" }),
    ).toBe(2);
    expect(sumSamples(after, "shells_exec_duration_seconds_count")).toBe(2);
    expect(sumSamples(after, "shells_exec_kills_total", { reason: "wall_clock" })).toBe(1);
    expect(
      sumSamples(after, "shells_http_request_duration_seconds_count", {
        method: "POST",
        route: "/api/v1/shells/:id/exec",
        status: "200",
      }),
    ).toBe(2);
    // Routes are labelled by pattern: no series names a shell id.
    const routes = after
      .get("shells_http_request_duration_seconds")!
      .samples.map((s) => s.labels.route ?? "");
    expect(routes.some((route) => route.includes(first))).toBe(false);
    expect(sumSamples(after, "shells_approvals_pending")).toBe(0);
    expect(after.has("process_cpu_seconds_total")).toBe(true);
  });

  it("counts pending approvals while they wait", async () => {
    t = await createTestApp({ env: { SHELLS_METRICS_TOKEN: METRICS_TOKEN } });
    const owner = (await t.call("GET", "/api/v1/me")).json().actor.id as string;
    const policy = await t.call("PATCH", "/api/v1/org/policy", {
      approvers: [owner],
      approvalGates: { stop: "approvers" },
    });
    expect(policy.statusCode, policy.body).toBe(200);
    const shell = (await t.call("POST", "/api/v1/shells", { language: "bash" })).json().id;
    const pending = await t.call("POST", `/api/v1/shells/${shell}/actions/stop`, {});
    expect(pending.statusCode, pending.body).toBe(202);
    expect(sumSamples(await scrape(t), "shells_approvals_pending")).toBe(1);
  });

  it("is served only to the configured token, and not at all without one", async () => {
    t = await createTestApp({ env: { SHELLS_METRICS_TOKEN: METRICS_TOKEN } });
    for (const authorization of [undefined, `Bearer ${t.token}`, "Bearer wrong-token-000000000"]) {
      const res = await t.app.inject({
        method: "GET",
        url: "/metrics",
        headers: authorization ? { authorization } : {},
      });
      expect(res.statusCode, authorization).toBe(401);
      expect(res.json().error.code).toBe("unauthenticated");
      expect(res.headers["www-authenticate"]).toBe('Bearer realm="shells"');
    }
    await t.close();

    t = await createTestApp();
    const off = await t.app.inject({
      method: "GET",
      url: "/metrics",
      headers: { authorization: `Bearer ${t.token}` },
    });
    expect(off.statusCode).toBe(404);
    expect(off.json().error.code).toBe("route_not_found");
    expect(off.json().error.message).toContain("SHELLS_METRICS_TOKEN");
  });
});

describe("the test's Prometheus text parser", () => {
  it("refuses what a Prometheus server would refuse", () => {
    const bad = [
      "x 1\n", // no TYPE
      "# TYPE x counter\nx{a=b} 1\n", // unquoted label value
      "# TYPE x counter\nx one\n", // bad value
      "# TYPE x counter\nx 1\nx 2\n", // series twice
      "# TYPE x counter\nx -1\n", // negative counter
      '# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_count 1\nh_sum 0\n',
      '# TYPE h histogram\nh_bucket{le="1"} 1\nh_count 1\nh_sum 0\n', // no +Inf
      "# TYPE x gauge\nx 1", // no final newline
      "# TYPE x gauge\n# TYPE y gauge\ny 1\nx 2\n", // split family
    ];
    for (const text of bad) expect(() => parsePrometheusText(text), text).toThrow();
    const good = parsePrometheusText(
      '# HELP h help\n# TYPE h histogram\nh_bucket{le="0.5",a="x\\"y"} 1\nh_bucket{le="+Inf",a="x\\"y"} 2\nh_sum{a="x\\"y"} 3\nh_count{a="x\\"y"} 2\n',
    );
    expect(sumSamples(good, "h_count", { a: 'x"y' })).toBe(2);
  });
});
