/**
 * Service bindings granted after launch, and binding grants that wait for review, through the
 * real server, its real egress proxy and real container shells: a binding attached to a running
 * shell answers at the shell's next call (no restart) and stops answering once detached; a
 * template that locks bindings takes no other; a template marked `reviewBindings` makes a shell
 * create and an attach wait for a listed approver, with who asks, what, the policy and the diff,
 * and the step happens only once granted (denied or withdrawn: nothing). The binding's secret is
 * found in no answer, no activity event and nowhere inside the shell.
 */
import {
  ApprovalNotGrantedError,
  ShellsClient,
  type Approval,
  type PendingApproval,
  type Shell,
} from "@l1fe/shells";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";
import { startEgressFixture, type EgressFixture } from "./egress-fixture.js";
import { runCli } from "./cli-runner.js";
import { addApprover, call } from "./harness.js";

const SECRET = `sk_live_${randomBytes(18).toString("hex")}`;
const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";

type ErrorAnswer = { error: { code: string } };

/** Calls the `echo` binding from inside the shell (no proxy settings: the binding URL is local). */
const CALL_ECHO = [
  "import urllib.request, urllib.error",
  "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))",
  "try:",
  "    answer = opener.open('http://127.0.0.1:3128/bindings/echo/v1/hello', timeout=30)",
  "    print(answer.status, answer.read().decode())",
  "except urllib.error.HTTPError as e:",
  "    print(e.code, e.read().decode())",
].join("\n");

describe.runIf(hostReport.available)("service bindings attached to running shells", () => {
  let fixture: EgressFixture | undefined;
  let api: { url: string; token: string };
  let approver: { url: string; token: string; id: string };
  let ownerId = "";
  const made: string[] = [];

  const shell = async (body: Record<string, unknown>) => {
    const res = await call<Shell>(api, "POST", "/api/v1/shells", { language: "python", ...body });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    made.push(res.body.id);
    return res.body;
  };
  const callEcho = async (shellId: string) => {
    const res = await call<{ exitCode: number; stdout: string; stderr: string }>(
      api,
      "POST",
      `/api/v1/shells/${shellId}/exec`,
      { command: ["python3", "-c", CALL_ECHO], timeoutMs: 60_000 },
    );
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(JSON.stringify(res.body)).not.toContain(SECRET);
    return res.body.stdout.trim();
  };
  const attach = (shellId: string, binding: string) =>
    call<Shell | PendingApproval | ErrorAnswer>(api, "POST", `/api/v1/shells/${shellId}/bindings`, {
      binding,
    });
  const decide = (approvalId: string, decision: "grant" | "deny", reason: string) =>
    call<Approval>(approver, "POST", `/api/v1/approvals/${approvalId}/${decision}`, { reason });

  beforeAll(async () => {
    fixture = await startEgressFixture({
      name: "binding-attach",
      secret: SECRET,
      env: { SHELLS_IMAGES_DIR: IMAGES },
    });
    api = fixture.api;
    ownerId = (await call<{ actor: { id: string } }>(api, "GET", "/api/v1/me")).body.actor.id;
    approver = await addApprover(
      { ...api, dataDir: fixture.dataDir },
      "binding-approver@example.com",
    );
    // A second binding, never called: its upstream is not reachable from here.
    const other = await call(api, "POST", "/api/v1/bindings", {
      name: "payments",
      upstream: "https://api.example.com",
      inject: "Authorization: Bearer {secret}",
      secret: `${SECRET}-payments`,
    });
    expect(other.status, JSON.stringify(other.body)).toBe(201);
  }, 180_000);

  afterAll(async () => {
    for (const id of made)
      if (api) await call(api, "DELETE", `/api/v1/shells/${id}`).catch(() => undefined);
    await fixture?.close();
  }, 120_000);

  it("a binding attached to a running shell answers at its next call, and not once detached", async () => {
    const live = await shell({ egress: { mode: "allowlist", allow: ["allowed.test"] } });
    expect(live).toMatchObject({ status: "running", network: "internet" });
    expect(await callEcho(live.id)).toMatch(/^403 /);

    const attached = await attach(live.id, "echo");
    expect(attached.status, JSON.stringify(attached.body)).toBe(200);
    expect((attached.body as Shell).bindings).toEqual(["echo"]);
    expect(await callEcho(live.id)).toBe("200 authorized");
    expect(fixture!.securedAuth.at(-1)).toBe(`Bearer ${SECRET}`);
    // Attaching it again changes nothing.
    expect((await attach(live.id, "echo")).status).toBe(200);

    const detached = await call<Shell>(api, "DELETE", `/api/v1/shells/${live.id}/bindings/echo`);
    expect(detached.status, JSON.stringify(detached.body)).toBe(200);
    expect(detached.body.bindings ?? []).toEqual([]);
    expect(await callEcho(live.id)).toMatch(/^403 /);
    const notHeld = await call<ErrorAnswer>(
      api,
      "DELETE",
      `/api/v1/shells/${live.id}/bindings/echo`,
    );
    expect([notHeld.status, notHeld.body.error.code]).toEqual([404, "binding_not_found"]);

    const history = await call<{ items: { action: string; details: Record<string, unknown> }[] }>(
      api,
      "GET",
      `/api/v1/activity?shell=${live.id}&action=shell.action.&limit=20`,
    );
    const steps = history.body.items.filter((e) => e.action.includes("binding"));
    expect(steps.map((e) => [e.action, e.details["binding"]]).reverse()).toEqual([
      ["shell.action.binding_attach", "echo"],
      ["shell.action.binding_detach", "echo"],
    ]);
    expect(JSON.stringify(history.body)).not.toContain(SECRET);
    // Nowhere inside the shell either: not in its environment, nor in any file it can read.
    const search = await call<{ exitCode: number; stdout: string }>(
      api,
      "POST",
      `/api/v1/shells/${live.id}/exec`,
      {
        // The secret travels encoded, so the command (which the history records) never holds it.
        command: [
          "sh",
          "-c",
          `S=$(echo ${Buffer.from(SECRET).toString("base64")} | base64 -d); env | grep -F "$S"; grep -rlsF "$S" /workspace /tmp /etc /root /home /opt; echo searched`,
        ],
        timeoutMs: 60_000,
      },
    );
    expect(search.body.stdout.trim()).toBe("searched");
  }, 180_000);

  it("the org's binding_attach gate asks for the shell's name, or for an approver with the diff", async () => {
    const live = await shell({ egress: { mode: "allowlist", allow: ["allowed.test"] } });
    const path = `/api/v1/shells/${live.id}/bindings`;
    try {
      await call(api, "PATCH", "/api/v1/org/policy", {
        approvalGates: { binding_attach: "confirm" },
      });
      const unconfirmed = await call<ErrorAnswer>(api, "POST", path, { binding: "echo" });
      expect([unconfirmed.status, unconfirmed.body.error.code]).toEqual([
        428,
        "confirmation_required",
      ]);
      const confirmed = await call<Shell>(api, "POST", path, {
        binding: "echo",
        confirm: live.name,
      });
      expect([confirmed.status, confirmed.body.bindings]).toEqual([200, ["echo"]]);
      await call(api, "DELETE", `${path}/echo`);

      await call(api, "PATCH", "/api/v1/org/policy", {
        approvalGates: { binding_attach: "approvers" },
      });
      const asked = await call<PendingApproval>(api, "POST", path, { binding: "echo" });
      expect(asked.status, JSON.stringify(asked.body)).toBe(202);
      expect(asked.body.approval).toMatchObject({
        action: "binding_attach",
        shellId: live.id,
        context: {
          policy: "org policy: approvalGates.binding_attach is approvers",
          bindings: ["echo"],
          diff: { before: [], after: ["echo"], widens: ["bindings + echo"] },
        },
      });
      expect(await callEcho(live.id)).toMatch(/^403 /);
      const granted = await decide(asked.body.approval.id, "grant", "echo is in scope");
      expect(granted.body).toMatchObject({ state: "granted", outcome: "success" });
      expect(await callEcho(live.id)).toBe("200 authorized");
    } finally {
      await call(api, "PATCH", "/api/v1/org/policy", { approvalGates: { binding_attach: "none" } });
    }
  }, 180_000);

  it("refuses an unknown binding, a shell without a proxy, and a binding its template's lock leaves out", async () => {
    const sealed = await shell({});
    const noProxy = await attach(sealed.id, "echo");
    expect([noProxy.status, (noProxy.body as ErrorAnswer).error.code]).toEqual([
      409,
      "invalid_state",
    ]);
    const unknown = await attach(sealed.id, "nosuch");
    expect([unknown.status, (unknown.body as ErrorAnswer).error.code]).toEqual([
      404,
      "binding_not_found",
    ]);

    const template = await call(api, "POST", "/api/v1/templates", {
      name: "locked-echo",
      definition: { language: "python", bindings: ["echo"], locks: ["bindings"] },
    });
    expect(template.status, JSON.stringify(template.body)).toBe(201);
    const locked = await shell({ template: "locked-echo" });
    expect(locked.bindings).toEqual(["echo"]);
    const refused = await attach(locked.id, "payments");
    expect([refused.status, (refused.body as ErrorAnswer).error.code]).toEqual([
      422,
      "template_locked",
    ]);
    // Its own binding, taken away and given back, is within the template's contract.
    expect((await call(api, "DELETE", `/api/v1/shells/${locked.id}/bindings/echo`)).status).toBe(
      200,
    );
    expect((await attach(locked.id, "echo")).status).toBe(200);
    expect(await callEcho(locked.id)).toBe("200 authorized");
  }, 180_000);

  it("a shell granted bindings by a reviewBindings template waits for an approver, then starts with them", async () => {
    const template = await call(api, "POST", "/api/v1/templates", {
      name: "reviewed-echo",
      definition: { language: "python", bindings: ["echo"], reviewBindings: true },
    });
    expect(template.status, JSON.stringify(template.body)).toBe(201);

    const asked = await call<PendingApproval>(api, "POST", "/api/v1/shells", {
      template: "reviewed-echo",
      name: "reviewed-1",
    });
    expect(asked.status, JSON.stringify(asked.body)).toBe(202);
    expect(asked.body.approval).toMatchObject({
      action: "shell_create",
      state: "pending",
      requestedBy: { type: "user", id: ownerId },
      context: {
        template: "reviewed-echo@1",
        policy: "template reviewed-echo@1 requires review of binding grants",
        bindings: ["echo"],
        diff: {
          subject: "shell bindings",
          before: [],
          after: ["echo"],
          widens: ["bindings + echo"],
        },
      },
    });
    expect(JSON.stringify(asked.body)).not.toContain(SECRET);
    const shellId = asked.body.approval.shellId;
    // Nothing exists until it is granted.
    expect((await call(api, "GET", `/api/v1/shells/${shellId}`)).status).toBe(404);

    const granted = await decide(asked.body.approval.id, "grant", "echo is in scope");
    expect(granted.body, JSON.stringify(granted.body)).toMatchObject({
      state: "granted",
      outcome: "success",
    });
    made.push(shellId);
    const created = await call<Shell>(api, "GET", `/api/v1/shells/${shellId}`);
    expect(created.body).toMatchObject({
      name: "reviewed-1",
      status: "running",
      bindings: ["echo"],
      template: "reviewed-echo@1",
    });
    expect(await callEcho(shellId)).toBe("200 authorized");

    // Attaching another binding to it waits too, with the diff of its grants; denied, nothing.
    const attachAsked = await attach(shellId, "payments");
    expect(attachAsked.status, JSON.stringify(attachAsked.body)).toBe(202);
    const pending = attachAsked.body as PendingApproval;
    expect(pending.approval).toMatchObject({
      action: "binding_attach",
      shellId,
      context: {
        summary: "attach service binding payments to shell reviewed-1",
        policy: "template reviewed-echo@1 requires review of binding grants",
        bindings: ["payments"],
        diff: { before: ["echo"], after: ["echo", "payments"], widens: ["bindings + payments"] },
      },
    });
    const denied = await decide(pending.approval.id, "deny", "payments are out of scope");
    expect(denied.body.state).toBe("denied");
    expect((await call<Shell>(api, "GET", `/api/v1/shells/${shellId}`)).body.bindings).toEqual([
      "echo",
    ]);

    // Detaching never waits; attaching it back does, and works once granted.
    expect((await call(api, "DELETE", `/api/v1/shells/${shellId}/bindings/echo`)).status).toBe(200);
    expect(await callEcho(shellId)).toMatch(/^403 /);
    const again = await attach(shellId, "echo");
    expect(again.status).toBe(202);
    const regranted = await decide(
      (again.body as PendingApproval).approval.id,
      "grant",
      "back in scope",
    );
    expect(regranted.body).toMatchObject({ state: "granted", outcome: "success" });
    expect(await callEcho(shellId)).toBe("200 authorized");
    const events = await call<{ items: { action: string; details: Record<string, unknown> }[] }>(
      api,
      "GET",
      `/api/v1/activity?shell=${shellId}&action=shell.action.binding_attach&limit=5`,
    );
    expect(events.body.items[0]?.details).toMatchObject({
      binding: "echo",
      approvalId: (again.body as PendingApproval).approval.id,
      approvedBy: approver.id,
    });
  }, 240_000);

  it("a shell create that waits for review and is denied or withdrawn makes no shell", async () => {
    const denyAsked = await call<PendingApproval>(api, "POST", "/api/v1/shells", {
      template: "reviewed-echo",
    });
    expect(denyAsked.status, JSON.stringify(denyAsked.body)).toBe(202);
    const denied = await decide(denyAsked.body.approval.id, "deny", "not now");
    expect(denied.body.state).toBe("denied");
    expect(
      (await call(api, "GET", `/api/v1/shells/${denyAsked.body.approval.shellId}`)).status,
    ).toBe(404);

    const withdrawAsked = await call<PendingApproval>(api, "POST", "/api/v1/shells", {
      template: "reviewed-echo",
    });
    expect(withdrawAsked.status).toBe(202);
    const withdrawn = await call<Approval>(
      api,
      "POST",
      `/api/v1/approvals/${withdrawAsked.body.approval.id}/withdraw`,
      { reason: "asked by mistake" },
    );
    expect(withdrawn.body, JSON.stringify(withdrawn.body)).toMatchObject({ state: "withdrawn" });
    const late = await decide(withdrawAsked.body.approval.id, "grant", "too late");
    expect([late.status, (late.body as unknown as ErrorAnswer).error.code]).toEqual([
      409,
      "approval_closed",
    ]);
    expect(
      (await call(api, "GET", `/api/v1/shells/${withdrawAsked.body.approval.shellId}`)).status,
    ).toBe(404);

    // Without bindings the template's review has nothing to review: the shell is made at once.
    const plain = await call<Shell>(api, "POST", "/api/v1/shells", {
      template: "reviewed-echo",
      bindings: [],
    });
    expect(plain.status, JSON.stringify(plain.body)).toBe(201);
    made.push(plain.body.id);
  }, 120_000);
  it("the SDK waits for the decision on a create, and the CLI attaches, detaches and shows what waits", async () => {
    const sdk = new ShellsClient({ baseUrl: api.url, token: api.token });
    let seen: PendingApproval | undefined;
    const creating = sdk.create(
      { template: "reviewed-echo", name: "sdk-reviewed" },
      { onPendingApproval: (pending) => (seen = pending), approvalIntervalMs: 100 },
    );
    await expect.poll(() => seen?.approval.id).toBeDefined();
    expect((await decide(seen!.approval.id, "grant", "fine")).body.state).toBe("granted");
    const created = await creating;
    made.push(created.id);
    expect(created).toMatchObject({ id: seen!.approval.shellId, bindings: ["echo"] });

    let refusedPending: PendingApproval | undefined;
    const refused = sdk
      .create(
        { template: "reviewed-echo" },
        { onPendingApproval: (pending) => (refusedPending = pending), approvalIntervalMs: 100 },
      )
      .catch((error: unknown) => error);
    await expect.poll(() => refusedPending?.approval.id).toBeDefined();
    await decide(refusedPending!.approval.id, "deny", "no");
    const error = await refused;
    expect(error).toBeInstanceOf(ApprovalNotGrantedError);
    expect((error as ApprovalNotGrantedError).approval.state).toBe("denied");

    const work = mkdtempSync(join(tmpdir(), "shells-binding-cli-"));
    const cli = (args: string[]) =>
      runCli(args, { SHELLS_URL: api.url, SHELLS_API_TOKEN: api.token }, work);
    try {
      const live = await shell({ egress: { mode: "allowlist", allow: ["allowed.test"] } });
      const attached = await cli(["bindings", "attach", live.id, "echo"]);
      expect(attached.exitCode, attached.stderr).toBe(0);
      expect(attached.stdout).toContain("attached binding echo");
      expect(await callEcho(live.id)).toBe("200 authorized");
      const detached = await cli(["bindings", "detach", live.id, "echo"]);
      expect(detached.exitCode, detached.stderr).toBe(0);
      expect(await callEcho(live.id)).toMatch(/^403 /);

      const parked = await cli(["create", "--template", "reviewed-echo", "--no-wait"]);
      expect(parked.exitCode, parked.stderr).toBe(0);
      expect(parked.stdout).toMatch(/pending approval: .*waits for an approver/);
      expect(parked.stdout).toMatch(
        /because\s+template reviewed-echo@1 requires review of binding grants/,
      );
      expect(parked.stdout).toMatch(/widens\s+bindings \+ echo/);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }, 180_000);
});
