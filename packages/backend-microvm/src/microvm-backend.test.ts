import { existsSync, readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { release } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SandboxSpec } from "@shells/sandbox";
import { describeSandboxBackend } from "@shells/sandbox/conformance";
import { makeTestBackend, missingTools, request, TEST_MEMORY_MB } from "./internal/test-support.js";
import type { MicrovmBackend } from "./microvm-backend.js";

/**
 * What the backend really does: execs in a POSIX guest with binary stdin, files through the guest
 * agent, snapshots of the disk layer; the rest is refused.
 *
 * Slow part: every conformance test restores a fresh microvm (~0.2–1 s under emulation) and the
 * snapshot and stop/start tests cold-boot one (~3–5 s); the whole file takes ~30–60 s here.
 */
const PROFILE = {
  posixShell: true,
  pidsLimit: false,
  memoryLimit: false,
  diskLimit: false,
  binaryStdin: true,
  files: true,
  spawn: false,
  pty: false,
  snapshots: true,
  reinstallOs: false,
  cpuUsage: false,
  networkModes: ["sealed", "localhost"],
} as const;

if (missingTools.length === 0)
  describeSandboxBackend("microvm (QEMU, restored from a saved state)", PROFILE, async () => {
    const { backend, cleanup } = await makeTestBackend();
    return { backend, runtime: "microvm", language: "bash", cleanup };
  });

const spec = (shellId: string, extra: Partial<SandboxSpec> = {}): SandboxSpec => ({
  shellId,
  language: "bash",
  runtime: "microvm",
  network: "sealed",
  resources: { cpu: 1, memoryMb: TEST_MEMORY_MB, pids: 64, diskMb: 64 },
  env: {},
  ...extra,
});

describe.skipIf(missingTools.length > 0)("microvm backend, from inside a real guest", () => {
  let backend: MicrovmBackend;
  let cleanup: () => Promise<void>;
  const id = `mvt-${process.pid.toString(36)}`;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    // The template exists already (test global setup); this only restores it.
    await backend.create(spec(id));
  }, 120_000);
  afterAll(async () => {
    await backend?.close();
    await cleanup?.();
  }, 60_000);

  it("runs its own kernel, not the host's", async () => {
    const result = await backend.exec(id, request(["uname", "-r"]));
    expect(result.exitCode).toBe(0);
    expect(result.stdout.trim()).toMatch(/cloud-amd64$/);
    expect(result.stdout.trim()).not.toBe(release());
  });

  it("streams stdout and stderr and reports exit codes", async () => {
    const chunks: string[] = [];
    const result = await backend.exec(id, request(["sh", "-c", "echo out; echo err >&2; exit 7"]), {
      onOutput: (stream, chunk) => void chunks.push(`${stream}:${Buffer.from(chunk).toString()}`),
    });
    expect(result).toMatchObject({ exitCode: 7, stdout: "out\n", stderr: "err\n" });
    expect(chunks).toEqual(expect.arrayContaining(["stdout:out\n", "stderr:err\n"]));
    expect((await backend.exec(id, request(["cat"], { stdin: "from stdin" }))).stdout).toBe(
      "from stdin",
    );
    expect((await backend.exec(id, request(["no-such-command"]))).exitCode).toBe(127);
  });

  it("ends a command past its wall clock with wall_clock, and stays usable", async () => {
    const started = Date.now();
    const result = await backend.exec(id, request(["sleep", "30"], { timeoutMs: 1000 }));
    expect(result.killReason).toBe("wall_clock");
    expect(Date.now() - started).toBeLessThan(10_000);
    expect((await backend.exec(id, request(["echo", "alive"]))).stdout).toBe("alive\n");
  });

  it("cuts output at the limit with output_limit", async () => {
    const result = await backend.exec(id, request(["yes"], { maxOutputBytes: 1000 }));
    expect(result.killReason).toBe("output_limit");
    expect(result.truncated).toBe(true);
    expect(result.stdout.length).toBe(1000);
  });

  it("does not see the host's files", async () => {
    const marker = `/tmp/${id}-host-marker`;
    await import("node:fs/promises").then((fs) => fs.writeFile(marker, "host"));
    try {
      const result = await backend.exec(
        id,
        request([
          "sh",
          "-c",
          `test -e ${marker} && echo visible || echo hidden; ls /proc | grep -c '^[0-9]'`,
        ]),
      );
      expect(result.stdout.split("\n")[0]).toBe("hidden");
      // Only the guest's own few processes exist in it.
      expect(Number(result.stdout.split("\n")[1])).toBeLessThan(100);
    } finally {
      await import("node:fs/promises").then((fs) => fs.rm(marker, { force: true }));
    }
  });

  it("has no network interface but lo when sealed", async () => {
    const result = await backend.exec(id, request(["sh", "-c", "ls /sys/class/net"]));
    expect(result.stdout.trim().split(/\s+/)).toEqual(["lo"]);
  });

  it("refuses internet", async () => {
    await expect(backend.create(spec(`${id}-net`, { network: "internet" }))).rejects.toMatchObject({
      code: "unsupported",
    });
  });

  it("destroy leaves no qemu process, socket or overlay behind", async () => {
    const other = `${id}-gone`;
    await backend.create(spec(other));
    expect((await backend.exec(other, request(["echo", "hi"]))).stdout).toBe("hi\n");
    const dirs = await backend.list();
    expect(dirs.map((d) => d.shellId)).toContain(other);
    const shellDirs = (backend as unknown as { shellDirOf(id: string): string }).shellDirOf(other);
    const pid = Number(
      (
        await import("node:fs/promises").then((fs) =>
          fs.readFile(`${shellDirs}/shell.json`, "utf8"),
        )
      ).match(/"pid": (\d+)/)?.[1],
    );
    expect(pid).toBeGreaterThan(0);
    await backend.destroy(other);
    // Gone, or a zombie its parent (this process) has not reaped yet: nothing runs any more.
    const running = () => {
      try {
        return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
      } catch {
        return false;
      }
    };
    expect(running()).toBe(false);
    expect(existsSync(shellDirs)).toBe(false);
    expect((await backend.list()).map((d) => d.shellId)).not.toContain(other);
    await backend.destroy(other);
    void readdir;
  });
});
