import type { ActivityEvent, Shell } from "@l1fe/shells";
import Database from "better-sqlite3";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
/** The `shells` executable as npm links it (a launcher over the compiled apps/cli/dist/bin.js). */
const cliBin = join(repoRoot, "apps/cli/bin/shells.js");

interface CliRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built `shells` binary with `env`, feeding it `stdin`. */
function runCli(args: string[], env: NodeJS.ProcessEnv, stdin = ""): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliBin, ...args], { cwd: repoRoot, env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) => resolve({ exitCode, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

/** Runs the built `shells` binary against `server` (SHELLS_URL / SHELLS_API_TOKEN). */
function shells(server: TestServer, args: string[], stdin = ""): Promise<CliRun> {
  return runCli(
    args,
    { ...process.env, SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token },
    stdin,
  );
}

beforeAll(() => {
  // The test runs the CLI as users do: the compiled binary over the compiled SDK and contract.
  execFileSync(
    process.execPath,
    [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/cli"],
    {
      cwd: repoRoot,
      stdio: "inherit",
    },
  );
});

describe("the shells CLI against a real server", () => {
  let server: TestServer;
  let shell: Shell;

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it("creates a shell and prints it as JSON with --json", async () => {
    const run = await shells(server, [
      "create",
      "--name",
      "cli-e2e",
      "--env",
      "GREETING=hello",
      "--json",
    ]);
    expect(run.exitCode).toBe(0);
    shell = JSON.parse(run.stdout) as Shell;
    expect(shell).toMatchObject({
      name: "cli-e2e",
      language: "bash",
      status: "running",
      envKeys: ["GREETING"],
    });
  });

  it("lists the shell in a table and as JSON", async () => {
    const table = await shells(server, ["ls"]);
    expect(table.exitCode).toBe(0);
    expect(table.stdout).toMatch(/^ID\s+NAME\s+STATUS/);
    expect(table.stdout).toMatch(new RegExp(`${shell.id}\\s+cli-e2e\\s+running\\s+bash`));

    const json = await shells(server, ["ls", "--json"]);
    expect((JSON.parse(json.stdout) as Shell[]).map((s) => s.id)).toContain(shell.id);
  });

  it("shows one shell by name", async () => {
    const run = await shells(server, ["get", "cli-e2e"]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^id\\s+${shell.id}$`, "m"));
    expect(JSON.parse((await shells(server, ["get", shell.id, "--json"])).stdout)).toMatchObject({
      id: shell.id,
    });
  });

  it("execs a command, printing its streams and exiting with its exit code", async () => {
    const run = await shells(server, [
      "exec",
      shell.id,
      "--",
      "sh",
      "-c",
      "echo out; echo err >&2; exit 3",
    ]);
    expect(run).toEqual({ exitCode: 3, stdout: "out\n", stderr: "err\n" });
  });

  it("execs with the shell's env, extra --env and piped stdin", async () => {
    const env = await shells(server, [
      "exec",
      "--env",
      "EXTRA=x",
      shell.id,
      "--",
      "sh",
      "-c",
      "printenv GREETING; printenv EXTRA",
    ]);
    expect(env).toMatchObject({ exitCode: 0, stdout: "hello\nx\n" });
    const cat = await shells(server, ["exec", shell.id, "--", "cat"], "from stdin\n");
    expect(cat).toMatchObject({ exitCode: 0, stdout: "from stdin\n" });
  });

  it("prints an exec's raw result with --json", async () => {
    const run = await shells(server, ["exec", shell.id, "--json", "--", "echo", "hi"]);
    expect(JSON.parse(run.stdout)).toMatchObject({ exitCode: 0, stdout: "hi\n", stderr: "" });
  });

  it("runs every capability through `action`", async () => {
    const steps: [string[], RegExp][] = [
      [["logs"], /exec/],
      [["restart"], /status: running/],
      [["snapshot", "--name", "before"], /snapshot before/],
      [["restore", "--snapshot", "before"], /before/],
      [["reinstall_os"], /status: running/],
      [["stop"], /status: stopped/],
      [["start"], /status: running/],
      [["wipe_state"], /status: running/],
    ];
    for (const [args, output] of steps) {
      const run = await shells(server, ["action", shell.id, ...args]);
      expect({ args, exitCode: run.exitCode, stderr: run.stderr }).toEqual({
        args,
        exitCode: 0,
        stderr: "",
      });
      expect(run.stdout).toMatch(output);
    }
  });

  it("prints the log lines of `action logs`, and the raw result with --json", async () => {
    const run = await shells(server, ["action", shell.id, "logs", "--tail", "100"]);
    expect(run.stdout).toContain("sh -c echo out; echo err >&2; exit 3");
    const json = await shells(server, ["action", shell.id, "logs", "--json"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ capability: "logs", logs: expect.any(Array) });
  });

  it("lists the shell's snapshots", async () => {
    const run = await shells(server, ["snapshots", shell.id]);
    expect(run.stdout).toMatch(/^before\s/m);
    expect(JSON.parse((await shells(server, ["snapshots", shell.id, "--json"])).stdout)).toEqual([
      expect.objectContaining({ name: "before" }),
    ]);
  });

  it("refuses an action the shell's state does not allow, with the code and a hint", async () => {
    const run = await shells(server, ["action", shell.id, "start"]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/^error: invalid_state: /);
  });

  it("deletes the shell with rm", async () => {
    const run = await shells(server, ["rm", shell.id, "--confirm"]);
    expect(run).toMatchObject({ exitCode: 0, stdout: `deleted ${shell.id} (cli-e2e)\n` });
  });

  it("shows every step in `activity`", async () => {
    const expected = [
      "shell.create",
      "shell.exec",
      ...[
        "logs",
        "restart",
        "snapshot",
        "restore",
        "reinstall_os",
        "stop",
        "start",
        "wipe_state",
      ].map((capability) => `shell.action.${capability}`),
      "shell.delete",
    ];
    const json = await shells(server, [
      "activity",
      "--shell",
      shell.id,
      "--limit",
      "500",
      "--json",
    ]);
    const actions = new Set(
      (JSON.parse(json.stdout) as ActivityEvent[]).map((event) => event.action),
    );
    for (const action of expected) expect(actions).toContain(action);

    const table = await shells(server, ["activity", "--shell", shell.id, "--limit", "500"]);
    expect(table.stdout).toMatch(/^SEQ\s+AGE\s+ACTOR\s+ACTION\s+TARGET\s+OUTCOME\s+ID$/m);
    for (const action of expected) expect(table.stdout).toContain(action);
  });

  it("passes `audit verify`", async () => {
    const run = await shells(server, ["audit", "verify"]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toMatch(/^ok: \d+ events verified\n/);
  });

  it("prints who the token is and which runtimes the server offers", async () => {
    expect(JSON.parse((await shells(server, ["whoami", "--json"])).stdout)).toMatchObject({
      scopes: expect.arrayContaining(["shells:instances:read"]),
    });
    const runtimes = await shells(server, ["runtimes"]);
    expect(runtimes.stdout).toMatch(/^microvm\s+yes\s+simulator/m);
  });

  it("exits 1 with `error: <code>: <message>` for an unknown shell and 2 for a usage error", async () => {
    const missing = await shells(server, ["get", "no-such-shell"]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toMatch(/^error: shell_not_found: /);
    const usage = await shells(server, ["action", "x", "explode"]);
    expect(usage.exitCode).toBe(2);
    expect(usage.stderr).toMatch(/^error: usage: /);
  });
});

describe("shells audit verify after tampering", () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it("exits 1 and names the activity row that was edited in the SQLite file", async () => {
    const created = await shells(server, ["create", "--name", "tampered", "--json"]);
    const { id } = JSON.parse(created.stdout) as Shell;
    await shells(server, ["exec", id, "--", "echo", "one"]);
    await shells(server, ["action", id, "restart"]);
    await shells(server, ["exec", id, "--", "echo", "two"]);
    expect((await shells(server, ["audit", "verify"])).exitCode).toBe(0);

    const db = new Database(join(server.dataDir, "shells.db"));
    let victim: { id: string; seq: number };
    try {
      victim = db
        .prepare("SELECT id, seq FROM activity WHERE action = 'shell.action.restart'")
        .get() as { id: string; seq: number };
      db.prepare("UPDATE activity SET action = 'shell.action.logs' WHERE id = ?").run(victim.id);
    } finally {
      db.close();
    }

    const run = await shells(server, ["audit", "verify"]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(`event ${victim.id} (seq ${victim.seq})`);
    expect(run.stderr).toContain("hash does not match");

    const json = await shells(server, ["audit", "verify", "--json"]);
    expect(json.exitCode).toBe(1);
    expect(JSON.parse(json.stdout)).toMatchObject({
      ok: false,
      eventId: victim.id,
      seq: victim.seq,
    });
  });
});

describe("shells audit verify --expect-head", () => {
  let server: TestServer;

  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  it("prints the head hash and what it cannot prove, and fails once the recorded head is cut off", async () => {
    await shells(server, ["create", "--name", "anchored"]);
    const first = await shells(server, ["audit", "verify"]);
    expect(first.exitCode).toBe(0);
    expect(first.stdout).toContain("not proved: that no events were removed from the end");
    const head = /^head hash: ([0-9a-f]{64})$/m.exec(first.stdout)?.[1];
    expect(head).toBeDefined();
    expect((await shells(server, ["audit", "verify", "--expect-head", head!])).exitCode).toBe(0);

    const db = new Database(join(server.dataDir, "shells.db"));
    try {
      db.prepare("DELETE FROM activity WHERE hash = ?").run(head);
    } finally {
      db.close();
    }
    expect((await shells(server, ["audit", "verify"])).exitCode).toBe(0);
    const anchored = await shells(server, ["audit", "verify", "--expect-head", head!]);
    expect(anchored.exitCode).toBe(1);
    expect(anchored.stderr).toContain(`the recorded head ${head} is not in the chain`);
  });
});

/** A TCP port that was free a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() =>
        typeof address === "object" && address
          ? resolve(address.port)
          : reject(new Error("no port")),
      );
    });
  });
}

describe("shells serve", () => {
  beforeAll(() => {
    execFileSync(
      process.execPath,
      [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/server"],
      {
        cwd: repoRoot,
        stdio: "inherit",
      },
    );
  });

  it("runs the server in the foreground, reachable with the data dir's admin key, until SIGTERM", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "shells-serve-"));
    const port = await freePort();
    const env = { ...process.env, SHELLS_URL: "", SHELLS_API_TOKEN: "", SHELLS_PORT: String(port) };
    const serve = spawn(
      process.execPath,
      [cliBin, "serve", "--data-dir", dataDir, "--port", String(port), "--backend", "simulator"],
      { cwd: repoRoot, env, stdio: ["ignore", "ignore", "pipe"] },
    );
    let serverStderr = "";
    serve.stderr.on("data", (chunk: Buffer) => (serverStderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) =>
      serve.on("exit", (code) => resolve(code)),
    );
    try {
      let list: CliRun | undefined;
      for (let attempt = 0; attempt < 100 && list?.exitCode !== 0; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        list = await runCli(["--data-dir", dataDir, "ls", "--json"], env);
      }
      expect(list, serverStderr).toMatchObject({ exitCode: 0, stdout: "[]\n" });
    } finally {
      serve.kill("SIGTERM");
      expect(await exited).toBe(0);
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
