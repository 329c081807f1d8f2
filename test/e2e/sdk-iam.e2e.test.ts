import ShellsClient, {
  AuthenticationError,
  ConfirmationRequiredError,
  ConflictError,
  PermissionDeniedError,
  ValidationError,
  isPendingApproval,
  type Role,
  type Scope,
  type Shell,
} from "@l1fe/shells";
import { openSqliteStore } from "@shells/server";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { addKey } from "../../apps/server/src/test-support/test-app.js";
import { startTestServer, type TestServer } from "./harness.js";

const EVERY_SCOPE: Scope[] = [
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
];

let server: TestServer;
/** The bootstrap owner. */
let owner: ShellsClient;
let ownerId: string;

beforeAll(async () => {
  server = await startTestServer();
  owner = new ShellsClient({ baseUrl: server.url, token: server.token });
  ownerId = (await owner.whoami()).actor.id;
});

afterAll(async () => {
  await server?.close();
});

afterEach(async () => {
  // Each test sets the policy it needs; none leaks into the next.
  await owner.policy.update({
    isolationFloor: "wasm",
    approvalGates: { stop: "none", wipe_state: "none", reinstall_os: "none", delete: "none" },
    approvers: [],
  });
});

/** A client holding `token`, on the test server. */
function clientFor(token: string): ShellsClient {
  return new ShellsClient({ baseUrl: server.url, token });
}

/** Adds a member with `role` and returns a client holding a fresh key of theirs. */
async function memberWithKey(email: string, role: Role): Promise<[string, ShellsClient]> {
  const member = await owner.members.create({ email, role });
  const { token } = await ownKey(
    member.id,
    role === "viewer" ? ["shells:instances:read"] : EVERY_SCOPE,
  );
  return [member.id, clientFor(token)];
}

/** A key member `memberId` minted for themselves (the API mints keys only for the caller or an agent). */
async function ownKey(memberId: string, scopes: Scope[], name = "own key") {
  const orgId = (await owner.whoami()).orgId;
  const store = await openSqliteStore(join(server.dataDir, "shells.db"));
  try {
    return await addKey(store, { orgId, principal: { type: "user", id: memberId }, scopes, name });
  } finally {
    await store.close();
  }
}

describe("members and keys through the SDK", () => {
  it("adds a member whose new key works until it is revoked", async () => {
    const member = await owner.members.create({ email: "Ada@Example.com", role: "developer" });
    expect(member).toMatchObject({ email: "ada@example.com", role: "developer", disabledAt: null });
    expect((await owner.members.list()).map((m) => m.id)).toContain(member.id);

    // Nobody mints a key that acts as another member, not even the owner.
    const forAda = await owner.keys
      .create({
        name: "ada laptop",
        scopes: ["shells:instances:read"],
        principal: { type: "user", id: member.id },
      })
      .catch((e: unknown) => e);
    expect(forAda).toMatchObject({ code: "forbidden", status: 403 });
    const minted = await ownKey(member.id, ["shells:instances:read"], "ada laptop");
    const created = { token: minted.token, key: { id: minted.keyId } };
    expect((await owner.keys.list()).find((k) => k.id === created.key.id)).toMatchObject({
      name: "ada laptop",
      revokedAt: null,
      createdBy: { type: "user", id: member.id },
    });
    expect(JSON.stringify(await owner.keys.list())).not.toContain(created.token);

    const ada = clientFor(created.token);
    expect(await ada.whoami()).toMatchObject({
      actor: { type: "user", id: member.id },
      role: "developer",
      keyId: created.key.id,
      scopes: ["shells:instances:read"],
      entitlements: [],
    });

    const revoked = await owner.keys.revoke(created.key.id);
    expect(revoked.revokedAt).not.toBeNull();
    const error = await ada.whoami().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect(error).toMatchObject({ code: "unauthenticated", status: 401 });
  });

  it("changes a member's role, disables them, and refuses to demote the last owner", async () => {
    const [memberId, member] = await memberWithKey("grace@example.com", "developer");
    expect((await owner.members.update(memberId, { role: "viewer" })).role).toBe("viewer");
    expect((await member.whoami()).scopes).toEqual(["shells:instances:read"]);

    await owner.members.update(memberId, { disabled: true });
    await expect(member.whoami()).rejects.toMatchObject({ code: "unauthenticated" });

    const error = await owner.members.update(ownerId, { role: "admin" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConflictError);
    expect(error).toMatchObject({ code: "last_owner", status: 409 });
  });

  it("removes a member and revokes every key they hold", async () => {
    const [memberId, member] = await memberWithKey("linus@example.com", "developer");
    const removed = await owner.members.remove(memberId);
    expect(removed.disabledAt).not.toBeNull();
    await expect(member.whoami()).rejects.toMatchObject({ code: "unauthenticated" });
    const keys = (await owner.keys.list()).filter((key) => key.principal.id === memberId);
    expect(keys.every((key) => key.revokedAt !== null)).toBe(true);
  });

  it("refuses a viewer who tries to add a member", async () => {
    const [, viewer] = await memberWithKey("viewer@example.com", "viewer");
    const error = await viewer.members
      .create({ email: "x@example.com", role: "viewer" })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PermissionDeniedError);
    expect(error).toMatchObject({ code: "forbidden", status: 403 });
  });

  it("creates and lists projects", async () => {
    const project = await owner.projects.create({ name: "research" });
    expect((await owner.projects.list()).map((p) => p.name)).toEqual(["default", "research"]);
    const shell = await owner.create({ language: "bash", project: "research" });
    expect(shell.project).toBe(project.name);
  });
});

describe("agents and the agent gate through the SDK", () => {
  it("lets an agent's key through the gate only while it holds the entitlement", async () => {
    const agent = await owner.agents.create({ name: "ci-bot" });
    expect(agent).toMatchObject({ name: "ci-bot", role: "developer", disabledAt: null });
    expect((await owner.agents.list()).map((a) => a.id)).toContain(agent.id);
    const { token } = await owner.keys.create({
      name: "ci-bot key",
      scopes: EVERY_SCOPE,
      principal: { type: "agent", id: agent.id },
    });
    const bot = clientFor(token);

    const refused = await bot.invoke("shells_list", {}).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(PermissionDeniedError);
    expect(refused).toMatchObject({ code: "entitlement_required", status: 403 });

    const grant = await owner.entitlements.grant({
      entitlement: "shells.agent.invoke",
      principal: { type: "agent", id: agent.id },
    });
    expect((await owner.entitlements.list()).map((g) => g.id)).toContain(grant.id);
    expect((await bot.whoami()).entitlements).toEqual(["shells.agent.invoke"]);

    const created = await bot.invoke("shells_create", { language: "bash" });
    expect(created).toMatchObject({ tool: "shells_create", result: { status: "running" } });
    const createdShell = created.result as Shell;
    const ran = await bot.invoke("shells_exec", {
      shell: createdShell.id,
      command: ["echo", "from the gate"],
    });
    expect(ran.result).toMatchObject({ exitCode: 0, stdout: "from the gate\n" });
    const listed = await bot.invoke("shells_list", {});
    expect(listed.result.items.map((s) => s.id)).toContain(createdShell.id);

    await owner.entitlements.revoke(grant.id);
    await expect(bot.invoke("shells_list", {})).rejects.toMatchObject({
      code: "entitlement_required",
    });

    const decisions = [];
    for await (const event of owner.activity({ actor: agent.id, action: "agent.invoke" })) {
      decisions.push(event.outcome);
    }
    expect(decisions.reverse()).toEqual(["denied", "success", "success", "success", "denied"]);
  });

  it("refuses the gate to an agent that holds the entitlement but not the tool's permission", async () => {
    const agent = await owner.agents.create({ name: "reader-bot" });
    const { token } = await owner.keys.create({
      name: "reader-bot key",
      scopes: ["shells:agent:invoke", "shells:instances:read"],
      principal: { type: "agent", id: agent.id },
    });
    await owner.entitlements.grant({
      entitlement: "shells.agent.invoke",
      principal: { type: "agent", id: agent.id },
    });
    const bot = clientFor(token);
    expect((await bot.invoke("shells_list", {})).tool).toBe("shells_list");
    await expect(bot.invoke("shells_create", { language: "bash" })).rejects.toMatchObject({
      name: "PermissionDeniedError",
      code: "forbidden",
    });
  });

  it("disables a removed agent: its key stops working", async () => {
    const agent = await owner.agents.create({ name: "retired-bot" });
    const { token } = await owner.keys.create({
      name: "retired-bot key",
      scopes: ["shells:instances:read"],
      principal: { type: "agent", id: agent.id },
    });
    await clientFor(token).whoami();
    expect((await owner.agents.remove(agent.id)).disabledAt).not.toBeNull();
    await expect(clientFor(token).whoami()).rejects.toBeInstanceOf(AuthenticationError);
  });
});

describe("approval gates through the SDK", () => {
  it("refuses a missing or wrong confirmation and runs the action with the right one", async () => {
    await owner.policy.update({ approvalGates: { stop: "confirm", delete: "confirm" } });
    const shell = await owner.create({ language: "bash", name: "confirm-me" });

    const missing = await owner.action(shell.id, "stop").catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(ConfirmationRequiredError);
    expect(missing).toMatchObject({ code: "confirmation_required", status: 428 });
    await expect(owner.action(shell.id, "stop", { confirm: "not-me" })).rejects.toMatchObject({
      code: "confirmation_required",
    });
    expect((await owner.get(shell.id)).status).toBe("running");

    const stopped = await owner.action(shell.id, "stop", { confirm: "confirm-me" });
    expect(isPendingApproval(stopped)).toBe(false);
    expect(stopped).toMatchObject({ capability: "stop", shell: { status: "stopped" } });

    await expect(owner.delete(shell.id, { confirm: "nope" })).rejects.toBeInstanceOf(
      ConfirmationRequiredError,
    );
    expect(await owner.delete(shell.id, { confirm: shell.id })).toMatchObject({
      status: "deleted",
    });
  });

  it("parks wipe_state for a listed approver, refuses a non-approver and runs it on the grant", async () => {
    await owner.policy.update({ approvalGates: { wipe_state: "approvers" }, approvers: [ownerId] });
    const [developerId, developer] = await memberWithKey("dev@example.com", "developer");
    const [, otherAdmin] = await memberWithKey("admin@example.com", "admin");
    const shell = await developer.create({ language: "bash" });
    await developer.exec(shell.id, { command: ["sh", "-c", "echo keep > notes.txt"] });

    const outcome = await developer.action(shell.id, "wipe_state");
    if (!isPendingApproval(outcome)) throw new Error("expected a pending approval");
    const { approval } = outcome;
    expect(approval).toMatchObject({
      shellId: shell.id,
      action: "wipe_state",
      state: "pending",
      requestedBy: { type: "user", id: developerId },
      outcome: null,
    });
    expect(Date.parse(approval.expiresAt)).toBeGreaterThan(Date.now());
    expect((await owner.approvals.list({ state: "pending" })).map((a) => a.id)).toContain(
      approval.id,
    );
    const untouched = await developer.exec(shell.id, { command: ["cat", "notes.txt"] });
    expect(untouched.stdout).toBe("keep\n");

    for (const outsider of [otherAdmin, developer]) {
      const refused = await outsider.approvals
        .grant(approval.id, { reason: "looks fine" })
        .catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(PermissionDeniedError);
      expect(refused).toMatchObject({ code: "forbidden" });
    }
    expect((await owner.approvals.get(approval.id)).state).toBe("pending");

    const granted = await owner.approvals.grant(approval.id, { reason: "planned maintenance" });
    expect(granted).toMatchObject({
      state: "granted",
      outcome: "success",
      decidedBy: ownerId,
      reason: "planned maintenance",
    });
    expect(await owner.approvals.get(approval.id)).toEqual(granted);
    const wiped = await developer.exec(shell.id, { command: ["test", "-e", "notes.txt"] });
    expect(wiped.exitCode).toBe(1);

    const history = await owner.activity({ shell: shell.id, order: "asc" }).toArray();
    const steps = history
      .filter((event) => event.outcome === "success")
      .filter((event) => /^approval\.|^shell\.action\./.test(event.action))
      .map((event) => [event.action, event.actor.id]);
    expect(steps).toEqual([
      ["approval.request", developerId],
      ["approval.grant", ownerId],
      ["shell.action.wipe_state", developerId],
    ]);

    const again = await owner.approvals
      .grant(approval.id, { reason: "twice" })
      .catch((e: unknown) => e);
    expect(again).toBeInstanceOf(ConflictError);
    expect(again).toMatchObject({ code: "approval_closed" });
  });

  it("parks a delete for an approver and keeps the shell when it is denied", async () => {
    await owner.policy.update({ approvalGates: { delete: "approvers" }, approvers: [ownerId] });
    const [, developer] = await memberWithKey("deleter@example.com", "developer");
    const shell = await developer.create({ language: "bash" });

    const outcome = await developer.delete(shell.id);
    expect(isPendingApproval(outcome)).toBe(true);
    if (!isPendingApproval(outcome)) return;
    expect(outcome.approval.action).toBe("delete");

    const denied = await owner.approvals.deny(outcome.approval.id, { reason: "still needed" });
    expect(denied).toMatchObject({ state: "denied", reason: "still needed", outcome: null });
    expect((await owner.get(shell.id)).status).toBe("running");
  });
});

describe("org policy through the SDK", () => {
  it("refuses a shell below the isolation floor and defaults new shells to the floor", async () => {
    const policy = await owner.policy.update({ isolationFloor: "microvm" });
    expect(policy.isolationFloor).toBe("microvm");
    expect((await owner.policy.get()).isolationFloor).toBe("microvm");

    const error = await owner
      .create({ language: "bash", runtime: "container" })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toMatchObject({ code: "below_isolation_floor", status: 422 });
    expect((await owner.create({ language: "bash" })).runtime).toBe("microvm");
  });

  it("keeps the fields an update leaves out", async () => {
    const before = await owner.policy.get();
    const after = await owner.policy.update({ termCredentialTtlSeconds: 600 });
    expect(after).toEqual({ ...before, termCredentialTtlSeconds: 600 });
  });
});
