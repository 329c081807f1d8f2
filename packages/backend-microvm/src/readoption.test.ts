import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { detectCgroups, shellCgroupName, ShellCgroup } from "@shells/backend-container";
import {
  missingTools,
  request,
  TEST_IMAGES_DIR,
  TEST_MEMORY_MB,
  TEST_MICROVM_DIR,
  testImages,
} from "./internal/test-support.js";
import { MicrovmBackend } from "./microvm-backend.js";

/** The built packages the control-plane child runs (the suite builds them before it runs). */
const DIST = {
  microvm: fileURLToPath(new URL("../dist/index.js", import.meta.url)),
  container: fileURLToPath(new URL("../../backend-container/dist/index.js", import.meta.url)),
};

/**
 * A control plane of its own: creates a microvm, writes a file in it, says so on stdout with its
 * QEMU's pid, and waits to be killed.
 */
const CONTROL_PLANE = `
const { MicrovmBackend } = await import(process.env.MICROVM_DIST);
const { ensureImage } = await import(process.env.CONTAINER_DIST);
const backend = new MicrovmBackend({
  stateDir: process.env.STATE_DIR,
  cacheDir: process.env.CACHE_DIR,
  images: (language, onProgress) => ensureImage(process.env.IMAGES_DIR, language, onProgress ? { onProgress } : {}),
});
const shellId = process.env.SHELL_ID;
await backend.create({
  shellId, language: "bash", runtime: "microvm", network: "sealed", env: {},
  resources: { cpu: 1, memoryMb: Number(process.env.MEMORY_MB), pids: 64, diskMb: 64 },
});
const wrote = await backend.exec(shellId, {
  command: ["sh", "-c", "echo before > /workspace/mark"], env: {}, cwd: "/", stdin: undefined,
  timeoutMs: 20000, maxOutputBytes: 1024,
});
const record = JSON.parse((await import("node:fs")).readFileSync(backend.shellDirOf(shellId) + "/shell.json", "utf8"));
console.log(JSON.stringify({ exitCode: wrote.exitCode, pid: record.pid, uid: record.uid }));
setInterval(() => undefined, 1000);
`;

/** Whether a process runs (a zombie does not). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/**
 * Pids of every process on the host running as `uid` (zombies aside: they hold nothing but their
 * pid until whichever process inherited them reaps them).
 */
function processesOf(uid: number): number[] {
  return readdirSync("/proc")
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        const status = readFileSync(`/proc/${pid}/status`, "utf8");
        return Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) === uid && !/^State:\s+Z/m.test(status);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/**
 * Re-adoption after the control plane is killed: a real child process creates a VM and is
 * SIGKILLed; the VM keeps running, a new backend on the same state dir adopts it, and its delete
 * leaves nothing behind.
 *
 * Slow part: one microvm restored from the bash template in the child (~1–3 s with its start).
 */
describe.skipIf(missingTools.length > 0)("a control plane killed with SIGKILL", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) {
      const backend = new MicrovmBackend({
        stateDir: dir,
        cacheDir: TEST_MICROVM_DIR,
        images: testImages,
      });
      for (const shell of await backend.list()) await backend.destroy(shell.shellId);
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("leaves its VM running; a new backend adopts it, and its delete leaves nothing behind", async () => {
    for (const file of Object.values(DIST))
      if (!existsSync(file)) throw new Error(`${file} is missing: build first (npx tsc -b)`);
    const stateDir = await mkdtemp(`${tmpdir()}/shells-microvm-kill-`);
    dirs.push(stateDir);
    const shellId = `mvk-${process.pid.toString(36)}`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", CONTROL_PLANE], {
      env: {
        ...process.env,
        MICROVM_DIST: DIST.microvm,
        CONTAINER_DIST: DIST.container,
        STATE_DIR: stateDir,
        CACHE_DIR: TEST_MICROVM_DIR,
        IMAGES_DIR: TEST_IMAGES_DIR,
        SHELL_ID: shellId,
        MEMORY_MB: String(TEST_MEMORY_MB),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const line = await new Promise<string>((resolve, reject) => {
      let stdout = "";
      child.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
        if (stdout.includes("\n")) resolve(stdout.split("\n")[0]!);
      });
      child.once("exit", (code) => reject(new Error(`the child exited (${code}): ${stderr}`)));
    });
    const made = JSON.parse(line) as { exitCode: number; pid: number; uid: number };
    expect(made.exitCode).toBe(0);

    process.kill(child.pid!, "SIGKILL");
    await exited;
    expect(running(made.pid)).toBe(true);

    const backend = new MicrovmBackend({
      stateDir,
      cacheDir: TEST_MICROVM_DIR,
      images: testImages,
    });
    try {
      expect(await backend.list()).toEqual([
        expect.objectContaining({ shellId, state: "running" }),
      ]);
      const adopted = await backend.exec(shellId, request(["cat", "/workspace/mark"]));
      expect(adopted).toMatchObject({ exitCode: 0, stdout: "before\n" });
      expect((await backend.exec(shellId, request(["echo", "after"]))).stdout).toBe("after\n");

      const host = detectCgroups();
      if (typeof host === "string") throw new Error(host);
      const cgroupDirs = new ShellCgroup(host, "shells-microvm", shellCgroupName(stateDir, shellId))
        .dirs;
      for (const dir of cgroupDirs) expect(existsSync(dir), dir).toBe(true);
      const shellDir = backend.shellDirOf(shellId);

      await backend.destroy(shellId);
      expect(running(made.pid)).toBe(false);
      expect(processesOf(made.uid)).toEqual([]);
      for (const dir of cgroupDirs) expect(existsSync(dir), dir).toBe(false);
      expect(existsSync(shellDir)).toBe(false);
      expect(await backend.list()).toEqual([]);
      expect(existsSync(`/var/lib/shells/microvm-uids/${made.uid}`)).toBe(false);
    } finally {
      await backend.close();
    }
  }, 120_000);
});
