import { afterEach, describe, expect, it } from "vitest";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";
import { mintApiKey } from "./tokens.js";

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

/** An org whose `wipe_state` waits for one of `approvers`, and a shell in it. */
async function gatedOrg(approvers: string[]) {
  const policy = await t.call("PATCH", "/api/v1/org/policy", {
    approvers,
    approvalGates: { wipe_state: "approvers" },
  });
  expect(policy.statusCode, policy.body).toBe(200);
  return (await t.call("POST", "/api/v1/shells", { language: "bash" })).json().id as string;
}

async function requestWipe(shellId: string, token: string): Promise<string> {
  const pending = await t.call(
    "POST",
    `/api/v1/shells/${shellId}/actions/wipe_state`,
    {},
    { authorization: `Bearer ${token}` },
  );
  expect(pending.statusCode, pending.body).toBe(202);
  return pending.json().approval.id as string;
}

function grant(approvalId: string, token: string) {
  return t.call(
    "POST",
    `/api/v1/approvals/${approvalId}/grant`,
    { reason: "looks fine" },
    { authorization: `Bearer ${token}` },
  );
}

describe("separation of duties on approvals", () => {
  it("refuses a requester who grants their own request through an agent they created and keyed, and lets an independent approver grant it", async () => {
    t = await createTestApp();
    const org = (await t.call("GET", "/api/v1/me")).json().orgId as string;
    const requester = await addPrincipal(t.store, { orgId: org, role: "admin", scopes: ALL });
    const independent = await addPrincipal(t.store, { orgId: org, role: "admin", scopes: ALL });
    const shellId = await gatedOrg([requester.id, independent.id]);
    const asRequester = { authorization: `Bearer ${requester.token}` };

    // The requester makes an agent, keys it and has it entitled: the agent is theirs to drive.
    const agent = (await t.call("POST", "/api/v1/agents", { name: "helper" }, asRequester)).json();
    const key = await t.call(
      "POST",
      "/api/v1/keys",
      { name: "helper", scopes: ALL, principal: { type: "agent", id: agent.id } },
      asRequester,
    );
    expect(key.statusCode, key.body).toBe(201);
    await t.call("POST", "/api/v1/entitlements", {
      entitlement: "shells.agent.invoke",
      principal: { type: "agent", id: agent.id },
    });
    const approvalId = await requestWipe(shellId, key.json().token as string);

    const laundered = await grant(approvalId, requester.token);
    expect(laundered.statusCode, laundered.body).toBe(403);
    expect(laundered.json().error).toMatchObject({
      code: "separation_of_duties",
      details: { reason: "the approver controls the agent that made the request" },
    });
    expect((await t.call("GET", `/api/v1/approvals/${approvalId}`)).json().state).toBe("pending");

    const granted = await grant(approvalId, independent.token);
    expect(granted.statusCode, granted.body).toBe(200);
    expect(granted.json().state).toBe("granted");
  });

  it("refuses a grant made with an approver's key that the requester minted", async () => {
    t = await createTestApp();
    const org = (await t.call("GET", "/api/v1/me")).json().orgId as string;
    const requester = await addPrincipal(t.store, { orgId: org, role: "admin", scopes: ALL });
    const approver = await addPrincipal(t.store, { orgId: org, role: "admin", scopes: ALL });
    const shellId = await gatedOrg([approver.id]);
    // A key for the approver that the requester minted (the API no longer mints these; a store
    // from before that rule may still hold one).
    const minted = mintApiKey();
    await t.store.db
      .insertInto("api_keys")
      .values({
        id: minted.keyId,
        org_id: org,
        principal_type: "user",
        principal_id: approver.id,
        name: "for the approver",
        key_hash: minted.keyHash,
        scopes: JSON.stringify(ALL),
        created_at: new Date().toISOString(),
        revoked_at: null,
        last_used_at: null,
        created_by_type: "user",
        created_by_id: requester.id,
      })
      .execute();
    const approvalId = await requestWipe(shellId, requester.token);

    const laundered = await grant(approvalId, minted.token);
    expect(laundered.statusCode, laundered.body).toBe(403);
    expect(laundered.json().error.code).toBe("separation_of_duties");

    const own = await grant(approvalId, requester.token);
    expect(own.statusCode).toBe(403);

    const granted = await grant(approvalId, approver.token);
    expect(granted.statusCode, granted.body).toBe(200);
  });

  it("refuses a requester deciding their own request", async () => {
    t = await createTestApp();
    const org = (await t.call("GET", "/api/v1/me")).json().orgId as string;
    const requester = await addPrincipal(t.store, { orgId: org, role: "admin", scopes: ALL });
    const shellId = await gatedOrg([requester.id]);
    const approvalId = await requestWipe(shellId, requester.token);
    const own = await grant(approvalId, requester.token);
    expect(own.statusCode).toBe(403);
    expect(own.json().error).toMatchObject({
      code: "separation_of_duties",
      details: { reason: "approvers cannot decide their own request" },
    });
  });
});
