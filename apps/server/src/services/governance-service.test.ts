import type { GovernanceReport, Shell } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";
import { describeEachStore } from "../test-support/test-stores.js";

let t: TestApp;
afterEach(async () => {
  await t?.close();
});

const ALL = ["shells:instances:read", "shells:instances:create", "shells:instances:control"];

describeEachStore((store) => {
  describe("governance metrics", () => {
    it("count a project's shells, denials by kind and approvals with their time to decision, apart from the org's", async () => {
      t = await createTestApp({ openStore: store.open });
      const org = (await t.store.db.selectFrom("orgs").select("id").executeTakeFirstOrThrow()).id;
      const owner = (await t.call("GET", "/api/v1/me")).json<{ actor: { id: string } }>().actor.id;
      const developer = await addPrincipal(t.store, { orgId: org, role: "developer", scopes: ALL });
      const asDeveloper = { authorization: `Bearer ${developer.token}` };
      expect((await t.call("POST", "/api/v1/projects", { name: "team-a" })).statusCode).toBe(201);
      const policy = await t.call("PATCH", "/api/v1/org/policy", {
        approvers: [owner],
        approvalGates: {
          wipe_state: "approvers",
          delete: "confirm",
          project_egress_change: "approvers",
        },
      });
      expect(policy.statusCode, policy.body).toBe(200);

      const inTeam = (
        await t.call("POST", "/api/v1/shells", { language: "bash", project: "team-a" })
      ).json<Shell>();
      const elsewhere = (
        await t.call("POST", "/api/v1/shells", { language: "bash" })
      ).json<Shell>();
      await t.call("POST", `/api/v1/shells/${elsewhere.id}/actions/stop`, {});
      // Refused: a delete without its typed confirmation, in each project.
      for (const shell of [inTeam, elsewhere])
        expect((await t.call("DELETE", `/api/v1/shells/${shell.id}`)).statusCode).toBe(428);
      // An approval the developer asks for and the owner grants.
      const pending = await t.call(
        "POST",
        `/api/v1/shells/${inTeam.id}/actions/wipe_state`,
        {},
        asDeveloper,
      );
      expect(pending.statusCode, pending.body).toBe(202);
      const approvalId = pending.json<{ approval: { id: string } }>().approval.id;
      await new Promise((resolve) => setTimeout(resolve, 50));
      const granted = await t.call("POST", `/api/v1/approvals/${approvalId}/grant`, {
        reason: "planned",
      });
      expect(granted.statusCode, granted.body).toBe(200);

      // A widening of the project's egress rules waits for an approver (narrowing never does).
      const egress = "/api/v1/projects/team-a/egress";
      const narrowed = await t.call("PUT", egress, { rules: { allowHosts: ["a.example"] } });
      expect(narrowed.statusCode, narrowed.body).toBe(200);
      const widening = await t.call("PUT", egress, { rules: {} });
      expect(widening.statusCode, widening.body).toBe(202);

      // A one-shot run (in the default project), finished.
      const run = (
        await t.call("POST", "/api/v1/runs", { language: "bash", command: ["echo", "hi"] })
      ).json<{ id: string }>();
      await expect
        .poll(async () => (await t.call("GET", `/api/v1/runs/${run.id}`)).json().status)
        .toBe("succeeded");

      const team = (
        await t.call("GET", "/api/v1/governance?project=team-a")
      ).json<GovernanceReport>();
      expect(team).toMatchObject({
        project: "team-a",
        shells: { running: 1, stopped: 0 },
        runs: { started: 0 },
        denials: { total: 1, byKind: [{ kind: "shell.delete", count: 1 }] },
        approvals: { requested: 2, granted: 1, pending: 1 },
      });
      expect(team.approvals.timeToDecisionSeconds?.p50).toBeGreaterThanOrEqual(0.05);

      const all = (await t.call("GET", "/api/v1/governance")).json<GovernanceReport>();
      expect(all).toMatchObject({
        project: null,
        shells: { running: 1, stopped: 1 },
        runs: { active: 0, started: 1, succeeded: 1 },
        denials: { total: 2, byKind: [{ kind: "shell.delete", count: 2 }] },
        approvals: { requested: 2 },
      });
      const before = (
        await t.call("GET", `/api/v1/governance?to=${encodeURIComponent(inTeam.createdAt)}`)
      ).json<GovernanceReport>();
      expect(before.denials.total).toBe(0);
      expect(before.approvals.requested).toBe(0);
      expect((await t.call("GET", "/api/v1/governance?project=nowhere")).statusCode).toBe(404);
    });
  });
});
