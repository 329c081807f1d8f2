import type { Approval, PendingApproval, Run } from "@l1fe/shells";
import { openSqliteStore } from "@shells/server";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addKey, addPrincipal } from "../../apps/server/src/test-support/test-app.js";
import { cliAgainst } from "./cli-runner.js";
import { call, startTestServer, type TestServer } from "./harness.js";

// Withdrawing a pending approval through the real server and the CLI: only its requester can, the
// held action never runs (a run waiting for review ends cancelled), a later grant finds it closed;
// and what waited on a shell that is deleted closes with it.

let server: TestServer;
const work = mkdtempSync(join(tmpdir(), "shells-withdraw-"));
let approver: { url: string; token: string };
let foreigner: { url: string; token: string };

type ErrorAnswer = { error: { code: string } };

beforeAll(async () => {
  server = await startTestServer();
  const me = (await call<{ orgId: string }>(server, "GET", "/api/v1/me")).body;
  const member = await call<{ id: string }>(server, "POST", "/api/v1/members", {
    email: "withdraw-approver@example.com",
    role: "developer",
  });
  const store = await openSqliteStore(join(server.dataDir, "shells.db"));
  const scopes = ["shells:instances:read", "shells:instances:control"];
  const key = await addKey(store, {
    orgId: me.orgId,
    principal: { type: "user", id: member.body.id },
    scopes,
  });
  approver = { url: server.url, token: key.token };
  const other = await addPrincipal(store, { orgId: "org-elsewhere", role: "owner", scopes });
  foreigner = { url: server.url, token: other.token };
  await store.close();
  const policy = await call(server, "PATCH", "/api/v1/org/policy", {
    approvers: [member.body.id],
    approvalGates: { wipe_state: "approvers", stop: "approvers" },
  });
  expect(policy.status, JSON.stringify(policy.body)).toBe(200);
});
afterAll(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

async function shell(name: string): Promise<string> {
  const created = await call<{ id: string }>(server, "POST", "/api/v1/shells", {
    name,
    language: "bash",
  });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return created.body.id;
}

describe("withdrawing approvals", () => {
  it("only the requester withdraws; the action never runs and a later grant finds it closed", async () => {
    const shellId = await shell("withdraw-me");
    const asked = await call<PendingApproval>(
      server,
      "POST",
      `/api/v1/shells/${shellId}/actions/wipe_state`,
      {},
    );
    expect(asked.status).toBe(202);
    const path = `/api/v1/approvals/${asked.body.approval.id}/withdraw`;

    const byApprover = await call<ErrorAnswer>(approver, "POST", path, {});
    expect([byApprover.status, byApprover.body.error.code]).toEqual([403, "forbidden"]);
    const byForeigner = await call<ErrorAnswer>(foreigner, "POST", path, {});
    expect([byForeigner.status, byForeigner.body.error.code]).toEqual([404, "not_found"]);

    const withdrawn = await call<Approval>(server, "POST", path, { reason: "wrong shell" });
    expect(withdrawn.status, JSON.stringify(withdrawn.body)).toBe(200);
    expect(withdrawn.body).toMatchObject({ state: "withdrawn", reason: "wrong shell" });
    const again = await call<ErrorAnswer>(server, "POST", path, {});
    expect([again.status, again.body.error.code]).toEqual([409, "approval_closed"]);
    const grant = await call<ErrorAnswer>(
      approver,
      "POST",
      `/api/v1/approvals/${asked.body.approval.id}/grant`,
      { reason: "too late" },
    );
    expect([grant.status, grant.body.error.code]).toEqual([409, "approval_closed"]);

    const events = (
      await call<{ items: { action: string; outcome: string }[] }>(
        server,
        "GET",
        `/api/v1/activity?shell=${shellId}&limit=50`,
      )
    ).body.items.map((e) => `${e.action}:${e.outcome}`);
    expect(events).toEqual(
      expect.arrayContaining(["approval.withdraw:success", "approval.withdraw:denied"]),
    );
    expect(events).not.toContain("shell.action.wipe_state:success");
  });

  it("a run waiting for review ends cancelled when its requester withdraws it from the CLI", async () => {
    await call(server, "POST", "/api/v1/templates", {
      name: "needs-review",
      definition: { language: "bash", reviewBeforeRun: true },
    });
    const asked = await call<PendingApproval>(server, "POST", "/api/v1/runs", {
      template: "needs-review",
      command: ["echo", "never"],
    });
    expect(asked.status, JSON.stringify(asked.body)).toBe(202);
    const runId = asked.body.approval.shellId;

    const out = await cliAgainst(
      server,
      ["approvals", "withdraw", asked.body.approval.id, "--reason", "not needed"],
      work,
    );
    expect(out.exitCode, out.stderr).toBe(0);
    expect(out.stdout).toContain("withdrawn");
    const run = (await call<Run>(server, "GET", `/api/v1/runs/${runId}`)).body;
    expect(run.status).toBe("cancelled");
    expect(run.error).toMatch(/withdrawn by .* before review: not needed/);
    const history = (
      await call<{ items: { action: string }[] }>(server, "GET", `/api/v1/runs/${runId}/activity`)
    ).body.items.map((e) => e.action);
    expect(history).toEqual(expect.arrayContaining(["approval.withdraw", "run.finish"]));
    expect(history).not.toContain("run.start");
  });

  it("tearing down a run that waits for review closes its approval", async () => {
    const asked = await call<PendingApproval>(server, "POST", "/api/v1/runs", {
      template: "needs-review",
      command: ["echo", "never"],
    });
    expect(asked.status).toBe(202);
    const torn = await call<Run>(server, "DELETE", `/api/v1/runs/${asked.body.approval.shellId}`);
    expect(torn.body.status).toBe("cancelled");
    const approval = (
      await call<Approval>(server, "GET", `/api/v1/approvals/${asked.body.approval.id}`)
    ).body;
    expect(approval.state).toBe("withdrawn");
  });

  it("closes what waited on a shell once the shell is deleted", async () => {
    const shellId = await shell("deleted-while-waiting");
    const asked = await call<PendingApproval>(
      server,
      "POST",
      `/api/v1/shells/${shellId}/actions/stop`,
      {},
    );
    expect(asked.status).toBe(202);
    const deleted = await call(server, "DELETE", `/api/v1/shells/${shellId}`);
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(200);
    const approval = (
      await call<Approval>(server, "GET", `/api/v1/approvals/${asked.body.approval.id}`)
    ).body;
    expect(approval).toMatchObject({
      state: "withdrawn",
      reason: "the shell deleted-while-waiting was deleted",
    });
    const grant = await call<ErrorAnswer>(
      approver,
      "POST",
      `/api/v1/approvals/${asked.body.approval.id}/grant`,
      { reason: "late" },
    );
    expect(grant.body.error.code).toBe("approval_closed");
  });
});
