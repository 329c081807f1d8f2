import { afterEach, describe, expect, it } from "vitest";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";

// Templates through the API: versions never change, other orgs see nothing, bad definitions get
// stable codes, shells and runs take a template's values and cannot loosen what it locks, and a
// run of a template marked reviewBeforeRun waits for an approver.

const ALL = [
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
];

const DEFINITION = {
  description: "Python with a policy file",
  language: "python",
  network: "localhost",
  env: { MODE: "strict" },
  files: [
    { path: "POLICY.md", content: "Be careful.\n", readOnly: true },
    { path: "bin/run.sh", content: "echo hi\n", mode: 0o755 },
  ],
  metadata: [{ kind: "tool", name: "search.json", content: '{"name":"search"}' }],
  locks: ["network", "runtime"],
  runtime: "container",
};

let t: TestApp;
afterEach(async () => {
  await t?.close();
});

async function orgOf(app: TestApp): Promise<string> {
  return (await app.call("GET", "/api/v1/me")).json().orgId as string;
}

describe("templates", () => {
  it("keeps every version as it was made, and diffs two versions field by field", async () => {
    t = await createTestApp();
    const created = await t.call("POST", "/api/v1/templates", {
      name: "py",
      definition: DEFINITION,
    });
    expect(created.statusCode, created.body).toBe(201);
    expect(created.json()).toMatchObject({ template: "py", version: 1 });
    const v2 = await t.call("POST", "/api/v1/templates/py/versions", {
      definition: { ...DEFINITION, network: "sealed", reviewBeforeRun: true },
    });
    expect(v2.json()).toMatchObject({ template: "py", version: 2 });
    expect(v2.json().sha256).not.toBe(created.json().sha256);

    const v1 = (await t.call("GET", "/api/v1/templates/py/versions/1")).json();
    expect(v1.definition).toEqual(DEFINITION);
    expect(v1.sha256).toBe(created.json().sha256);
    expect((await t.call("GET", "/api/v1/templates/py")).json()).toMatchObject({
      template: { name: "py", project: null, latestVersion: 2 },
      latest: { version: 2 },
    });
    expect((await t.call("GET", "/api/v1/templates/py/versions")).json().items).toHaveLength(2);
    const diff = (await t.call("GET", "/api/v1/templates/py/diff?from=1&to=2")).json();
    expect(diff.changes).toEqual([
      { field: "network", change: "changed", from: "localhost", to: "sealed" },
      { field: "reviewBeforeRun", change: "added", from: null, to: true },
    ]);
    // No route changes a version: the path of one answers only GET.
    const put = await t.call("PUT", "/api/v1/templates/py/versions/1", { definition: DEFINITION });
    expect(put.statusCode).toBe(404);

    const history = (await t.call("GET", "/api/v1/activity?limit=50")).json().items as {
      action: string;
      details: Record<string, unknown>;
    }[];
    expect(history.filter((e) => e.action.startsWith("template.")).map((e) => e.action)).toEqual(
      expect.arrayContaining(["template.create", "template.version"]),
    );
  });

  it("answers bad definitions with stable codes, and only admins define templates", async () => {
    t = await createTestApp();
    const cases: [unknown, number, string][] = [
      [{ name: "x", definition: { language: "cobol" } }, 400, "validation_failed"],
      [
        { name: "x", definition: { language: "bash", locks: ["runtime"] } },
        400,
        "template_invalid",
      ],
      [
        { name: "x", definition: { language: "bash", files: [{ path: "/etc/x", content: "" }] } },
        400,
        "template_invalid",
      ],
      [{ name: "x", project: "nope", definition: { language: "bash" } }, 404, "project_not_found"],
    ];
    for (const [body, status, code] of cases) {
      const res = await t.call("POST", "/api/v1/templates", body);
      expect([res.statusCode, res.json().error.code], JSON.stringify(body)).toEqual([status, code]);
    }
    await t.call("POST", "/api/v1/templates", { name: "x", definition: { language: "bash" } });
    const again = await t.call("POST", "/api/v1/templates", {
      name: "x",
      definition: { language: "bash" },
    });
    expect(again.json().error.code).toBe("name_taken");
    const missing = await t.call("POST", "/api/v1/shells", { template: "nope" });
    expect([missing.statusCode, missing.json().error.code]).toEqual([404, "template_not_found"]);
    const noVersion = await t.call("POST", "/api/v1/shells", { template: "x@9" });
    expect(noVersion.json().error.code).toBe("template_not_found");
    const noLanguage = await t.call("POST", "/api/v1/shells", {});
    expect(noLanguage.json().error.code).toBe("validation_failed");

    const developer = await addPrincipal(t.store, {
      orgId: await orgOf(t),
      role: "developer",
      scopes: ALL,
    });
    const asDeveloper = { authorization: `Bearer ${developer.token}` };
    const refused = await t.call(
      "POST",
      "/api/v1/templates/x/versions",
      { definition: { language: "bash" } },
      asDeveloper,
    );
    expect([refused.statusCode, refused.json().error.code]).toEqual([403, "forbidden"]);
    expect((await t.call("GET", "/api/v1/templates/x", undefined, asDeveloper)).statusCode).toBe(
      200,
    );
  });

  it("hides another org's templates as not found", async () => {
    t = await createTestApp();
    await t.call("POST", "/api/v1/templates", { name: "mine", definition: DEFINITION });
    const stranger = await addPrincipal(t.store, {
      orgId: "org-other",
      role: "owner",
      scopes: ALL,
    });
    const asStranger = { authorization: `Bearer ${stranger.token}` };
    const get = await t.call("GET", "/api/v1/templates/mine", undefined, asStranger);
    expect([get.statusCode, get.json().error.code]).toEqual([404, "template_not_found"]);
    expect((await t.call("GET", "/api/v1/templates", undefined, asStranger)).json().items).toEqual(
      [],
    );
    const use = await t.call("POST", "/api/v1/shells", { template: "mine" }, asStranger);
    expect(use.json().error.code).toBe("template_not_found");
  });

  it("scopes a project template to that project's shells", async () => {
    t = await createTestApp();
    expect((await t.call("POST", "/api/v1/projects", { name: "lab" })).statusCode).toBe(201);
    await t.call("POST", "/api/v1/templates", {
      name: "lab-only",
      project: "lab",
      definition: { language: "bash" },
    });
    const elsewhere = await t.call("POST", "/api/v1/shells", { template: "lab-only" });
    expect(elsewhere.json().error.code).toBe("template_not_found");
    const inLab = await t.call("POST", "/api/v1/shells", { template: "lab-only", project: "lab" });
    expect(inLab.statusCode, inLab.body).toBe(201);
    expect(inLab.json()).toMatchObject({ project: "lab", template: "lab-only@1" });
  });

  it("makes a shell with the template's values and files, and refuses loosening a lock", async () => {
    t = await createTestApp();
    await t.call("POST", "/api/v1/templates", { name: "py", definition: DEFINITION });
    const shell = await t.call("POST", "/api/v1/shells", { template: "py", network: "sealed" });
    expect(shell.statusCode, shell.body).toBe(201);
    expect(shell.json()).toMatchObject({
      language: "python",
      runtime: "container",
      network: "sealed",
      envKeys: ["MODE"],
      template: "py@1",
    });
    const id = shell.json().id as string;
    const policy = await t.call(
      "GET",
      `/api/v1/shells/${id}/files/content?path=/workspace/POLICY.md`,
    );
    expect(policy.body).toBe("Be careful.\n");
    const listing = await t.call("GET", `/api/v1/shells/${id}/files?path=/workspace/.shells/tools`);
    expect(listing.body).toContain("search.json");

    const loosened = await t.call("POST", "/api/v1/shells", {
      template: "py",
      network: "internet",
    });
    expect([loosened.statusCode, loosened.json().error]).toMatchObject([
      422,
      { code: "template_locked", details: { field: "network" } },
    ]);
    const weaker = await t.call("POST", "/api/v1/runs", {
      template: "py",
      runtime: "wasm",
      code: "print(1)",
    });
    expect(weaker.json().error).toMatchObject({
      code: "template_locked",
      details: { field: "runtime" },
    });
  });

  it("parks a run of a reviewBeforeRun template until an approver grants it, then runs it", async () => {
    t = await createTestApp();
    const org = await orgOf(t);
    const owner = (await t.call("GET", "/api/v1/me")).json().actor.id as string;
    await t.call("POST", "/api/v1/templates", {
      name: "reviewed",
      definition: { language: "bash", reviewBeforeRun: true },
    });
    const developer = await addPrincipal(t.store, { orgId: org, role: "developer", scopes: ALL });
    const asDeveloper = { authorization: `Bearer ${developer.token}` };
    const body = { template: "reviewed", command: ["echo", "reviewed"] };

    const unreviewable = await t.call("POST", "/api/v1/runs", body, asDeveloper);
    expect(unreviewable.json().error.code).toBe("review_unavailable");
    await t.call("PATCH", "/api/v1/org/policy", { approvers: [owner] });

    const parked = await t.call("POST", "/api/v1/runs", body, asDeveloper);
    expect(parked.statusCode, parked.body).toBe(202);
    const { approval } = parked.json();
    expect(approval).toMatchObject({
      action: "run",
      state: "pending",
      requestedBy: { id: developer.id },
      context: { template: "reviewed@1", policy: expect.stringContaining("review") },
    });
    expect(approval.context.codeSha256).toMatch(/^[0-9a-f]{64}$/);
    const runId = approval.shellId as string;
    expect((await t.call("GET", `/api/v1/runs/${runId}`)).json()).toMatchObject({
      status: "pending_approval",
      template: "reviewed@1",
    });

    const granted = await t.call("POST", `/api/v1/approvals/${approval.id}/grant`, {
      reason: "looks fine",
    });
    expect(granted.json()).toMatchObject({ state: "granted", outcome: "success" });
    let run = (await t.call("GET", `/api/v1/runs/${runId}`)).json();
    for (let i = 0; i < 100 && run.status === "running"; i += 1) {
      await new Promise((r) => setTimeout(r, 20));
      run = (await t.call("GET", `/api/v1/runs/${runId}`)).json();
    }
    expect(run).toMatchObject({ status: "succeeded", exitCode: 0, template: "reviewed@1" });
    expect(run.output.stdout).toContain("reviewed");

    const second = (await t.call("POST", "/api/v1/runs", body, asDeveloper)).json();
    await t.call("POST", `/api/v1/approvals/${second.approval.id}/deny`, { reason: "no" });
    expect((await t.call("GET", `/api/v1/runs/${second.approval.shellId}`)).json()).toMatchObject({
      status: "cancelled",
      error: expect.stringContaining("review denied"),
    });
  });
});
