import type { EvidenceBundle, Run, RunReview } from "@l1fe/shells";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSqliteStore } from "@shells/server";
import { addKey, addPrincipal } from "../../apps/server/src/test-support/test-app.js";
import { cliAgainst, runCli } from "./cli-runner.js";
import { call, startTestServer, type TestServer } from "./harness.js";

// Reviewers' verdicts on finished runs, through the real server, the CLI and the evidence bundle:
// only listed approvers review, never their own run; the verdict shows on the run, in its signed
// history and in a bundle that verifies offline (and fails once the review is altered).

let server: TestServer;
const work = mkdtempSync(join(tmpdir(), "shells-reviews-"));
let reviewer: { url: string; token: string; id: string };
let developer: { url: string; token: string };
let foreigner: { url: string; token: string };

beforeAll(async () => {
  server = await startTestServer();
  const me = (await call<{ orgId: string; actor: { id: string } }>(server, "GET", "/api/v1/me"))
    .body;
  const member = await call<{ id: string }>(server, "POST", "/api/v1/members", {
    email: "run-reviewer@example.com",
    role: "developer",
  });
  expect(member.status).toBe(201);
  const store = await openSqliteStore(join(server.dataDir, "shells.db"));
  const scopes = ["shells:instances:read", "shells:instances:control"];
  const reviewerKey = await addKey(store, {
    orgId: me.orgId,
    principal: { type: "user", id: member.body.id },
    scopes,
  });
  reviewer = { url: server.url, token: reviewerKey.token, id: member.body.id };
  const dev = await addPrincipal(store, { orgId: me.orgId, role: "developer", scopes });
  developer = { url: server.url, token: dev.token };
  const other = await addPrincipal(store, { orgId: "org-elsewhere", role: "owner", scopes });
  foreigner = { url: server.url, token: other.token };
  await store.close();
  // The owner is a listed approver too: listed or not, nobody reviews their own run.
  const policy = await call(server, "PATCH", "/api/v1/org/policy", {
    approvers: [member.body.id, me.actor.id],
  });
  expect(policy.status, JSON.stringify(policy.body)).toBe(200);
});
afterAll(async () => {
  await server.close();
  rmSync(work, { recursive: true, force: true });
});

async function finishedRun(): Promise<string> {
  const started = await call<Run>(server, "POST", "/api/v1/runs", {
    language: "bash",
    command: ["sh", "-c", "echo reviewed > out.txt"],
    artifacts: ["out.txt"],
  });
  expect(started.status, JSON.stringify(started.body)).toBe(201);
  await expect
    .poll(
      async () => (await call<Run>(server, "GET", `/api/v1/runs/${started.body.id}`)).body.status,
    )
    .not.toBe("running");
  return started.body.id;
}

describe("run reviews", () => {
  it("a listed approver marks a run reviewed; the verdict shows on the run and in its history", async () => {
    const runId = await finishedRun();
    expect((await call<Run>(server, "GET", `/api/v1/runs/${runId}`)).body.review).toBeNull();

    const reviewed = await call<RunReview>(reviewer, "POST", `/api/v1/runs/${runId}/review`, {
      verdict: "changes_requested",
      comment: "write the result as JSON",
    });
    expect(reviewed.status, JSON.stringify(reviewed.body)).toBe(201);
    expect(reviewed.body).toMatchObject({
      verdict: "changes_requested",
      comment: "write the result as JSON",
      reviewedBy: reviewer.id,
    });
    const again = await call<RunReview>(reviewer, "POST", `/api/v1/runs/${runId}/review`, {
      verdict: "approved",
      comment: "fine as it is",
    });
    expect(again.status).toBe(201);

    const run = (await call<Run>(server, "GET", `/api/v1/runs/${runId}`)).body;
    expect(run.review).toMatchObject({ id: again.body.id, verdict: "approved" });
    const history = (
      await call<{
        items: { action: string; actor: { id: string }; details: Record<string, unknown> }[];
      }>(server, "GET", `/api/v1/runs/${runId}/activity`)
    ).body.items.filter((e) => e.action === "run.review");
    expect(history.map((e) => [e.actor.id, e.details["verdict"]])).toEqual([
      [reviewer.id, "changes_requested"],
      [reviewer.id, "approved"],
    ]);
  });

  it("refuses a bad verdict, a non-approver, the run's own creator and another org's caller", async () => {
    const runId = await finishedRun();
    const path = `/api/v1/runs/${runId}/review`;
    const bad = await call<{ error: { code: string } }>(reviewer, "POST", path, {
      verdict: "lgtm",
      comment: "x",
    });
    expect([bad.status, bad.body.error.code]).toEqual([400, "validation_failed"]);
    const empty = await call<{ error: { code: string } }>(reviewer, "POST", path, {
      verdict: "approved",
      comment: "   ",
    });
    expect([empty.status, empty.body.error.code]).toEqual([400, "validation_failed"]);
    const notApprover = await call<{ error: { code: string } }>(developer, "POST", path, {
      verdict: "approved",
      comment: "looks fine",
    });
    expect([notApprover.status, notApprover.body.error.code]).toEqual([403, "forbidden"]);
    const own = await call<{ error: { code: string } }>(server, "POST", path, {
      verdict: "approved",
      comment: "my own work is great",
    });
    expect([own.status, own.body.error.code]).toEqual([403, "separation_of_duties"]);
    const foreign = await call<{ error: { code: string } }>(foreigner, "POST", path, {
      verdict: "approved",
      comment: "not mine to judge",
    });
    const unknown = await call<{ error: { code: string } }>(
      foreigner,
      "POST",
      "/api/v1/runs/run-nosuchrun/review",
      { verdict: "approved", comment: "x" },
    );
    expect([foreign.status, foreign.body.error.code]).toEqual([404, unknown.body.error.code]);
    expect((await call<Run>(server, "GET", `/api/v1/runs/${runId}`)).body.review).toBeNull();
  });

  it("reviews from the CLI, and the evidence bundle carries the review outcome and verifies", async () => {
    const runId = await finishedRun();
    const asReviewer = (args: string[]) =>
      runCli(args, { SHELLS_URL: reviewer.url, SHELLS_API_TOKEN: reviewer.token }, work);
    const bad = await asReviewer(["runs", "review", runId, "--verdict", "maybe", "--comment", "x"]);
    expect(bad.exitCode).not.toBe(0);
    const done = await asReviewer([
      "runs",
      "review",
      runId,
      "--verdict",
      "rejected",
      "--comment",
      "wrong output file",
    ]);
    expect(done.exitCode, done.stderr).toBe(0);
    expect(done.stdout).toContain("rejected");
    const shown = await cliAgainst(server, ["runs", "get", runId], work);
    expect(shown.stdout).toMatch(/review\s+rejected by .*wrong output file/);

    const exported = await cliAgainst(
      server,
      ["evidence", "export", runId, "-o", "bundle.json"],
      work,
    );
    expect(exported.exitCode, exported.stderr).toBe(0);
    const bundle = JSON.parse(readFileSync(join(work, "bundle.json"), "utf8")) as EvidenceBundle;
    expect(bundle.format).toBe("shells-evidence/v3");
    expect(bundle.reviews).toHaveLength(1);
    expect(bundle.run.review).toMatchObject({ verdict: "rejected", comment: "wrong output file" });
    const verified = await cliAgainst(server, ["evidence", "verify", "bundle.json"], work);
    expect(verified.exitCode, verified.stdout + verified.stderr).toBe(0);
    expect(verified.stdout).toContain("reviews against their run.review events");

    // A review outcome changed after export no longer verifies.
    const altered = structuredClone(bundle);
    altered.reviews![0]!.verdict = "approved";
    altered.run.review!.verdict = "approved";
    writeFileSync(join(work, "altered.json"), JSON.stringify(altered));
    const refused = await cliAgainst(server, ["evidence", "verify", "altered.json"], work);
    expect(refused.exitCode).toBe(1);
    expect(refused.stdout + refused.stderr).toMatch(/differs from its signed run.review event/);
  });
});
