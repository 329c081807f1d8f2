import ShellsClient from "@l1fe/shells";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const serverEntry = join(repoRoot, "apps/server/dist/server.js");

interface CommandRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built server's `issue-key` command as the host's operator would. */
function issueKey(args: string[]): Promise<CommandRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [serverEntry, "issue-key", ...args], {
      cwd: repoRoot,
      env: { ...process.env, SHELLS_DATA_DIR: "" },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) => resolve({ exitCode, stdout, stderr }));
  });
}

beforeAll(() => {
  // The command runs as operators run it: the compiled server entry.
  execFileSync(
    process.execPath,
    [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/server"],
    { cwd: repoRoot, stdio: "inherit" },
  );
});

describe("server issue-key against a running server", () => {
  let server: TestServer;
  let owner: ShellsClient;

  beforeAll(async () => {
    server = await startTestServer();
    owner = new ShellsClient({ baseUrl: server.url, token: server.token });
  });
  afterAll(() => server?.close());

  it("issues a new member's first key, which the live server accepts at once as the member", async () => {
    const member = await owner.members.create({ email: "new@example.com", role: "developer" });
    const run = await issueKey([
      "--email",
      "new@example.com",
      "--name",
      "laptop",
      "--data-dir",
      server.dataDir,
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^shk_[0-9a-z]{12}_[A-Za-z0-9_-]{43}\n$/);
    const token = run.stdout.trim();
    expect(run.stderr).toContain("new@example.com (developer)");
    expect(run.stderr).not.toContain(token);

    const holder = new ShellsClient({ baseUrl: server.url, token });
    const me = await holder.whoami();
    expect(me.actor).toEqual({ type: "user", id: member.id });
    expect(me.role).toBe("developer");
    const shell = await holder.create({ language: "bash" });
    expect(shell.language).toBe("bash");

    const [key] = (await owner.keys.list()).filter((k) => k.name === "laptop");
    expect(key?.createdBy).toEqual({ type: "user", id: member.id });
    expect(await owner.verifyActivity()).toMatchObject({ ok: true });
  });

  it("refuses a disabled member, an unknown email and a scope beyond the role, printing no token", async () => {
    const viewer = await owner.members.create({ email: "viewer@example.com", role: "viewer" });
    const disabled = await owner.members.create({ email: "gone@example.com", role: "developer" });
    await owner.members.update(disabled.id, { disabled: true });
    const refusals = [
      [["--email", "gone@example.com"], /gone@example.com is disabled or removed/],
      [["--email", "nobody@example.com"], /no member nobody@example.com/],
      [
        ["--email", "viewer@example.com", "--scope", "shells:instances:control"],
        /a viewer cannot hold shells:instances:control/,
      ],
    ] as const;
    for (const [args, message] of refusals) {
      const run = await issueKey([...args, "--data-dir", server.dataDir]);
      expect(run.exitCode).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr).toMatch(message);
    }
    const keys = await owner.keys.list();
    expect(keys.filter((k) => [viewer.id, disabled.id].includes(k.principal.id))).toEqual([]);
    expect(await owner.verifyActivity()).toMatchObject({ ok: true });
  });

  it("exits 2 without --email and 1 on a data dir with no store, creating nothing there", async () => {
    const usage = await issueKey(["--data-dir", server.dataDir]);
    expect(usage.exitCode).toBe(2);
    expect(usage.stderr).toMatch(/--email is required/);
    const empty = mkdtempSync(join(tmpdir(), "shells-nostore-"));
    try {
      const run = await issueKey(["--email", "new@example.com", "--data-dir", empty]);
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toMatch(/no store at .*shells\.db/);
      expect(existsSync(join(empty, "shells.db"))).toBe(false);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });
});
