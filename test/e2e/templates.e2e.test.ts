import { openSqliteStore } from "@shells/server";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addKey } from "../../apps/server/src/test-support/test-app.js";
import { call, startTestServer, type TestServer } from "./harness.js";

// Templates on real container shells: a run from a template finds its managed and metadata files,
// cannot write the read-only one, cannot loosen what the template locks, and a run of a template
// marked reviewBeforeRun starts only once another person grants it.

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ backend: "container" });
});
afterAll(async () => {
  await server.close();
});

interface RunBody {
  id: string;
  status: string;
  exitCode: number | null;
  template?: string | null;
  output: { stdout: string; stderr: string } | null;
  error: string | null;
}

async function finished(id: string): Promise<RunBody> {
  await expect
    .poll(async () => (await call<RunBody>(server, "GET", `/api/v1/runs/${id}`)).body.status, {
      timeout: 30_000,
    })
    .not.toMatch(/^(running|pending_approval)$/);
  return (await call<RunBody>(server, "GET", `/api/v1/runs/${id}`)).body;
}

const PROBE = [
  "sh",
  "-c",
  [
    "cat /workspace/POLICY.md",
    "cat /workspace/.shells/tools/search.json; echo",
    "stat -c 'mode=%a' /workspace/POLICY.md",
    "if echo tampered >> /workspace/POLICY.md 2>/dev/null; then echo write=allowed; else echo write=refused; fi",
    "cat /workspace/notes.txt",
  ].join("; "),
];

describe("templates on container shells", () => {
  it("places managed and metadata files, keeps the read-only one unwritable, and refuses loosening a lock", async () => {
    const created = await call(server, "POST", "/api/v1/templates", {
      name: "guarded",
      definition: {
        language: "bash",
        runtime: "container",
        network: "sealed",
        files: [
          { path: "POLICY.md", content: "no exfiltration\n", readOnly: true },
          { path: "notes.txt", content: "scratch\n" },
        ],
        metadata: [{ kind: "tool", name: "search.json", content: '{"name":"search"}' }],
        locks: ["network", "egress", "runtime"],
      },
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);

    const started = await call<RunBody>(server, "POST", "/api/v1/runs", {
      template: "guarded",
      command: PROBE,
    });
    expect(started.status, JSON.stringify(started.body)).toBe(201);
    const run = await finished(started.body.id);
    expect(run).toMatchObject({ status: "succeeded", exitCode: 0, template: "guarded@1" });
    const stdout = run.output?.stdout ?? "";
    expect(stdout).toContain("no exfiltration");
    expect(stdout).toContain('{"name":"search"}');
    expect(stdout).toContain("mode=444");
    expect(stdout).toContain("write=refused");
    expect(stdout).toContain("scratch");
    expect(stdout).not.toContain("tampered");

    const loosened = await call<{ error: { code: string; details: { field: string } } }>(
      server,
      "POST",
      "/api/v1/runs",
      { template: "guarded", network: "internet", command: ["true"] },
    );
    expect([loosened.status, loosened.body.error]).toMatchObject([
      422,
      { code: "template_locked", details: { field: "network" } },
    ]);
  }, 120_000);

  it("holds a run of a reviewBeforeRun template until another person grants it, then runs it", async () => {
    const member = await call<{ id: string }>(server, "POST", "/api/v1/members", {
      email: "reviewer@example.com",
      role: "developer",
    });
    expect(member.status).toBe(201);
    const me = (await call<{ orgId: string }>(server, "GET", "/api/v1/me")).body;
    const store = await openSqliteStore(join(server.dataDir, "shells.db"));
    const { token } = await addKey(store, {
      orgId: me.orgId,
      principal: { type: "user", id: member.body.id },
      scopes: ["shells:instances:read", "shells:instances:control"],
      name: "reviewer key",
    });
    await store.close();
    const reviewer = { url: server.url, token };
    expect(
      (await call(server, "PATCH", "/api/v1/org/policy", { approvers: [member.body.id] })).status,
    ).toBe(200);
    await call(server, "POST", "/api/v1/templates", {
      name: "reviewed",
      definition: { language: "bash", reviewBeforeRun: true },
    });

    const asked = await call<{
      approval: { id: string; shellId: string; context: { template: string; codeSha256: string } };
    }>(server, "POST", "/api/v1/runs", {
      template: "reviewed",
      command: ["sh", "-c", "echo reviewed-and-ran"],
    });
    expect(asked.status, JSON.stringify(asked.body)).toBe(202);
    expect(asked.body.approval.context).toMatchObject({ template: "reviewed@1" });
    const runId = asked.body.approval.shellId;
    // Nothing runs while the review is pending.
    await new Promise((r) => setTimeout(r, 500));
    expect((await call<RunBody>(server, "GET", `/api/v1/runs/${runId}`)).body.status).toBe(
      "pending_approval",
    );

    const granted = await call<{ state: string; outcome: string }>(
      reviewer,
      "POST",
      `/api/v1/approvals/${asked.body.approval.id}/grant`,
      { reason: "reviewed the command" },
    );
    expect(granted.body).toMatchObject({ state: "granted", outcome: "success" });
    const run = await finished(runId);
    expect(run).toMatchObject({ status: "succeeded", exitCode: 0, template: "reviewed@1" });
    expect(run.output?.stdout).toContain("reviewed-and-ran");

    const events = (
      await call<{ items: { action: string }[] }>(server, "GET", `/api/v1/runs/${runId}/activity`)
    ).body.items.map((e) => e.action);
    expect(events).toEqual(
      expect.arrayContaining(["run.request", "approval.request", "approval.grant", "run.start"]),
    );
  }, 120_000);
});
