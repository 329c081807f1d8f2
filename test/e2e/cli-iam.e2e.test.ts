import ShellsClient, {
  type ActivityEvent,
  type Agent,
  type ApiKeyCreated,
  type Approval,
  type Member,
  type OrgPolicy,
  type Shell,
} from "@l1fe/shells";
import { execFileSync, spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { openSqliteStore } from "@shells/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { addKey } from "../../apps/server/src/test-support/test-app.js";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
/** The `shells` executable as npm links it (a launcher over the compiled apps/cli/dist/bin.js). */
const cliBin = join(repoRoot, "apps/cli/bin/shells.js");

interface CliRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

let server: TestServer;
let ownerId: string;

/** Runs the built `shells` binary against the test server with `token` (default: the owner's). */
function shells(args: string[], token = server.token): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliBin, ...args], {
      cwd: repoRoot,
      env: { ...process.env, SHELLS_URL: server.url, SHELLS_API_TOKEN: token },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) => resolve({ exitCode, stdout, stderr }));
  });
}

/** Runs `args` with `--json`, expects exit 0, and parses what it printed. */
async function shellsJson<T>(args: string[], token?: string): Promise<T> {
  const run = await shells([...args, "--json"], token);
  expect(run, run.stderr).toMatchObject({ exitCode: 0 });
  return JSON.parse(run.stdout) as T;
}

/** Adds a member with `role` and a key carrying every scope the role allows; returns id and token. */
async function memberWithToken(
  email: string,
  role: "developer" | "admin",
): Promise<[string, string]> {
  const member = await shellsJson<Member>(["members", "add", email, "--role", role]);
  const token = await ownToken(member.id, [
    "shells:instances:read",
    "shells:instances:create",
    "shells:instances:control",
  ]);
  return [member.id, token];
}

/**
 * A key member `memberId` minted for themselves, as after a console login (the API mints keys only
 * for the caller or an agent, never for another member).
 */
async function ownToken(memberId: string, scopes: string[]): Promise<string> {
  const orgId = (await new ShellsClient({ baseUrl: server.url, token: server.token }).whoami())
    .orgId;
  const store = await openSqliteStore(join(server.dataDir, "shells.db"));
  try {
    return (await addKey(store, { orgId, principal: { type: "user", id: memberId }, scopes }))
      .token;
  } finally {
    await store.close();
  }
}

beforeAll(async () => {
  // The test runs the CLI as users do: the compiled binary over the compiled SDK and contract.
  execFileSync(
    process.execPath,
    [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/cli"],
    { cwd: repoRoot, stdio: "inherit" },
  );
  server = await startTestServer();
  ownerId = (await new ShellsClient({ baseUrl: server.url, token: server.token }).whoami()).actor
    .id;
});

afterAll(async () => {
  await server?.close();
});

describe("shells members and keys", () => {
  it("adds a member, lists them, and shows their role and entitlements in whoami", async () => {
    const added = await shells(["members", "add", "ada@example.com", "--role", "developer"]);
    expect(added).toMatchObject({ exitCode: 0, stderr: "" });
    expect(added.stdout).toMatch(/^added usr-\S+ \(ada@example\.com, developer\)\n$/);

    const table = await shells(["members", "ls"]);
    expect(table.stdout).toMatch(/^ID\s+EMAIL\s+ROLE\s+SOURCE\s+STATUS\s+AGE$/m);
    expect(table.stdout).toMatch(/ada@example\.com\s+developer\s+local\s+active/);

    const whoami = await shells(["whoami"]);
    expect(whoami.stdout).toMatch(/^role\s+owner$/m);
    expect(whoami.stdout).toMatch(/^entitlements\s+-$/m);
  });

  it("prints a new key's token once with a warning; the token works until it is revoked", async () => {
    const member = await shellsJson<Member>([
      "members",
      "add",
      "bob@example.com",
      "--role",
      "developer",
    ]);
    const forBob = await shells([
      "keys",
      "create",
      "--name",
      "bob laptop",
      "--scope",
      "shells:instances:read",
      "--user",
      member.id,
    ]);
    expect(forBob.exitCode).toBe(1);
    expect(forBob.stderr).toMatch(/^error: forbidden: /);
    // Minting needs the control scope: Bob uses a key he made earlier (as after a console login).
    const bobsFirstKey = await ownToken(member.id, [
      "shells:instances:read",
      "shells:instances:control",
    ]);
    const created = await shells(
      ["keys", "create", "--name", "bob laptop", "--scope", "shells:instances:read"],
      bobsFirstKey,
    );
    expect(created.exitCode).toBe(0);
    const token = /^token: (\S+)$/m.exec(created.stdout)?.[1];
    const keyId = /^key\s+(\S+) \(bob laptop\)$/m.exec(created.stdout)?.[1];
    expect(token).toBeTruthy();
    expect(created.stdout).toMatch(/^for\s+user:usr-\S+$/m);
    expect(created.stdout).toContain("shown once and never again");

    const whoami = await shells(["whoami"], token);
    expect(whoami.stdout).toMatch(/^role\s+developer$/m);
    const listed = await shells(["keys", "ls"]);
    expect(listed.stdout).toMatch(
      new RegExp(`^${keyId}\\s+bob laptop\\s+user:${member.id}\\s+active`, "m"),
    );
    expect(listed.stdout).not.toContain(token);

    const revoked = await shells(["keys", "revoke", keyId!]);
    expect(revoked).toMatchObject({ exitCode: 0, stdout: `revoked ${keyId} (bob laptop)\n` });
    const refused = await shells(["whoami"], token);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/^error: unauthenticated: /);
  });

  it("changes a member's role, disables and removes them", async () => {
    const [memberId, token] = await memberWithToken("carol@example.com", "developer");
    const changed = await shells(["members", "set-role", memberId, "viewer"]);
    expect(changed.stdout).toBe(`updated ${memberId} (carol@example.com, viewer)\n`);
    const disabled = await shells(["members", "disable", memberId]);
    expect(disabled.stdout).toBe(`disabled ${memberId} (carol@example.com, viewer, disabled)\n`);
    expect((await shells(["whoami"], token)).exitCode).toBe(1);
    const removed = await shells(["members", "rm", memberId, "--json"]);
    expect(JSON.parse(removed.stdout)).toMatchObject({
      id: memberId,
      disabledAt: expect.any(String),
    });
  });

  it("refuses to demote the last owner, with the code and a hint", async () => {
    const run = await shells(["members", "set-role", ownerId, "admin"]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/^error: last_owner: /);
    expect(run.stderr).toMatch(/^hint: make another member an owner first/m);
  });
});

describe("shells agents and entitlements", () => {
  it("opens the agent gate to an agent's key only while the entitlement is granted", async () => {
    const created = await shells(["agents", "create", "ci-bot"]);
    expect(created.stdout).toMatch(/^created agent agt-\S+ \(ci-bot, developer\)$/m);
    const [agent] = await shellsJson<Agent[]>(["agents", "ls"]);
    expect(agent).toMatchObject({ name: "ci-bot", role: "developer" });
    const { token } = await shellsJson<ApiKeyCreated>([
      "keys",
      "create",
      "--name",
      "ci-bot key",
      "--agent",
      agent!.id,
      "--scope",
      "shells:agent:invoke",
      "--scope",
      "shells:instances:read",
    ]);
    const bot = new ShellsClient({ baseUrl: server.url, token });
    await expect(bot.invoke("shells_list", {})).rejects.toMatchObject({
      code: "entitlement_required",
    });

    const granted = await shells(["entitlements", "grant", "--agent", agent!.id]);
    expect(granted.stdout).toMatch(
      new RegExp(
        `^granted shells\\.agent\\.invoke to agent:${agent!.id} \\(grant (ent-\\S+)\\)\n$`,
      ),
    );
    const grantId = /\(grant (\S+)\)/.exec(granted.stdout)?.[1];
    const listed = await shells(["entitlements", "ls"]);
    expect(listed.stdout).toMatch(
      new RegExp(`^${grantId}\\s+shells\\.agent\\.invoke\\s+agent:${agent!.id}\\s+${ownerId}`, "m"),
    );
    expect((await shells(["whoami"], token)).stdout).toMatch(
      /^entitlements\s+shells\.agent\.invoke$/m,
    );
    expect((await bot.invoke("shells_list", {})).result.items).toEqual(expect.any(Array));

    const revoked = await shells(["entitlements", "revoke", grantId!]);
    expect(revoked.exitCode).toBe(0);
    await expect(bot.invoke("shells_list", {})).rejects.toMatchObject({
      code: "entitlement_required",
    });

    const removed = await shells(["agents", "rm", agent!.id]);
    expect(removed.stdout).toContain(`removed agent ${agent!.id}`);
    expect((await shells(["whoami"], token)).exitCode).toBe(1);
  });

  it("says whom to grant to when neither --agent nor --user is given", async () => {
    const run = await shells(["entitlements", "grant"]);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toMatch(/^error: usage: say to whom: --agent <id> or --user <id>/);
  });
});

describe("shells projects and policy", () => {
  it("creates and lists projects", async () => {
    const created = await shells(["projects", "create", "research"]);
    expect(created.stdout).toMatch(/^created project prj-\S+ \(research\)\n$/);
    const table = await shells(["projects", "ls"]);
    expect(table.stdout).toMatch(/^prj-\S+\s+default\s/m);
    expect(table.stdout).toMatch(/^prj-\S+\s+research\s/m);
  });

  it("shows and changes the policy, and refuses a shell below the isolation floor", async () => {
    const shown = await shells(["policy", "get"]);
    expect(shown.stdout).toMatch(/^isolation floor\s+wasm$/m);
    expect(shown.stdout).toMatch(/^gate wipe_state\s+none$/m);

    const set = await shells([
      "policy",
      "set",
      "--isolation-floor",
      "microvm",
      "--allowed-regions",
      "local,eu-west",
      "--term-ttl",
      "10m",
      "--approval-ttl",
      "1h",
    ]);
    expect(set.exitCode).toBe(0);
    expect(set.stdout).toMatch(/^isolation floor\s+microvm$/m);
    expect(set.stdout).toMatch(/^allowed regions\s+local, eu-west$/m);
    expect(set.stdout).toMatch(/^term credential ttl\s+600s$/m);
    expect(await shellsJson<OrgPolicy>(["policy", "get"])).toMatchObject({
      isolationFloor: "microvm",
      allowedRegions: ["local", "eu-west"],
      termCredentialTtlSeconds: 600,
      approvalTtlSeconds: 3600,
    });

    const refused = await shells(["create", "--runtime", "container"]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/^error: below_isolation_floor: /);
    expect(refused.stderr).toMatch(/^hint: see the floor with `shells policy get`/m);

    const reset = await shells([
      "policy",
      "set",
      "--isolation-floor",
      "wasm",
      "--allowed-regions",
      "",
    ]);
    expect(reset.stdout).toMatch(/^allowed regions\s+any$/m);
  });

  it("sets the org's egress rules and limits, and shows them", async () => {
    const set = await shells([
      "policy",
      "set",
      "--egress-deny-hosts",
      "*.tracker.example,ads.example.com",
      "--egress-deny-ports",
      "25,465",
      "--egress-max-requests-per-second",
      "40",
      "--egress-max-bytes",
      "1048576",
    ]);
    expect(set.exitCode).toBe(0);
    expect(set.stdout).toMatch(/^egress deny hosts\s+\*\.tracker\.example, ads\.example\.com$/m);
    expect(set.stdout).toMatch(/^egress deny ports\s+25, 465$/m);
    expect(set.stdout).toMatch(/^egress requests\/s per shell\s+40$/m);
    const stored = await shellsJson<OrgPolicy>(["policy", "get"]);
    expect(stored.egress).toMatchObject({
      denyHosts: ["*.tracker.example", "ads.example.com"],
      denyPorts: [25, 465],
      maxRequestsPerSecond: 40,
      maxBytes: 1048576,
    });
    // Flags left out keep their value; an empty list clears one.
    await shells(["policy", "set", "--egress-deny-ports", ""]);
    expect((await shellsJson<OrgPolicy>(["policy", "get"])).egress).toMatchObject({
      denyHosts: ["*.tracker.example", "ads.example.com"],
      denyPorts: [],
      maxRequestsPerSecond: 40,
    });
    const refused = await shells(["policy", "set", "--egress-deny-hosts", "not a host"]);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/^error: validation_failed: /);
    await shells([
      "policy",
      "set",
      "--egress-deny-hosts",
      "",
      "--egress-max-bytes",
      "1073741824",
      "--egress-max-requests-per-second",
      "500",
    ]);
  });

  it.each([
    [["policy", "set"]],
    [["policy", "set", "--gate", "wipe_state=maybe"]],
    [["policy", "set", "--gate", "explode=confirm"]],
    [["policy", "set", "--egress-deny-ports", "70000"]],
    [["policy", "set", "--egress-max-requests-per-second", "0"]],
    [["keys", "create", "--name", "x", "--scope", "shells:everything"]],
    [
      [
        "keys",
        "create",
        "--name",
        "x",
        "--scope",
        "shells:instances:read",
        "--agent",
        "a",
        "--user",
        "b",
      ],
    ],
    [["members", "add", "x@example.com"]],
    [["approvals", "grant", "apr_x"]],
  ])("exits 2 on the usage error in %j", async (args) => {
    const run = await shells(args);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toMatch(/^error: usage: /);
  });
});

describe("shells approvals", () => {
  it("refuses a wrong confirmation and accepts the right one under a confirm gate", async () => {
    await shells(["policy", "set", "--gate", "stop=confirm", "--gate", "delete=confirm"]);
    const shell = await shellsJson<Shell>(["create", "--name", "confirm-me"]);

    const missing = await shells(["action", shell.id, "stop"]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toMatch(/^error: confirmation_required: /);
    expect(missing.stderr).toMatch(/^hint: repeat with --confirm/m);
    const wrong = await shells(["action", shell.id, "stop", "--confirm", "not-me"]);
    expect(wrong.exitCode).toBe(1);
    expect(wrong.stderr).toMatch(/^error: confirmation_required: /);

    const right = await shells(["action", shell.id, "stop", "--confirm", "confirm-me"]);
    expect(right).toMatchObject({ exitCode: 0, stderr: "" });
    expect(right.stdout).toMatch(/status: stopped/);
    const deleted = await shells(["rm", shell.id, "--confirm"]);
    expect(deleted).toMatchObject({ exitCode: 0, stdout: `deleted ${shell.id} (confirm-me)\n` });

    await shells(["policy", "set", "--gate", "stop=none", "--gate", "delete=none"]);
  });

  it("parks wipe_state for the approver, refuses a non-approver and runs it on the owner's grant", async () => {
    const policy = await shellsJson<OrgPolicy>([
      "policy",
      "set",
      "--gate",
      "wipe_state=approvers",
      "--approvers",
      ownerId,
    ]);
    expect(policy).toMatchObject({
      approvalGates: { wipe_state: "approvers" },
      approvers: [ownerId],
    });
    const [developerId, developer] = await memberWithToken("dev@example.com", "developer");
    const [, admin] = await memberWithToken("admin@example.com", "admin");
    const shell = await shellsJson<Shell>(["create"], developer);

    const pending = await shells(["action", shell.id, "wipe_state"], developer);
    expect(pending).toMatchObject({ exitCode: 0, stderr: "" });
    const approvalId = /^approval\s+(apr-\S+)$/m.exec(pending.stdout)?.[1];
    expect(approvalId).toBeTruthy();
    expect(pending.stdout).toMatch(/^pending approval: wipe_state on /);
    expect(pending.stdout).toMatch(/^expires\s+\S+ \(in \d+[smhd]\)$/m);
    expect(pending.stdout).toContain(
      `ask an approver: shells approvals grant ${approvalId} --reason`,
    );

    const waiting = await shells(["approvals", "ls", "--state", "pending"]);
    expect(waiting.stdout).toMatch(/^ID\s+STATE\s+ACTION\s+SHELL\s+REQUESTED BY/);
    expect(waiting.stdout).toMatch(
      new RegExp(
        `^${approvalId}\\s+pending\\s+wipe_state\\s+${shell.id}\\s+user:${developerId}`,
        "m",
      ),
    );

    const outsider = await shells(["approvals", "grant", approvalId!, "--reason", "sure"], admin);
    expect(outsider.exitCode).toBe(1);
    expect(outsider.stderr).toMatch(/^error: forbidden: Only the org's listed approvers/);

    const granted = await shells([
      "approvals",
      "grant",
      approvalId!,
      "--reason",
      "planned maintenance",
    ]);
    expect(granted).toMatchObject({ exitCode: 0, stderr: "" });
    expect(granted.stdout).toMatch(/^state\s+granted$/m);
    expect(granted.stdout).toMatch(/^outcome\s+success$/m);
    expect(granted.stdout).toMatch(new RegExp(`^decided by\\s+user:${ownerId}$`, "m"));
    expect(await shellsJson<Approval>(["approvals", "get", approvalId!])).toMatchObject({
      state: "granted",
      outcome: "success",
      reason: "planned maintenance",
    });

    const history = await shellsJson<ActivityEvent[]>([
      "activity",
      "--shell",
      shell.id,
      "--limit",
      "500",
    ]);
    const steps = history
      .reverse()
      .filter((event) => event.outcome === "success")
      .filter((event) => /^approval\.|^shell\.action\./.test(event.action))
      .map((event) => `${event.action} by ${event.actor.id}`);
    expect(steps).toEqual([
      `approval.request by ${developerId}`,
      `approval.grant by ${ownerId}`,
      `shell.action.wipe_state by ${developerId}`,
    ]);

    const twice = await shells(["approvals", "deny", approvalId!, "--reason", "too late"]);
    expect(twice.exitCode).toBe(1);
    expect(twice.stderr).toMatch(/^error: approval_closed: /);
  });

  it("prints a parked delete as a pending approval, and an approver can deny it", async () => {
    await shells(["policy", "set", "--gate", "delete=approvers", "--approvers", ownerId]);
    const [, developer] = await memberWithToken("deleter@example.com", "developer");
    const shell = await shellsJson<Shell>(["create"], developer);

    const pending = await shells(["rm", shell.id], developer);
    expect(pending.exitCode).toBe(0);
    const approvalId = /^approval\s+(apr-\S+)$/m.exec(pending.stdout)?.[1];
    expect(pending.stdout).toMatch(/^action\s+delete$/m);

    const denied = await shells(["approvals", "deny", approvalId!, "--reason", "still needed"]);
    expect(denied.stdout).toMatch(/^state\s+denied$/m);
    expect((await shellsJson<Shell>(["get", shell.id])).status).toBe("running");
  });
});
