import type { ProjectEgress, Shell } from "@shells/contract";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { getThroughProxy, proxySocketOf, RoutingSimulator } from "../test-support/egress-link.js";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";

// A project's egress rules through the API, and through the egress proxy of the project's
// running shells (the control plane's real proxy; the simulator's sandboxes stay sealed).

const ALL = [
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
];

let t: TestApp | undefined;
let upstream: Server;
let upstreamPort = 0;

beforeAll(async () => {
  upstream = createServer((req, res) => res.end(`hello ${req.url}`));
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

async function orgOf(app: TestApp): Promise<string> {
  return (await app.call("GET", "/api/v1/me")).json().orgId as string;
}

describe("a project's egress rules", () => {
  it("are kept as given (repeats dropped), answered to members, and each change is recorded", async () => {
    t = await createTestApp();
    const empty = await t.call("GET", "/api/v1/projects/default/egress");
    expect(empty.statusCode, empty.body).toBe(200);
    expect(empty.json<ProjectEgress>()).toEqual({
      project: "default",
      rules: {},
      updatedAt: null,
      updatedBy: null,
    });
    const rules = {
      denyHosts: ["*.example.net", "*.example.net"],
      allowCidrs: ["10.1.0.0/16"],
      denyPorts: [25],
    };
    const set = await t.call("PUT", "/api/v1/projects/default/egress", { rules });
    expect(set.statusCode, set.body).toBe(200);
    const me = (await t.call("GET", "/api/v1/me")).json();
    expect(set.json<ProjectEgress>()).toMatchObject({
      project: "default",
      rules: { denyHosts: ["*.example.net"], allowCidrs: ["10.1.0.0/16"], denyPorts: [25] },
      updatedBy: me.actor,
    });
    const viewer = await addPrincipal(t.store, {
      orgId: await orgOf(t),
      role: "viewer",
      scopes: ["shells:instances:read"],
    });
    const read = await t.app.inject({
      method: "GET",
      url: "/api/v1/projects/default/egress",
      headers: { authorization: `Bearer ${viewer.token}` },
    });
    expect(read.json<ProjectEgress>().rules).toEqual(set.json<ProjectEgress>().rules);

    const removed = await t.call("PUT", "/api/v1/projects/default/egress", { rules: {} });
    expect(removed.json<ProjectEgress>()).toMatchObject({ rules: {}, updatedAt: null });
    expect((await t.call("GET", "/api/v1/projects/default/egress")).json().rules).toEqual({});

    const history = (
      await t.call("GET", "/api/v1/activity?action=project.egress.update&order=asc&limit=10")
    ).json().items as { details: { project: string; from: unknown; to: unknown } }[];
    expect(history.map((e) => e.details)).toEqual([
      { project: "default", from: {}, to: set.json<ProjectEgress>().rules, widens: [] },
      {
        project: "default",
        from: set.json<ProjectEgress>().rules,
        to: {},
        // Removing the rules widens (ungated here: the org's gate is `none`).
        widens: ["allowCidrs: restriction lifted", "denyHosts - *.example.net", "denyPorts - 25"],
      },
    ]);
  });

  it("refuses bad rules, unknown projects, other orgs and non-admins with stable codes", async () => {
    t = await createTestApp();
    for (const [rules, code] of [
      [{ denyCidrs: ["10.0.0.0/33"] }, "validation_failed"],
      [{ allowHosts: ["exa mple.com"] }, "validation_failed"],
      [{ allowPorts: [0] }, "validation_failed"],
      [{ denyPorts: [70000] }, "validation_failed"],
      [{ maxBytes: 10 }, "validation_failed"],
    ] as const) {
      const res = await t.call("PUT", "/api/v1/projects/default/egress", { rules });
      expect(res.statusCode, JSON.stringify(rules)).toBe(400);
      expect(res.json().error.code, JSON.stringify(rules)).toBe(code);
    }
    const missing = await t.call("PUT", "/api/v1/projects/nowhere/egress", { rules: {} });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.code).toBe("project_not_found");
    expect((await t.call("POST", "/api/v1/projects", { name: "research" })).statusCode).toBe(201);

    // Another org's admin: our project is not found; their own "default" is theirs alone.
    const other = await addPrincipal(t.store, { orgId: "org-other", role: "admin", scopes: ALL });
    const asOther = (method: "GET" | "PUT", url: string, body?: unknown) =>
      t!.app.inject({
        method,
        url,
        headers: {
          authorization: `Bearer ${other.token}`,
          ...(body ? { "content-type": "application/json" } : {}),
        },
        ...(body ? { payload: JSON.stringify(body) } : {}),
      });
    expect((await asOther("GET", "/api/v1/projects/research/egress")).statusCode).toBe(404);
    expect(
      (await asOther("PUT", "/api/v1/projects/default/egress", { rules: { denyPorts: [22] } }))
        .statusCode,
    ).toBe(200);
    expect((await t.call("GET", "/api/v1/projects/default/egress")).json().rules).toEqual({});

    const developer = await addPrincipal(t.store, {
      orgId: await orgOf(t),
      role: "developer",
      scopes: ALL,
    });
    const refused = await t.app.inject({
      method: "PUT",
      url: "/api/v1/projects/research/egress",
      headers: { authorization: `Bearer ${developer.token}`, "content-type": "application/json" },
      payload: JSON.stringify({ rules: { denyPorts: [22] } }),
    });
    expect(refused.statusCode).toBe(403);
  });

  it("apply to the project's running internet shells from their next request, and no shell allowlist widens them", async () => {
    t = await createTestApp({ backends: [new RoutingSimulator()] });
    // The org opens the host's loopback, where the upstream listens.
    const opened = await t.call("PATCH", "/api/v1/org/policy", {
      egress: { allowCidrs: ["127.0.0.1/32"] },
    });
    expect(opened.statusCode, opened.body).toBe(200);
    expect((await t.call("POST", "/api/v1/projects", { name: "locked" })).statusCode).toBe(201);
    const create = async (project: string) => {
      const res = await t!.call("POST", "/api/v1/shells", {
        language: "bash",
        project,
        egress: { mode: "allowlist", allow: ["127.0.0.1/32"] },
      });
      expect(res.statusCode, res.body).toBe(201);
      return res.json<Shell>();
    };
    const locked = await create("locked");
    const other = await create("default");
    const url = `http://127.0.0.1:${upstreamPort}/data`;
    const through = (shell: Shell) => getThroughProxy(proxySocketOf(t!.dataDir, shell.id), url);
    expect(await through(locked)).toEqual({ status: 200, body: "hello /data" });

    const denied = await t.call("PUT", "/api/v1/projects/locked/egress", {
      rules: { denyCidrs: ["127.0.0.0/8"] },
    });
    expect(denied.statusCode, denied.body).toBe(200);
    expect(await through(locked)).toEqual({ status: 403, body: "egress denied: address_denied\n" });
    expect((await through(other)).status).toBe(200); // another project's shell is untouched

    // The shell's own allowlist names the address; the project still refuses it.
    const widened = await t.call("PATCH", `/api/v1/shells/${locked.id}/egress`, {
      egress: { mode: "allowlist", allow: ["127.0.0.1/32", "0.0.0.0/0"] },
    });
    expect(widened.statusCode, widened.body).toBe(200);
    expect((await through(locked)).status).toBe(403);

    // A project's allowCidrs keeps open only what it names of the org's ranges.
    await t.call("PUT", "/api/v1/projects/locked/egress", { rules: { allowCidrs: [] } });
    expect(await through(locked)).toEqual({
      status: 403,
      body: "egress denied: address_not_public\n",
    });
    await t.call("PUT", "/api/v1/projects/locked/egress", { rules: {} });
    expect((await through(locked)).status).toBe(200);

    const events = (
      await t.call("GET", `/api/v1/activity?shell=${locked.id}&action=egress.denied&limit=20`)
    ).json().items as { details: { reason: string } }[];
    expect(events.map((e) => e.details.reason)).toEqual(
      expect.arrayContaining(["address_denied", "address_not_public"]),
    );
  });
});
