import ShellsClient, { type Run, type Shell } from "@l1fe/shells";
import { runCli, type CliIo } from "@shells/cli";
import { execFileSync, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
/** The `shells` executable as npm links it (a launcher over the compiled apps/cli/dist/bin.js). */
const cliBin = join(repoRoot, "apps/cli/bin/shells.js");

/** Interpreter turns and python runs need real interpreters: only the container backend has them. */
const backend = process.env["SHELLS_TEST_BACKEND"] === "container" ? "container" : "simulator";
const onContainer = backend === "container";
const NEEDS_CONTAINER =
  "needs real python/node (the simulator runs no code): set SHELLS_TEST_BACKEND=container";

interface CliRun {
  exitCode: number | null;
  stdout: string;
  stderr: string;
  /** When each stdout chunk arrived, ms since the epoch, with its text. */
  chunks: { at: number; text: string }[];
  endedAt: number;
}

let server: TestServer;
let shell: Shell;
let workDir: string;

/** Runs the built `shells` binary against the test server from `workDir`, feeding it `stdin`. */
function shells(args: string[], stdin = ""): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliBin, ...args], {
      cwd: workDir,
      env: { ...process.env, SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token },
    });
    let stdout = "";
    let stderr = "";
    const chunks: { at: number; text: string }[] = [];
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      chunks.push({ at: Date.now(), text: chunk.toString() });
    });
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) =>
      resolve({ exitCode, stdout, stderr, chunks, endedAt: Date.now() }),
    );
    child.stdin.end(stdin);
  });
}

beforeAll(async () => {
  // The test runs the CLI as users do: the compiled binary over the compiled SDK and contract.
  execFileSync(
    process.execPath,
    [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/cli"],
    { cwd: repoRoot, stdio: "inherit" },
  );
  server = await startTestServer({ backend });
  workDir = await mkdtemp(join(tmpdir(), "shells-cli-live-"));
  const client = new ShellsClient({ baseUrl: server.url, token: server.token });
  shell = await client.create({ language: onContainer ? "python" : "bash" });
});
afterAll(async () => {
  await server?.close();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

describe("shells exec, streamed", () => {
  it("prints output as it happens and exits with the command's exit code", async () => {
    const run = await shells([
      "exec",
      shell.id,
      "--",
      "sh",
      "-c",
      "echo first; sleep 1; echo second >&2; echo third; exit 3",
    ]);
    expect(run.exitCode).toBe(3);
    expect(run.stdout).toBe("first\nthird\n");
    expect(run.stderr).toBe("second\n");
    const first = run.chunks.find((c) => c.text.includes("first"))!;
    expect(run.endedAt - first.at).toBeGreaterThan(700);
  });

  it("keeps the buffered call with --no-stream", async () => {
    const run = await shells(["exec", "--no-stream", shell.id, "--", "sh", "-c", "echo x; exit 4"]);
    expect(run).toMatchObject({ exitCode: 4, stdout: "x\n" });
  });
});

describe("shells cp and shells files", () => {
  it("copies a directory up and back down as tar, binary-safe", async () => {
    const local = join(workDir, "project");
    await mkdir(join(local, "src"), { recursive: true });
    const blob = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 13) % 256));
    await writeFile(join(local, "src", "blob.bin"), blob);
    await writeFile(join(local, "README.md"), "# hi\n");

    const up = await shells(["cp", "./project", `${shell.id}:/workspace/project`]);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/copied 3 entries to .*:\/workspace\/project/);

    const listed = await shells(["files", "ls", shell.id, "project"]);
    expect(listed.stdout).toMatch(/^TYPE\s+MODE\s+SIZE\s+MODIFIED\s+PATH$/m);
    expect(listed.stdout).toMatch(/file\s+\S+\s+5 B\s+\S+\s+\/workspace\/project\/README\.md/);
    expect(listed.stdout).toMatch(/directory\s+.*\/workspace\/project\/src\//);

    const down = await shells(["cp", `${shell.id}:/workspace/project`, "./back"]);
    expect(down.exitCode, down.stderr).toBe(0);
    expect(await readFile(join(workDir, "back", "src", "blob.bin"))).toEqual(blob);
    expect(await readFile(join(workDir, "back", "README.md"), "utf8")).toBe("# hi\n");
  });

  it("copies single files both ways, into a directory when the destination is one", async () => {
    await writeFile(join(workDir, "note.txt"), "note\n");
    const up = await shells(["cp", "note.txt", `${shell.id}:/workspace/project/`]);
    expect(up.stdout).toMatch(/copied 5 B to .*:\/workspace\/project\/note\.txt/);
    const stat = await shells(["files", "stat", shell.id, "project/note.txt", "--json"]);
    expect(JSON.parse(stat.stdout)).toMatchObject({ type: "file", sizeBytes: 5 });

    await mkdir(join(workDir, "downloads"));
    const down = await shells(["cp", `${shell.id}:project/note.txt`, "downloads"]);
    expect(down.exitCode, down.stderr).toBe(0);
    expect(await readFile(join(workDir, "downloads", "note.txt"), "utf8")).toBe("note\n");
  });

  it("removes files, refuses a non-empty directory without -r, and reports what is missing", async () => {
    const refused = await shells(["files", "rm", shell.id, "project"]);
    expect(refused.exitCode).toBe(1);
    const removed = await shells(["files", "rm", "-r", shell.id, "project"]);
    expect(removed).toMatchObject({ exitCode: 0, stdout: "removed /workspace/project\n" });
    const missing = await shells(["files", "stat", shell.id, "project"]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toMatch(/^error: file_not_found: /);
    const climbing = await shells(["cp", `${shell.id}:../etc/passwd`, "./passwd"]);
    expect(climbing.exitCode).toBe(1);
    expect(climbing.stderr).toMatch(/validation_failed/);
  });

  it("says how to use cp when neither or both sides are in a shell", async () => {
    const run = await shells(["cp", "a", "b"]);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toMatch(/exactly one of source and destination/);
  });
});

describe("shells term", () => {
  it("attaches, runs what is piped in once the shell prompts, and exits with its exit code", async () => {
    const run = await shells(["term", shell.id], "tty\rstty size\rexit\r");
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/\/dev\/pts\/\d+/);
    expect(run.stdout).toMatch(/24 80/);
  });

  it("drives a local terminal: raw mode while attached, window resizes, Ctrl-C, the exit code", async () => {
    const stdin = Object.assign(new PassThrough(), {
      isTTY: true,
      rawModes: [] as boolean[],
      setRawMode(raw: boolean) {
        this.rawModes.push(raw);
      },
    });
    let output = "";
    const window = Object.assign(new EventEmitter(), {
      isTTY: true,
      columns: 100,
      rows: 30,
      write: (chunk: string | Uint8Array) => (output += Buffer.from(chunk).toString()),
    });
    const io: CliIo = {
      stdout: window,
      stderr: { write: (text: string) => (output += text) },
      stdin,
      env: { SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token },
      cwd: workDir,
    };
    const exited = runCli(["term", shell.id], io);
    await expect.poll(() => output, { timeout: 5000 }).toMatch(/[$#] $/);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(stdin.rawModes).toEqual([true]);
    stdin.write("stty size\r");
    await expect.poll(() => output, { timeout: 5000 }).toMatch(/30 100/);
    window.columns = 132;
    window.rows = 43;
    window.emit("resize");
    stdin.write("stty size\r");
    await expect.poll(() => output, { timeout: 5000 }).toMatch(/43 132/);
    stdin.write("\u0003");
    await expect.poll(() => output, { timeout: 5000 }).toMatch(/\^C/);
    stdin.write("exit 0\r");
    expect(await exited).toBe(0);
    expect(stdin.rawModes).toEqual([true, false]);
  });

  it("prints a minted credential masked, with its expiry, unless --reveal", async () => {
    const masked = await shells(["term", shell.id, "--print-credential"]);
    expect(masked.exitCode).toBe(0);
    expect(masked.stdout).toMatch(/^token\s+sht_…[A-Za-z0-9_-]{4}$/m);
    expect(masked.stdout).toMatch(/^url\s+ws:\/\/\S+\/api\/v1\/term\/attach$/m);
    expect(masked.stdout).toMatch(
      /^protocols\s+shells\.term\.v1, shells\.token\.sht_…[A-Za-z0-9_-]{4}$/m,
    );
    expect(masked.stdout).toMatch(/^expires\s+in (5m|300s|299s) \(\d{4}-\d\d-\d\dT/m);
    expect(masked.stdout).not.toMatch(/sht_[A-Za-z0-9_-]{8,}/);
    expect(masked.stderr).toMatch(/--reveal/);

    const json = await shells(["term", shell.id, "--print-credential", "--json"]);
    expect(JSON.parse(json.stdout)).toMatchObject({ token: expect.stringMatching(/^sht_…/) });

    const revealed = await shells(["term", shell.id, "--print-credential", "--reveal"]);
    const token = /^token\s+(\S+)$/m.exec(revealed.stdout)?.[1];
    expect(token).toMatch(/^sht_[A-Za-z0-9_-]{20,}$/);
    expect(revealed.stdout).toContain(`shells.token.${token}`);
    expect(revealed.stdout).not.toContain(`token=`);
  });

  it("refuses --reveal without --print-credential", async () => {
    const run = await shells(["term", shell.id, "--reveal"]);
    expect(run.exitCode).toBe(2);
  });
});

describe("shells run and shells runs", () => {
  let runId = "";

  it("streams a command's output, prints the run with its result, exits with its code", async () => {
    await writeFile(join(workDir, "input.txt"), "seeded\n");
    const run = await shells([
      "run",
      "--language",
      "bash",
      "--file-in",
      "input.txt:in/input.txt",
      "--artifact",
      "out.txt",
      "--",
      "sh",
      "-c",
      `echo hi; cat in/input.txt > out.txt; echo '{"ok":true}' > "$SHELLS_RESULT"`,
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stdout.startsWith("hi\n")).toBe(true);
    const result = JSON.parse(run.stdout.slice("hi\n".length)) as Run;
    expect(result).toMatchObject({
      status: "succeeded",
      exitCode: 0,
      result: { ok: true },
      artifacts: [{ path: "out.txt" }],
    });
    expect(run.stderr).toMatch(/shells: run \S+ started/);
    expect(run.stderr).toMatch(/shells: artifact out\.txt \(7 B\)/);
    runId = result.id;
  });

  it("exits with a failing run's exit code", async () => {
    const run = await shells(["run", "-l", "bash", "--", "sh", "-c", "echo oops >&2; exit 5"]);
    expect(run.exitCode).toBe(5);
    expect(run.stderr).toContain("oops\n");
    expect(JSON.parse(run.stdout)).toMatchObject({ status: "failed", exitCode: 5 });
  });

  it("refuses a run with both --code and a command", async () => {
    const run = await shells(["run", "-l", "bash", "--code", "true", "--", "true"]);
    expect(run.exitCode).toBe(2);
  });

  it("lists, shows, waits for, downloads from and tears down runs", async () => {
    const listed = await shells(["runs", "ls"]);
    expect(listed.stdout).toMatch(new RegExp(`^${runId}\\s+succeeded\\s+bash\\s+0\\s`, "m"));
    const got = await shells(["runs", "get", runId]);
    expect(got.stdout).toMatch(/^result\s+\{"ok":true\}$/m);
    const result = await shells(["runs", "result", runId]);
    expect(JSON.parse(result.stdout)).toMatchObject({ id: runId, result: { ok: true } });
    const artifact = await shells(["runs", "artifact", runId, "out.txt"]);
    expect(artifact.stdout).toBe("seeded\n");
    const saved = await shells(["runs", "artifact", runId, "out.txt", "-o", "saved.txt"]);
    expect(saved.exitCode).toBe(0);
    expect(await readFile(join(workDir, "saved.txt"), "utf8")).toBe("seeded\n");
    const removed = await shells(["runs", "rm", runId]);
    expect(removed.stdout).toBe(`tore down ${runId} (succeeded)\n`);
  });

  it.skipIf(!onContainer)(`runs python code with shells.result (${NEEDS_CONTAINER})`, async () => {
    const run = await shells([
      "run",
      "-l",
      "python",
      "-c",
      'print("hi")\nshells.result({"ok": True})',
    ]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout.startsWith("hi\n")).toBe(true);
  });
});

describe.skipIf(!onContainer)(`shells interpreter (${NEEDS_CONTAINER})`, () => {
  it("keeps state across turns, prints values, and exits 1 with a traceback on error", async () => {
    expect((await shells(["interpreter", shell.id, "x = 41"])).exitCode).toBe(0);
    const value = await shells(["interpreter", shell.id, "x + 1"]);
    expect(value).toMatchObject({ exitCode: 0, stdout: "42\n" });
    const failed = await shells(["interpreter", shell.id, "-"], "1 / 0\n");
    expect(failed.exitCode).toBe(1);
    expect(failed.stderr).toMatch(/Traceback[\s\S]*ZeroDivisionError/);
  });
});
