import type { Approval, PendingApproval, ProjectEgress, Run } from "@l1fe/shells";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";
import { addApprover, call, startTestServer, type TestServer } from "./harness.js";

// Approvals with context for widening steps, through the real server on real container shells:
// widening a project's egress rules and granting service bindings from a template that asks
// review of them wait for an approver, with who asks, what, the policy that asks, and the diff;
// the change applies once granted and is recorded.

let server: TestServer;
let approver: { url: string; token: string; id: string };

type ErrorAnswer = { error: { code: string } };

beforeAll(async () => {
  server = await startTestServer({ backend: "container" });
  approver = await addApprover(server, "context-approver@example.com", {
    project_egress_change: "approvers",
  });
}, 120_000);
afterAll(async () => {
  await server?.close();
});

describe("approvals with context for widening", () => {
  it("a widening of a project's egress rules waits with its diff; narrowing does not", async () => {
    const path = "/api/v1/projects/default/egress";
    const narrowed = await call<ProjectEgress>(server, "PUT", path, {
      rules: { allowHosts: ["a.example"], denyPorts: [25, 587] },
    });
    expect(narrowed.status, JSON.stringify(narrowed.body)).toBe(200);

    const asked = await call<PendingApproval>(server, "PUT", path, {
      rules: { allowHosts: ["a.example", "b.example"], denyPorts: [25] },
    });
    expect(asked.status, JSON.stringify(asked.body)).toBe(202);
    const me = (await call<{ actor: { id: string } }>(server, "GET", "/api/v1/me")).body;
    expect(asked.body.approval).toMatchObject({
      action: "project_egress_change",
      state: "pending",
      requestedBy: { type: "user", id: me.actor.id },
      context: {
        summary: "widen the egress rules of project default",
        policy: "org policy: approvalGates.project_egress_change is approvers",
        diff: {
          subject: "project egress",
          before: { allowHosts: ["a.example"], denyPorts: [25, 587] },
          after: { allowHosts: ["a.example", "b.example"], denyPorts: [25] },
          widens: ["allowHosts + b.example", "denyPorts - 587"],
          narrows: [],
        },
      },
    });
    // Nothing changed yet.
    expect((await call<ProjectEgress>(server, "GET", path)).body.rules).toEqual({
      allowHosts: ["a.example"],
      denyPorts: [25, 587],
    });

    const granted = await call<Approval>(
      approver,
      "POST",
      `/api/v1/approvals/${asked.body.approval.id}/grant`,
      { reason: "b.example is the new mirror" },
    );
    expect(granted.body).toMatchObject({ state: "granted", outcome: "success" });
    expect((await call<ProjectEgress>(server, "GET", path)).body.rules).toEqual({
      allowHosts: ["a.example", "b.example"],
      denyPorts: [25],
    });
    const updates = (
      await call<{ items: { details: Record<string, unknown> }[] }>(
        server,
        "GET",
        "/api/v1/activity?action=project.egress.update&limit=10",
      )
    ).body.items;
    expect(updates[0]?.details).toMatchObject({
      approvalId: asked.body.approval.id,
      approvedBy: approver.id,
      widens: ["allowHosts + b.example", "denyPorts - 587"],
    });

    // Under typed confirmation a widening needs the project's name.
    await call(server, "PATCH", "/api/v1/org/policy", {
      approvalGates: { project_egress_change: "confirm" },
    });
    const unconfirmed = await call<ErrorAnswer>(server, "PUT", path, { rules: {} });
    expect([unconfirmed.status, unconfirmed.body.error.code]).toEqual([
      428,
      "confirmation_required",
    ]);
    const confirmed = await call<ProjectEgress>(server, "PUT", path, {
      rules: {},
      confirm: "default",
    });
    expect([confirmed.status, confirmed.body.rules]).toEqual([200, {}]);
  }, 60_000);

  it.runIf(hostReport.available)(
    "a run granted bindings by a template that asks review of them waits, then runs once granted",
    async () => {
      const binding = await call(server, "POST", "/api/v1/bindings", {
        name: "payments",
        upstream: "https://api.example.com",
        inject: "Authorization: Bearer {secret}",
        secret: "context-test-secret",
      });
      expect(binding.status, JSON.stringify(binding.body)).toBe(201);
      const template = await call(server, "POST", "/api/v1/templates", {
        name: "with-payments",
        definition: { language: "bash", bindings: ["payments"], reviewBindings: true },
      });
      expect(template.status, JSON.stringify(template.body)).toBe(201);

      // A shell waits for an approver too, with the same context.
      const shell = await call<PendingApproval>(server, "POST", "/api/v1/shells", {
        template: "with-payments",
      });
      expect(shell.status, JSON.stringify(shell.body)).toBe(202);
      expect(shell.body.approval).toMatchObject({
        action: "shell_create",
        context: { bindings: ["payments"], template: "with-payments@1" },
      });

      const asked = await call<PendingApproval>(server, "POST", "/api/v1/runs", {
        template: "with-payments",
        command: ["sh", "-c", "echo bound"],
      });
      expect(asked.status, JSON.stringify(asked.body)).toBe(202);
      expect(asked.body.approval).toMatchObject({
        action: "run",
        context: {
          summary: "grant service bindings payments to a run",
          policy: "template with-payments@1 requires review of binding grants",
          bindings: ["payments"],
          template: "with-payments@1",
        },
      });
      expect(JSON.stringify(asked.body)).not.toContain("context-test-secret");
      const runId = asked.body.approval.shellId;

      const granted = await call<Approval>(
        approver,
        "POST",
        `/api/v1/approvals/${asked.body.approval.id}/grant`,
        { reason: "payments are in scope" },
      );
      expect(granted.body, JSON.stringify(granted.body)).toMatchObject({
        state: "granted",
        outcome: "success",
      });
      await expect
        .poll(async () => (await call<Run>(server, "GET", `/api/v1/runs/${runId}`)).body.status, {
          timeout: 60_000,
        })
        .toBe("succeeded");
      const run = (await call<Run>(server, "GET", `/api/v1/runs/${runId}`)).body;
      expect(run.output?.stdout).toContain("bound");
    },
    120_000,
  );
});
