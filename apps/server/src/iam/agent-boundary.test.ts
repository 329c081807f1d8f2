import type { ActivityEvent } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";

const ALL = [
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
];

let t: TestApp;

afterEach(async () => {
  await t?.close();
});

async function orgOf(app: TestApp): Promise<string> {
  return (await app.call("GET", "/api/v1/me")).json().orgId as string;
}

async function events(app: TestApp): Promise<ActivityEvent[]> {
  return (await app.call("GET", "/api/v1/activity?order=asc&limit=500")).json().items;
}

/** Every door an agent's key could use to act on a shell, as `[operation, request]`. */
function doors(shellId: string): [string, (token: string) => ReturnType<TestApp["call"]>][] {
  const as = (token: string) => ({ authorization: `Bearer ${token}` });
  return [
    ["createShell", (k) => t.call("POST", "/api/v1/shells", { language: "bash" }, as(k))],
    [
      "execInShell",
      (k) => t.call("POST", `/api/v1/shells/${shellId}/exec`, { command: ["id"] }, as(k)),
    ],
    ["mintTermCredential", (k) => t.call("POST", `/api/v1/shells/${shellId}/term`, {}, as(k))],
    [
      "listFiles",
      (k) => t.call("GET", `/api/v1/shells/${shellId}/files?path=/workspace`, undefined, as(k)),
    ],
    [
      "createRun",
      (k) => t.call("POST", "/api/v1/runs", { language: "bash", command: ["true"] }, as(k)),
    ],
    [
      "runInterpreter",
      (k) =>
        t.call(
          "POST",
          `/api/v1/shells/${shellId}/interpreter`,
          { code: "1", language: "python" },
          as(k),
        ),
    ],
    [
      "mcp",
      (k) =>
        t.app.inject({
          method: "POST",
          url: "/mcp",
          headers: {
            ...as(k),
            host: "127.0.0.1",
            "content-type": "application/json",
            accept: "application/json, text/event-stream",
          },
          payload: {
            jsonrpc: "2.0",
            id: 1,
            method: "tools/call",
            params: { name: "shells_exec", arguments: { shell: shellId, command: ["id"] } },
          },
        }),
    ],
  ];
}

describe("an agent's key at every door", () => {
  it("is refused everywhere without the entitlement, however broad its scopes, and each refusal names the operation", async () => {
    t = await createTestApp();
    const org = await orgOf(t);
    const shell = (await t.call("POST", "/api/v1/shells", { language: "bash" })).json();
    const agent = await addPrincipal(t.store, {
      orgId: org,
      role: "developer",
      type: "agent",
      scopes: ALL,
    });
    const before = (await t.call("GET", "/api/v1/shells")).json().items.length;

    for (const [operation, request] of doors(shell.id)) {
      const res = await request(agent.token);
      if (operation === "mcp") {
        expect(res.statusCode, res.body).toBe(200);
        expect(res.body).toContain("entitlement_required");
        expect(res.json().result.isError).toBe(true);
        continue;
      }
      expect(res.statusCode, `${operation}: ${res.body}`).toBe(403);
      expect(res.json().error).toMatchObject({
        code: "entitlement_required",
        details: { entitlement: "shells.agent.invoke" },
      });
    }

    // Nothing happened: no shell was created, no exec ran, no credential was minted.
    expect((await t.call("GET", "/api/v1/shells")).json().items).toHaveLength(before);
    const history = await events(t);
    const byAgent = history.filter((e) => e.actor.id === agent.id);
    expect(byAgent.filter((e) => e.outcome !== "denied")).toEqual([]);
    const denied = byAgent
      .filter((e) => e.action === "auth.denied")
      .map((e) => e.details["operation"]);
    expect(denied).toEqual(
      expect.arrayContaining([
        "createShell",
        "execInShell",
        "mintTermCredential",
        "listFiles",
        "createRun",
        "runInterpreter",
        "agent:shells_exec",
      ]),
    );
    expect(
      history.some(
        (e) =>
          e.action === "agent.invoke" &&
          e.actor.id === agent.id &&
          e.details["reason"] === "missing entitlement shells.agent.invoke",
      ),
    ).toBe(true);

    // It may still learn who it is, and that it lacks the grant.
    const me = await t.call("GET", "/api/v1/me", undefined, {
      authorization: `Bearer ${agent.token}`,
    });
    expect(me.statusCode).toBe(200);
    expect(me.json()).toMatchObject({ actor: { type: "agent", id: agent.id }, entitlements: [] });
  });

  it("acts through every door once entitled, and every act is recorded as the agent's", async () => {
    t = await createTestApp();
    const org = await orgOf(t);
    const shell = (await t.call("POST", "/api/v1/shells", { language: "bash" })).json();
    const agent = await addPrincipal(t.store, {
      orgId: org,
      role: "developer",
      type: "agent",
      scopes: ALL,
      entitlements: ["shells.agent.invoke"],
    });
    for (const [operation, request] of doors(shell.id)) {
      const res = await request(agent.token);
      expect(res.statusCode, `${operation}: ${res.body}`).toBeLessThan(300);
      expect(res.body).not.toContain("entitlement_required");
    }
    const history = await events(t);
    for (const action of ["shell.create", "shell.exec", "shell.term.mint"]) {
      const event = history.find((e) => e.action === action && e.actor.id === agent.id);
      expect(event, action).toBeDefined();
      expect(event?.actor).toMatchObject({ type: "agent", id: agent.id, keyId: agent.keyId });
    }
  });
});

describe("minting API keys", () => {
  it("refuses an admin a key for another member, the owner included, and lets them key an agent", async () => {
    t = await createTestApp();
    const org = await orgOf(t);
    const owner = (await t.call("GET", "/api/v1/me")).json().actor.id as string;
    const admin = await addPrincipal(t.store, { orgId: org, role: "admin", scopes: ALL });
    const asAdmin = (method: string, url: string, body?: unknown) =>
      t.call(method, url, body, { authorization: `Bearer ${admin.token}` });

    const forOwner = await asAdmin("POST", "/api/v1/keys", {
      name: "as the owner",
      scopes: ["shells:instances:control"],
      principal: { type: "user", id: owner },
    });
    expect(forOwner.statusCode, forOwner.body).toBe(403);
    expect(forOwner.json().error.code).toBe("forbidden");
    expect(forOwner.body).not.toContain("shk_");

    const member = (
      await t.call("POST", "/api/v1/members", { email: "m@example.com", role: "developer" })
    ).json();
    const forMember = await asAdmin("POST", "/api/v1/keys", {
      name: "as a member",
      scopes: ["shells:instances:read"],
      principal: { type: "user", id: member.id },
    });
    expect(forMember.statusCode).toBe(403);

    const agent = (await asAdmin("POST", "/api/v1/agents", { name: "ci" })).json();
    const forAgent = await asAdmin("POST", "/api/v1/keys", {
      name: "ci key",
      scopes: ["shells:instances:read"],
      principal: { type: "agent", id: agent.id },
    });
    expect(forAgent.statusCode, forAgent.body).toBe(201);
    expect(forAgent.json().key.createdBy).toEqual({ type: "user", id: admin.id });

    const own = await asAdmin("POST", "/api/v1/keys", {
      name: "mine",
      scopes: ["shells:instances:read"],
    });
    expect(own.statusCode).toBe(201);

    const listed = (await t.call("GET", "/api/v1/keys")).json().items as {
      id: string;
      createdBy: unknown;
    }[];
    expect(listed.find((k) => k.id === forAgent.json().key.id)?.createdBy).toEqual({
      type: "user",
      id: admin.id,
    });
    // No key acting as the owner or the member was made.
    expect(
      listed.filter((k) => k.id !== own.json().key.id && k.id !== forAgent.json().key.id),
    ).toHaveLength(2);
  });
});
