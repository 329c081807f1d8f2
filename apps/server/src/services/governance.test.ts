import type { ActivityEvent } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { CALLER_CACHE_TTL_MS } from "../iam/caller-cache.js";
import { lostStanding } from "../iam/standing.js";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";
import { describeEachStore } from "../test-support/test-stores.js";

let t: TestApp;
afterEach(async () => {
  await t?.close();
});

const ALL = [
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
];

async function orgId(): Promise<string> {
  return (await t.store.db.selectFrom("orgs").select("id").executeTakeFirstOrThrow()).id;
}

async function activity(): Promise<ActivityEvent[]> {
  return (await t.call("GET", "/api/v1/activity?order=asc&limit=500")).json().items;
}

describeEachStore((store) => {
  describe("the agent gate", () => {
    it("needs the entitlement AND the instance permission, and records each decision with its reason", async () => {
      t = await createTestApp({ openStore: store.open });
      const org = await orgId();
      const shell = (await t.call("POST", "/api/v1/shells", { language: "bash" })).json();
      const invoke = (token: string) =>
        t.call(
          "POST",
          "/api/agent/invoke",
          { tool: "shells_action", arguments: { shell: shell.id, capability: "wipe_state" } },
          { authorization: `Bearer ${token}` },
        );

      const entitledOnly = await addPrincipal(t.store, {
        orgId: org,
        role: "developer",
        type: "agent",
        scopes: ["shells:agent:invoke", "shells:instances:read"],
        entitlements: ["shells.agent.invoke"],
      });
      const permittedOnly = await addPrincipal(t.store, {
        orgId: org,
        role: "developer",
        type: "agent",
        scopes: ALL,
      });
      const both = await addPrincipal(t.store, {
        orgId: org,
        role: "developer",
        type: "agent",
        scopes: ALL,
        entitlements: ["shells.agent.invoke"],
      });

      const a = await invoke(entitledOnly.token);
      expect(a.statusCode).toBe(403);
      expect(a.json().error).toMatchObject({
        code: "forbidden",
        details: { missingScope: "shells:instances:control" },
      });
      const b = await invoke(permittedOnly.token);
      expect(b.statusCode).toBe(403);
      expect(b.json().error.code).toBe("entitlement_required");
      const c = await invoke(both.token);
      expect(c.statusCode, c.body).toBe(200);
      expect(c.json()).toMatchObject({
        tool: "shells_action",
        result: { capability: "wipe_state", message: "filesystem state destroyed, sandbox intact" },
      });

      const decisions = (await activity()).filter((e) => e.action === "agent.invoke");
      expect(decisions.map((d) => [d.actor.id, d.outcome, d.details.reason])).toEqual([
        [entitledOnly.id, "denied", "missing permission shells:instances:control"],
        [permittedOnly.id, "denied", "missing entitlement shells.agent.invoke"],
        [
          both.id,
          "success",
          "entitlement shells.agent.invoke and permission shells:instances:control",
        ],
      ]);
    });

    it("refuses a user key at the gate until the org grants that user the entitlement", async () => {
      t = await createTestApp({ openStore: store.open });
      const refused = await t.call("POST", "/api/agent/invoke", {
        tool: "shells_list",
        arguments: {},
      });
      expect(refused.json().error.code).toBe("entitlement_required");
      const me = (await t.call("GET", "/api/v1/me")).json();
      expect(
        (
          await t.call("POST", "/api/v1/entitlements", {
            entitlement: "shells.agent.invoke",
            principal: { type: "user", id: me.actor.id },
          })
        ).statusCode,
      ).toBe(201);
      const allowed = await t.call("POST", "/api/agent/invoke", {
        tool: "shells_list",
        arguments: {},
      });
      expect(allowed.statusCode).toBe(200);
      expect(allowed.json().result.items).toEqual([]);
    });
  });

  describe("approval gates", () => {
    it("parks wipe_state for a named approver, refuses a non-approver, runs it on the approver's grant, and records it all in order", async () => {
      t = await createTestApp({ openStore: store.open });
      const org = await orgId();
      const owner = (await t.call("GET", "/api/v1/me")).json().actor.id;
      const dev = await addPrincipal(t.store, { orgId: org, role: "developer", scopes: ALL });
      const admin = await addPrincipal(t.store, { orgId: org, role: "admin", scopes: ALL });
      expect(
        (
          await t.call("PATCH", "/api/v1/org/policy", {
            approvalGates: { wipe_state: "approvers" },
            approvers: [owner],
          })
        ).statusCode,
      ).toBe(200);
      const shell = (
        await t.call("POST", "/api/v1/shells", { language: "bash", name: "prod-db" })
      ).json();
      await t.call("POST", `/api/v1/shells/${shell.id}/exec`, {
        command: ["sh", "-c", "echo data > /workspace/f"],
      });

      const asDev = { authorization: `Bearer ${dev.token}` };
      const pending = await t.call(
        "POST",
        `/api/v1/shells/${shell.id}/actions/wipe_state`,
        {},
        asDev,
      );
      expect(pending.statusCode).toBe(202);
      const approval = pending.json().approval;
      expect(approval).toMatchObject({
        state: "pending",
        action: "wipe_state",
        requestedBy: { type: "user", id: dev.id },
      });
      expect(
        (
          await t.call("POST", `/api/v1/shells/${shell.id}/exec`, {
            command: ["cat", "/workspace/f"],
          })
        ).json().stdout,
      ).toBe("data\n");

      const byAdmin = await t.call(
        "POST",
        `/api/v1/approvals/${approval.id}/grant`,
        { reason: "looks fine" },
        { authorization: `Bearer ${admin.token}` },
      );
      expect(byAdmin.statusCode).toBe(403);
      const byRequester = await t.call(
        "POST",
        `/api/v1/approvals/${approval.id}/grant`,
        { reason: "self" },
        asDev,
      );
      expect(byRequester.statusCode).toBe(403);

      const granted = await t.call("POST", `/api/v1/approvals/${approval.id}/grant`, {
        reason: "planned reset",
      });
      expect(granted.statusCode, granted.body).toBe(200);
      expect(granted.json()).toMatchObject({
        state: "granted",
        decidedBy: owner,
        reason: "planned reset",
        outcome: "success",
      });
      expect(
        (
          await t.call("POST", `/api/v1/shells/${shell.id}/exec`, {
            command: ["cat", "/workspace/f"],
          })
        ).json().exitCode,
      ).not.toBe(0);
      expect(
        (await t.call("POST", `/api/v1/approvals/${approval.id}/grant`, { reason: "again" })).json()
          .error.code,
      ).toBe("approval_closed");

      const trail = (await activity())
        .filter(
          (e) =>
            e.target?.id === shell.id && /^(approval\.|shell\.action\.wipe_state)/.test(e.action),
        )
        .map((e) => [e.action, e.actor.id, e.outcome]);
      expect(trail).toEqual([
        ["approval.request", dev.id, "success"],
        ["approval.grant", admin.id, "denied"],
        ["approval.grant", dev.id, "denied"],
        ["approval.grant", owner, "success"],
        ["shell.action.wipe_state", dev.id, "success"],
      ]);
      const executed = (await activity()).find((e) => e.action === "shell.action.wipe_state");
      expect(executed?.details).toMatchObject({ approvalId: approval.id, approvedBy: owner });
    });

    it("with typed confirmation refuses a wrong or missing name and accepts the shell's name", async () => {
      t = await createTestApp({ openStore: store.open });
      await t.call("PATCH", "/api/v1/org/policy", {
        approvalGates: { stop: "confirm", delete: "confirm" },
      });
      const shell = (
        await t.call("POST", "/api/v1/shells", { language: "bash", name: "keep-me" })
      ).json();
      expect(
        (await t.call("POST", `/api/v1/shells/${shell.id}/actions/stop`, {})).json().error.code,
      ).toBe("confirmation_required");
      const wrong = await t.call("POST", `/api/v1/shells/${shell.id}/actions/stop`, {
        confirm: "keep-you",
      });
      expect(wrong.statusCode).toBe(428);
      expect((await t.call("GET", `/api/v1/shells/${shell.id}`)).json().status).toBe("running");
      expect(
        (
          await t.call("POST", `/api/v1/shells/${shell.id}/actions/stop`, { confirm: "keep-me" })
        ).json().shell.status,
      ).toBe("stopped");
      expect((await t.call("DELETE", `/api/v1/shells/${shell.id}`)).statusCode).toBe(428);
      expect(
        (await t.call("DELETE", `/api/v1/shells/${shell.id}?confirm=${shell.id}`)).json().status,
      ).toBe("deleted");
    });

    it("drops a removed member from the approvers, and policy updates keep working", async () => {
      t = await createTestApp({ openStore: store.open });
      const org = await orgId();
      const owner = (await t.call("GET", "/api/v1/me")).json().actor.id;
      const second = await addPrincipal(t.store, { orgId: org, role: "admin", scopes: ALL });
      await t.call("PATCH", "/api/v1/org/policy", {
        approvalGates: { wipe_state: "approvers" },
        approvers: [owner, second.id],
      });
      expect((await t.call("DELETE", `/api/v1/members/${second.id}`)).statusCode).toBe(200);
      expect((await t.call("GET", "/api/v1/org/policy")).json().approvers).toEqual([owner]);
      expect(
        (await t.call("PATCH", "/api/v1/org/policy", { termCredentialTtlSeconds: 600 })).statusCode,
      ).toBe(200);
      const lastOwner = await t.call("DELETE", `/api/v1/members/${owner}`);
      expect(lastOwner.statusCode).toBe(409);
      expect(lastOwner.json().error.code).toBe("last_owner");
    });
  });

  describe("org policy", () => {
    it("refuses a shell below the isolation floor and outside the allowed regions, and defaults to the floor", async () => {
      t = await createTestApp({ openStore: store.open, env: { SHELLS_REGION: "eu-west" } });
      await t.call("PATCH", "/api/v1/org/policy", {
        isolationFloor: "microvm",
        allowedRegions: ["eu-west"],
      });
      const below = await t.call("POST", "/api/v1/shells", {
        language: "go",
        runtime: "container",
        region: "eu-west",
      });
      expect(below.statusCode).toBe(422);
      expect(below.json().error).toMatchObject({
        code: "below_isolation_floor",
        details: { isolationFloor: "microvm" },
      });
      const elsewhere = await t.call("POST", "/api/v1/shells", {
        language: "go",
        region: "us-east",
      });
      expect(elsewhere.json().error.code).toBe("region_not_allowed");
      const ok = await t.call("POST", "/api/v1/shells", { language: "go", region: "eu-west" });
      expect(ok.json()).toMatchObject({ runtime: "microvm", region: "eu-west" });
    });

    it("keeps the org's last owner", async () => {
      t = await createTestApp({ openStore: store.open });
      const owner = (await t.call("GET", "/api/v1/me")).json().actor.id;
      const res = await t.call("PATCH", `/api/v1/members/${owner}`, { role: "admin" });
      expect(res.statusCode).toBe(409);
      expect(res.json().error.code).toBe("last_owner");
    });
  });

  describe("keys", () => {
    it("cannot mint more than the minter holds, shows the secret once, and stops working when revoked", async () => {
      t = await createTestApp({ openStore: store.open });
      const org = await orgId();
      const reader = await addPrincipal(t.store, {
        orgId: org,
        role: "developer",
        scopes: ["shells:instances:read", "shells:instances:control"],
      });
      const escalate = await t.call(
        "POST",
        "/api/v1/keys",
        { name: "more", scopes: ["shells:instances:create"] },
        { authorization: `Bearer ${reader.token}` },
      );
      expect(escalate.statusCode).toBe(403);
      const created = await t.call("POST", "/api/v1/keys", {
        name: "ci",
        scopes: ["shells:instances:read"],
      });
      expect(created.statusCode).toBe(201);
      const { key, token } = created.json();
      expect((await t.call("GET", "/api/v1/keys")).body).not.toContain(token);
      expect(
        (await t.call("GET", "/api/v1/me", undefined, { authorization: `Bearer ${token}` })).json()
          .scopes,
      ).toEqual(["shells:instances:read"]);
      await t.call("DELETE", `/api/v1/keys/${key.id}`);
      expect(
        (await t.call("GET", "/api/v1/me", undefined, { authorization: `Bearer ${token}` }))
          .statusCode,
      ).toBe(401);
      expect(JSON.stringify(await activity())).not.toContain(token);
    });

    it("refuses a key past its expiry as it refuses a revoked one, and never mints one already expired", async () => {
      t = await createTestApp({ openStore: store.open });
      const past = await t.call("POST", "/api/v1/keys", {
        name: "stale",
        scopes: ["shells:instances:read"],
        expiresAt: new Date(Date.now() - 1000).toISOString(),
      });
      expect(past.statusCode).toBe(400);
      expect(past.json().error.code).toBe("validation_failed");

      const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
      const created = await t.call("POST", "/api/v1/keys", {
        name: "hour",
        scopes: ["shells:instances:read"],
        expiresAt,
      });
      expect(created.statusCode).toBe(201);
      const { key, token } = created.json();
      expect(key.expiresAt).toBe(expiresAt);
      const listed = (await t.call("GET", "/api/v1/keys")).json().items;
      expect(listed.find((k: { id: string }) => k.id === key.id).expiresAt).toBe(expiresAt);
      const as = { authorization: `Bearer ${token}` };
      expect((await t.call("GET", "/api/v1/me", undefined, as)).statusCode).toBe(200);
      const holder = { orgId: await orgId(), actor: key.principal, keyId: key.id };
      expect(await lostStanding(t.store.db, holder, "shells:instances:read")).toBeNull();

      // The hour passes.
      await t.store.db
        .updateTable("api_keys")
        .set({ expires_at: new Date(Date.now() - 1).toISOString() })
        .where("id", "=", key.id)
        .execute();
      // Changed in the store behind the server's back: its verified callers are reused for at
      // most CALLER_CACHE_TTL_MS, so the refusal comes within that.
      const changedAt = Date.now();
      await expect
        .poll(async () => (await t!.call("GET", "/api/v1/me", undefined, as)).statusCode, {
          interval: 20,
        })
        .toBe(401);
      expect(Date.now() - changedAt).toBeLessThan(CALLER_CACHE_TTL_MS + 500);
      const refused = await t.call("GET", "/api/v1/me", undefined, as);
      expect(refused.json().error.message).toContain("the API key expired");
      expect(await lostStanding(t.store.db, holder, "shells:instances:read")).toBe(
        "the API key behind it expired",
      );
      const creation = (await activity()).find(
        (event) => event.action === "iam.key.create" && event.target?.id === key.id,
      );
      expect(creation?.details).toMatchObject({ expiresAt });
    });

    it("narrows a viewer's key to read whatever scopes it carries, through REST and the gate alike", async () => {
      t = await createTestApp({ openStore: store.open });
      const org = await orgId();
      const shell = (await t.call("POST", "/api/v1/shells", { language: "bash" })).json();
      const viewer = await addPrincipal(t.store, {
        orgId: org,
        role: "viewer",
        scopes: ALL,
        entitlements: ["shells.agent.invoke"],
      });
      const as = { authorization: `Bearer ${viewer.token}` };
      expect((await t.call("GET", `/api/v1/shells/${shell.id}`, undefined, as)).statusCode).toBe(
        200,
      );
      expect((await t.call("POST", "/api/v1/shells", { language: "bash" }, as)).statusCode).toBe(
        403,
      );
      expect(
        (await t.call("POST", `/api/v1/shells/${shell.id}/exec`, { command: ["true"] }, as))
          .statusCode,
      ).toBe(403);
      expect(
        (await t.call("POST", `/api/v1/shells/${shell.id}/actions/restart`, {}, as)).statusCode,
      ).toBe(403);
      expect(
        (
          await t.call(
            "POST",
            "/api/agent/invoke",
            { tool: "shells_exec", arguments: { shell: shell.id, command: ["true"] } },
            as,
          )
        ).statusCode,
      ).toBe(403);
      expect(
        (
          await t.call(
            "POST",
            "/api/agent/invoke",
            { tool: "shells_create", arguments: { language: "bash" } },
            as,
          )
        ).statusCode,
      ).toBe(403);
    });
  });
});
