import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PREPARE_STATE_SCRIPT } from "./internal/manifests.js";
import {
  OOM_CHECK_SCRIPT,
  RESTORE_SCRIPT,
  SIGNAL_SCRIPT,
  SNAPSHOT_SCRIPT,
  execArgv,
  spawnArgv,
} from "./internal/shell-scripts.js";

/**
 * The scripts the backend runs through the exec subresource, run for real with this host's
 * /bin/sh and coreutils (Debian's, as in the default images): the exec wrapper's stdin, wall clock
 * and early kill, the spawn wrapper's process group, and the state scripts on directories that
 * stand where a Pod mounts its volumes (a bubblewrap mount namespace puts them at /state and
 * /snapshots).
 */

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "shells-k8s-scripts-"));
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

function run(argv: string[], stdin = "", extraEnv: Record<string, string> = {}) {
  const started = Date.now();
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { PATH: process.env.PATH, SHELLS_EXEC_DIR: join(dir, "execs"), ...extraEnv },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  // The exec subresource never closes stdin on v4: the wrapper must not need EOF.
  child.stdin.write(stdin);
  const done = new Promise<{ code: number | null; stdout: string; stderr: string; ms: number }>(
    (resolve) =>
      child.on("close", (code) => resolve({ code, stdout, stderr, ms: Date.now() - started })),
  );
  return { child, done };
}

const exec = (command: string[], options: Partial<Parameters<typeof execArgv>[0]> = {}) =>
  execArgv({
    execId: "x1",
    cwd: dir,
    stdinBytes: 0,
    timeoutMs: 20_000,
    env: {},
    command,
    ...options,
  });

/** Whether a process still runs (a zombie waiting for a parent that does not reap has ended). */
const alive = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(" ")[2] !== "Z";
  } catch {
    return false;
  }
};

describe("the exec wrapper", () => {
  it("passes output, the exit code, the env and the working directory", async () => {
    const { done } = run(
      exec(["sh", "-c", 'echo "$GREETING from $(pwd)"; echo oops >&2; exit 3'], {
        env: { GREETING: "hello world" },
      }),
    );
    const result = await done;
    expect(result).toMatchObject({
      code: 3,
      stdout: `hello world from ${dir}\n`,
      stderr: "oops\n",
    });
  });

  it("gives the command exactly the stdin bytes, then EOF, though the stream stays open", async () => {
    const { child, done } = run(exec(["cat"], { stdinBytes: 9 }), "piped in and more");
    const result = await done;
    child.stdin.end();
    expect(result).toMatchObject({ code: 0, stdout: "piped in " });
    const none = run(exec(["cat"], { stdinBytes: 0 }));
    expect((await none.done).stdout).toBe("");
  });

  it("kills the command and its children with SIGKILL when the wall clock runs out", async () => {
    const pidFile = join(dir, "child.pid");
    const { done } = run(
      exec(["sh", "-c", `sleep 30 & echo $! > ${pidFile}; wait`], { timeoutMs: 300 }),
    );
    const result = await done;
    expect(result.code).toBe(137);
    expect(result.ms).toBeLessThan(10_000);
    const child = Number(await readFile(pidFile, "utf8"));
    await expect.poll(() => alive(child)).toBe(false);
    expect(await readdir(join(dir, "execs"))).not.toContain("x1.pid");
  });

  it("ends early when the backend sends ALRM through the signal script (output limit, abort)", async () => {
    const { done } = run(exec(["sleep", "30"], { execId: "x2" }));
    const signal = spawnSync("/bin/sh", ["-c", SIGNAL_SCRIPT, "sh", "x2", "ALRM", ""], {
      env: { PATH: process.env.PATH, SHELLS_EXEC_DIR: join(dir, "execs") },
    });
    expect(signal.status).toBe(0);
    const result = await done;
    expect(result.code).toBe(137);
    expect(result.ms).toBeLessThan(10_000);
  });

  it("says nothing of OOM for an exec the OOM killer did not touch", () => {
    const check = spawnSync("/bin/sh", ["-c", OOM_CHECK_SCRIPT, "sh", "x2"], {
      env: { PATH: process.env.PATH, SHELLS_EXEC_DIR: join(dir, "execs") },
    });
    expect(check.stdout.toString()).toBe("");
  });
});

describe("the spawn wrapper", () => {
  it("puts a process on pipes in its own group, so a signal reaches its children", async () => {
    const pidFile = join(dir, "spawned-child.pid");
    const { child, done } = run(
      spawnArgv({
        spawnId: "p1",
        cwd: dir,
        tty: false,
        env: {},
        command: ["sh", "-c", `sleep 30 & echo $! > ${pidFile}; wait`],
      }),
    );
    await expect.poll(() => existsSync(pidFile)).toBe(true);
    const grandchild = Number(await readFile(pidFile, "utf8"));
    const signal = spawnSync("/bin/sh", ["-c", SIGNAL_SCRIPT, "sh", "p1", "TERM", "-"], {
      env: { PATH: process.env.PATH, SHELLS_EXEC_DIR: join(dir, "execs") },
    });
    expect(signal.status).toBe(0);
    const result = await done;
    child.stdin.end();
    expect(result.code).not.toBe(0);
    await expect.poll(() => alive(grandchild)).toBe(false);
  });
});

const bwrap = spawnSync("bwrap", ["--version"]).status === 0;

describe.skipIf(!bwrap)(
  "the state scripts (in a mount namespace with /state and /snapshots)",
  () => {
    let state: string;
    let snapshots: string;

    beforeAll(async () => {
      state = join(dir, "state");
      snapshots = join(dir, "snapshots");
      await mkdir(join(state, "workspace"), { recursive: true });
      await mkdir(snapshots, { recursive: true });
    });

    function inPod(script: string, args: string[] = []) {
      const result = spawnSync(
        "bwrap",
        [
          "--ro-bind",
          "/usr",
          "/usr",
          "--symlink",
          "usr/bin",
          "/bin",
          "--symlink",
          "usr/lib",
          "/lib",
          "--symlink",
          "usr/lib64",
          "/lib64",
          "--symlink",
          "usr/sbin",
          "/sbin",
          "--proc",
          "/proc",
          "--dev",
          "/dev",
          "--tmpfs",
          "/tmp",
          "--bind",
          state,
          "/state",
          "--bind",
          snapshots,
          "/snapshots",
          "/bin/sh",
          "-ec",
          script,
          "sh",
          ...args,
        ],
        { encoding: "utf8" },
      );
      return { code: result.status, stdout: result.stdout, stderr: result.stderr };
    }

    it("snapshots the workspace and restores it, dropping what was written since", async () => {
      await writeFile(join(state, "workspace", "kept.txt"), "before");
      const snap = inPod(SNAPSHOT_SCRIPT, ["first"]);
      expect(snap.code, snap.stderr).toBe(0);
      expect(Number(snap.stdout.trim())).toBeGreaterThan(0);
      await writeFile(join(state, "workspace", "kept.txt"), "after");
      await writeFile(join(state, "workspace", "new.txt"), "new");
      const restore = inPod(RESTORE_SCRIPT, ["first"]);
      expect(restore.code, restore.stderr).toBe(0);
      expect(await readFile(join(state, "workspace", "kept.txt"), "utf8")).toBe("before");
      expect(existsSync(join(state, "workspace", "new.txt"))).toBe(false);
      expect((await readdir(state)).sort()).toEqual(["workspace"]);
    });

    it("refuses a snapshot that does not exist and leaves the workspace alone", async () => {
      const restore = inPod(RESTORE_SCRIPT, ["missing"]);
      expect(restore.code).toBe(3);
      expect(await readFile(join(state, "workspace", "kept.txt"), "utf8")).toBe("before");
    });

    it("finishes a restore a crash cut between its two renames, when the Pod starts again", async () => {
      // The state a crash leaves after `mv workspace workspace.old` and before the second rename.
      await rm(join(state, "workspace.old"), { recursive: true, force: true });
      await mkdir(join(state, "workspace.restore"), { recursive: true });
      await writeFile(join(state, "workspace.restore", "restored.txt"), "new state");
      await rm(join(state, "workspace"), { recursive: true });
      await mkdir(join(state, "workspace.old"));
      const prepare = inPod(PREPARE_STATE_SCRIPT);
      expect(prepare.code, prepare.stderr).toBe(0);
      expect(await readFile(join(state, "workspace", "restored.txt"), "utf8")).toBe("new state");
      expect((await readdir(state)).sort()).toEqual(["workspace"]);
    });

    it("keeps the old workspace when a crash cut a restore while it unpacked", async () => {
      await mkdir(join(state, "workspace.restore"), { recursive: true });
      await writeFile(join(state, "workspace.restore", "half.txt"), "half");
      const prepare = inPod(PREPARE_STATE_SCRIPT);
      expect(prepare.code, prepare.stderr).toBe(0);
      expect(await readFile(join(state, "workspace", "restored.txt"), "utf8")).toBe("new state");
      expect((await readdir(state)).sort()).toEqual(["workspace"]);
    });
  },
);
