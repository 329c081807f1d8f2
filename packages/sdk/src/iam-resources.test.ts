import type { Approval, PendingApproval, Shell } from "@shells/contract";
import { describe, expect, it } from "vitest";
import { ShellsClient, isPendingApproval } from "./index.js";

interface SeenRequest {
  method: string;
  url: string;
  body: unknown;
}

/** A client whose `fetch` records each request and answers `answer` (HTTP `status`). */
function recordingClient(
  answer: unknown = { items: [] },
  status = 200,
): { client: ShellsClient; seen: SeenRequest[] } {
  const seen: SeenRequest[] = [];
  const client = new ShellsClient({
    baseUrl: "http://shells.test",
    token: "tok",
    fetch: async (input, init) => {
      const request = new Request(input, init);
      const text = await request.text();
      seen.push({
        method: request.method,
        url: request.url.replace("http://shells.test", ""),
        body: text === "" ? undefined : JSON.parse(text),
      });
      return new Response(JSON.stringify(answer), {
        status,
        headers: { "content-type": "application/json" },
      });
    },
  });
  return { client, seen };
}

const approval: Approval = {
  id: "apr-1",
  shellId: "sh-1",
  action: "wipe_state",
  state: "pending",
  requestedBy: { type: "user", id: "usr-dev" },
  decidedBy: null,
  reason: null,
  outcome: null,
  createdAt: "2025-06-01T12:00:00.000Z",
  expiresAt: "2025-06-02T12:00:00.000Z",
  decidedAt: null,
};

const pending: PendingApproval = {
  status: "pending_approval",
  message: "wipe_state on demo waits for an approver",
  approval,
};

describe("the client's IAM namespaces", () => {
  it.each<[string, (client: ShellsClient) => Promise<unknown>, Omit<SeenRequest, "body">, unknown]>(
    [
      [
        "members.list",
        (c) => c.members.list(),
        { method: "GET", url: "/api/v1/members" },
        undefined,
      ],
      [
        "members.create",
        (c) => c.members.create({ email: "a@example.com", role: "developer" }),
        { method: "POST", url: "/api/v1/members" },
        { email: "a@example.com", role: "developer" },
      ],
      [
        "members.update",
        (c) => c.members.update("usr-1", { disabled: true }),
        { method: "PATCH", url: "/api/v1/members/usr-1" },
        { disabled: true },
      ],
      [
        "members.remove",
        (c) => c.members.remove("usr-1"),
        { method: "DELETE", url: "/api/v1/members/usr-1" },
        undefined,
      ],
      [
        "projects.getEgress",
        (c) => c.projects.getEgress("research"),
        { method: "GET", url: "/api/v1/projects/research/egress" },
        undefined,
      ],
      [
        "projects.setEgress",
        (c) => c.projects.setEgress("research", { denyHosts: ["*.example.net"], denyPorts: [25] }),
        { method: "PUT", url: "/api/v1/projects/research/egress" },
        { rules: { denyHosts: ["*.example.net"], denyPorts: [25] } },
      ],
      [
        "agents.create",
        (c) => c.agents.create({ name: "ci-bot" }),
        { method: "POST", url: "/api/v1/agents" },
        { name: "ci-bot" },
      ],
      [
        "agents.remove",
        (c) => c.agents.remove("agt-1"),
        { method: "DELETE", url: "/api/v1/agents/agt-1" },
        undefined,
      ],
      [
        "keys.create",
        (c) =>
          c.keys.create({
            name: "ci",
            scopes: ["shells:agent:invoke"],
            principal: { type: "agent", id: "agt-1" },
          }),
        { method: "POST", url: "/api/v1/keys" },
        { name: "ci", scopes: ["shells:agent:invoke"], principal: { type: "agent", id: "agt-1" } },
      ],
      [
        "keys.revoke",
        (c) => c.keys.revoke("key-1"),
        { method: "DELETE", url: "/api/v1/keys/key-1" },
        undefined,
      ],
      [
        "entitlements.grant",
        (c) =>
          c.entitlements.grant({
            entitlement: "shells.agent.invoke",
            principal: { type: "agent", id: "agt-1" },
          }),
        { method: "POST", url: "/api/v1/entitlements" },
        { entitlement: "shells.agent.invoke", principal: { type: "agent", id: "agt-1" } },
      ],
      [
        "entitlements.revoke",
        (c) => c.entitlements.revoke("ent-1"),
        { method: "DELETE", url: "/api/v1/entitlements/ent-1" },
        undefined,
      ],
      [
        "bindings.list",
        (c) => c.bindings.list(),
        { method: "GET", url: "/api/v1/bindings" },
        undefined,
      ],
      [
        "bindings.create",
        (c) =>
          c.bindings.create({
            name: "github",
            upstream: "https://api.github.com",
            inject: "Authorization: Bearer {secret}",
            secret: "ghp_example",
          }),
        { method: "POST", url: "/api/v1/bindings" },
        {
          name: "github",
          upstream: "https://api.github.com",
          inject: "Authorization: Bearer {secret}",
          secret: "ghp_example",
        },
      ],
      [
        "bindings.rotate",
        (c) => c.bindings.rotate("github", { secret: "ghp_rotated" }),
        { method: "POST", url: "/api/v1/bindings/github/rotate" },
        { secret: "ghp_rotated" },
      ],
      [
        "bindings.remove",
        (c) => c.bindings.remove("github"),
        { method: "DELETE", url: "/api/v1/bindings/github" },
        undefined,
      ],
      [
        "projects.create",
        (c) => c.projects.create({ name: "research" }),
        { method: "POST", url: "/api/v1/projects" },
        { name: "research" },
      ],
      [
        "policy.get",
        (c) => c.policy.get(),
        { method: "GET", url: "/api/v1/org/policy" },
        undefined,
      ],
      [
        "policy.update",
        (c) =>
          c.policy.update({ approvalGates: { wipe_state: "approvers" }, approvers: ["usr-1"] }),
        { method: "PATCH", url: "/api/v1/org/policy" },
        { approvalGates: { wipe_state: "approvers" }, approvers: ["usr-1"] },
      ],
      [
        "approvals.list",
        (c) => c.approvals.list({ state: "pending" }),
        { method: "GET", url: "/api/v1/approvals?state=pending" },
        undefined,
      ],
      [
        "approvals.get",
        (c) => c.approvals.get("apr-1"),
        { method: "GET", url: "/api/v1/approvals/apr-1" },
        undefined,
      ],
      [
        "approvals.grant",
        (c) => c.approvals.grant("apr-1", { reason: "planned" }),
        { method: "POST", url: "/api/v1/approvals/apr-1/grant" },
        { reason: "planned" },
      ],
      [
        "approvals.deny",
        (c) => c.approvals.deny("apr-1", { reason: "not now" }),
        { method: "POST", url: "/api/v1/approvals/apr-1/deny" },
        { reason: "not now" },
      ],
      [
        "invoke",
        (c) => c.invoke("shells_exec", { shell: "sh-1", command: ["ls"] }),
        { method: "POST", url: "/api/agent/invoke" },
        { tool: "shells_exec", arguments: { shell: "sh-1", command: ["ls"] } },
      ],
    ],
  )("sends %s to its route with the REST body", async (_name, call, route, body) => {
    const { client, seen } = recordingClient();
    await call(client);
    expect(seen).toEqual([{ ...route, body }]);
  });

  it("answers list routes with their items", async () => {
    const { client } = recordingClient({ items: [approval] });
    expect(await client.approvals.list()).toEqual([approval]);
  });

  it("escapes ids so they cannot reach another route", async () => {
    const { client, seen } = recordingClient({});
    await client.keys.revoke("../members");
    expect(seen[0]?.url).toBe("/api/v1/keys/..%2Fmembers");
  });
});

describe("pending approvals", () => {
  it("answers a gated action parked for an approver (HTTP 202) with the pending approval", async () => {
    const { client } = recordingClient(pending, 202);
    const outcome = await client.action("sh-1", "wipe_state", { confirm: "demo" });
    expect(isPendingApproval(outcome)).toBe(true);
    expect(outcome).toEqual(pending);
  });

  it("answers a delete parked for an approver with the pending approval", async () => {
    const { client, seen } = recordingClient(pending, 202);
    const outcome = await client.delete("sh-1", { confirm: "sh-1" });
    expect(isPendingApproval(outcome) && outcome.approval.id).toBe("apr-1");
    expect(seen[0]?.url).toBe("/api/v1/shells/sh-1?confirm=sh-1");
  });

  it("tells a pending approval apart from a shell, an action result and non-objects", () => {
    const shell = { id: "sh-1", status: "running" } as Shell;
    expect(isPendingApproval(pending)).toBe(true);
    expect(isPendingApproval(shell)).toBe(false);
    expect(isPendingApproval({ capability: "stop", message: "stopped", shell })).toBe(false);
    expect(isPendingApproval(null)).toBe(false);
    expect(isPendingApproval("pending_approval")).toBe(false);
  });
});
