import type { Shell } from "@shells/contract";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { getThroughProxy, proxySocketOf, RoutingSimulator } from "../test-support/egress-link.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

// The egress service as the control plane runs it: a real proxy per internet shell, its rules
// read from the org, the project, the template version and the shell, and its byte budget ending
// in a stop with kill reason `egress_limit`. The simulator's sandboxes stay sealed; the tests speak
// to each shell's proxy as its forwarder would.

let t: TestApp | undefined;
let upstream: Server;
let upstreamPort = 0;

beforeAll(async () => {
  upstream = createServer((req, res) => res.end(req.url === "/big" ? "x".repeat(8192) : "small"));
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  upstreamPort = (upstream.address() as AddressInfo).port;
});
afterAll(() => {
  upstream.close();
});
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function internetApp(
  egress: Record<string, unknown> = {},
  egressTestHosts?: Record<string, string[]>,
): Promise<TestApp> {
  const app = await createTestApp({
    backends: [new RoutingSimulator()],
    ...(egressTestHosts ? { egressTestHosts } : {}),
  });
  const opened = await app.call("PATCH", "/api/v1/org/policy", {
    egress: { allowCidrs: ["127.0.0.1/32"], ...egress },
  });
  expect(opened.statusCode, opened.body).toBe(200);
  return app;
}

describe("the egress service", () => {
  it("keeps a template version's egress rules for every shell made from it, whatever the request asks", async () => {
    t = await internetApp();
    const template = await t.call("POST", "/api/v1/templates", {
      name: "no-ssh",
      definition: {
        language: "bash",
        network: "internet",
        egressRules: { denyPorts: [22, upstreamPort] },
      },
    });
    expect(template.statusCode, template.body).toBe(201);
    const made = async (body: Record<string, unknown>) => {
      const res = await t!.call("POST", "/api/v1/shells", body);
      expect(res.statusCode, res.body).toBe(201);
      return res.json<Shell>();
    };
    // The request brings its own allowlist naming the upstream: the template's rules still hold.
    const fromTemplate = await made({
      template: "no-ssh",
      egress: { mode: "allowlist", allow: ["127.0.0.1/32"] },
    });
    const plain = await made({ language: "bash", network: "internet" });
    const url = `http://127.0.0.1:${upstreamPort}/`;
    expect(await getThroughProxy(proxySocketOf(t.dataDir, fromTemplate.id), url)).toEqual({
      status: 403,
      body: "egress denied: port_denied\n",
    });
    expect(await getThroughProxy(proxySocketOf(t.dataDir, plain.id), url)).toEqual({
      status: 200,
      body: "small",
    });
    // A fork is made from the same version, rules included.
    const forked = await t.call("POST", `/api/v1/shells/${fromTemplate.id}/fork`, { count: 1 });
    expect(forked.statusCode, forked.body).toBe(201);
    const child = forked.json<{ shells: Shell[] }>().shells[0] as Shell;
    expect((await getThroughProxy(proxySocketOf(t.dataDir, child.id), url)).status).toBe(403);
  });

  it("refuses what a shell's deny lists name, at create and after a change to its allowlist; a deny dropped is a widening", async () => {
    t = await internetApp({}, { "api.test": ["127.0.0.1"], "admin.api.test": ["127.0.0.1"] });
    const created = await t.call("POST", "/api/v1/shells", {
      language: "bash",
      egress: {
        mode: "allowlist",
        allow: ["api.test", "*.api.test"],
        deny: { hosts: ["admin.api.test"] },
      },
    });
    expect(created.statusCode, created.body).toBe(201);
    const shell = created.json<Shell>();
    expect(shell.egress).toEqual({
      mode: "allowlist",
      allow: ["api.test", "*.api.test"],
      deny: { hosts: ["admin.api.test"] },
    });
    const socketPath = proxySocketOf(t.dataDir, shell.id);
    const api = `http://api.test:${upstreamPort}/`;
    expect(await getThroughProxy(socketPath, api)).toEqual({ status: 200, body: "small" });
    expect(await getThroughProxy(socketPath, `http://admin.api.test:${upstreamPort}/`)).toEqual({
      status: 403,
      body: "egress denied: host_denied\n",
    });

    // Denying the upstream's port too narrows: applied at once, recorded as no widening.
    const narrowed = await t.call("PATCH", `/api/v1/shells/${shell.id}/egress`, {
      egress: {
        mode: "allowlist",
        allow: ["api.test", "*.api.test"],
        deny: { hosts: ["admin.api.test"], ports: [upstreamPort] },
      },
    });
    expect(narrowed.statusCode, narrowed.body).toBe(200);
    expect(await getThroughProxy(socketPath, api)).toEqual({
      status: 403,
      body: "egress denied: port_denied\n",
    });
    // Dropping the denies again is a widening (the org does not gate it here, so it applies).
    const dropped = await t.call("PATCH", `/api/v1/shells/${shell.id}/egress`, {
      egress: { mode: "allowlist", allow: ["api.test", "*.api.test"] },
    });
    expect(dropped.statusCode, dropped.body).toBe(200);
    expect(await getThroughProxy(socketPath, api)).toEqual({ status: 200, body: "small" });
    const changes = (
      await t.call(
        "GET",
        `/api/v1/activity?shell=${shell.id}&action=shell.action.egress_change&limit=10`,
      )
    ).json().items as { details: { widening: boolean } }[];
    expect(changes.map((c) => c.details.widening).sort()).toEqual([false, true]);

    const bad = await t.call("POST", "/api/v1/shells", {
      language: "bash",
      egress: { mode: "allowlist", allow: ["api.test"], deny: { ports: [0], hosts: ["a b"] } },
    });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error.code).toBe("validation_failed");
  });

  it("refuses a template whose egress rules are malformed, with a stable code", async () => {
    t = await internetApp();
    const res = await t.call("POST", "/api/v1/templates", {
      name: "broken",
      definition: { language: "bash", egressRules: { allowCidrs: ["10.0.0.0/40"] } },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.code).toBe("validation_failed");
  });

  it("stops a shell that passes its org's byte budget with kill reason egress_limit, once, and refuses its requests after", async () => {
    t = await internetApp({ maxBytes: 4096 });
    const res = await t.call("POST", "/api/v1/shells", { language: "bash", network: "internet" });
    expect(res.statusCode, res.body).toBe(201);
    const shell = res.json<Shell>();
    const socketPath = proxySocketOf(t.dataDir, shell.id);
    const url = `http://127.0.0.1:${upstreamPort}/big`;
    expect((await getThroughProxy(socketPath, url)).status).toBe(200); // 8 KiB: over the budget
    await expect
      .poll(async () => (await t!.call("GET", `/api/v1/shells/${shell.id}`)).json<Shell>(), {
        timeout: 5_000,
        interval: 100,
      })
      .toMatchObject({ status: "stopped", statusReason: expect.stringMatching(/^egress_limit: /) });
    expect(await getThroughProxy(socketPath, url)).toEqual({
      status: 403,
      body: "egress denied: egress_limit\n",
    });
    const stops = (
      await t.call("GET", `/api/v1/activity?shell=${shell.id}&action=shell.action.stop&limit=10`)
    ).json().items as { actor: { type: string }; details: Record<string, unknown> }[];
    expect(stops).toHaveLength(1);
    expect(stops[0]).toMatchObject({
      actor: { type: "system" },
      details: { reason: "egress_limit", maxBytes: 4096 },
    });
    expect(stops[0]?.details.bytes).toBeGreaterThan(4096);
    const logs = await t.call("POST", `/api/v1/shells/${shell.id}/actions/logs`, {});
    expect(logs.body).toContain("stopped (kill reason egress_limit)");
  });
});
