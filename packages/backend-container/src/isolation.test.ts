import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { detectCgroups, ShellCgroup, shellCgroupName } from "./internal/cgroups.js";
import { shellEntryArgs } from "./internal/exec.js";
import { ensureHelper } from "./internal/native.js";
import type { HolderRecord } from "./internal/state.js";
import { readJson } from "./internal/state.js";
import {
  bashSpec,
  hostReport,
  makeTestBackend,
  request,
  TEST_IMAGES_DIR,
} from "./internal/test-support.js";

const execFileAsync = promisify(execFile);

/** Tries every descriptor 3..64 as a way out: list it, write through it, open `..` from it. */
const FD_ATTACK = `
ls -la /proc/self/fd
for fd in $(seq 3 64); do
  ls /proc/self/fd/$fd/ >/dev/null 2>&1 && echo "LISTED $fd"
  touch /proc/self/fd/$fd/pwned-$fd 2>/dev/null && echo "WROTE $fd"
  (cd /proc/self/fd/$fd/.. 2>/dev/null && ls -d etc/shadow 2>/dev/null && echo "CLIMBED $fd")
done
echo done
`;

describe.runIf(hostReport.available)("what a shell cannot see or hold of the host", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;
  let strayDir: string;

  beforeAll(async () => {
    ({ backend, stateDir, cleanup } = await makeTestBackend());
    strayDir = await mkdtemp(`${tmpdir()}/shells-stray-`);
    await backend.create(bashSpec("iso"));
  });
  afterAll(async () => {
    await cleanup();
    await rm(strayDir, { recursive: true, force: true });
  });

  it("closes every descriptor its parent left open before entering the shell", async () => {
    // The helper started the way a careless parent would start it: with the host's `/` and a
    // directory on descriptors 7 and 9, neither marked close-on-exec.
    const helper = await ensureHelper(stateDir);
    const holder = await readJson<HolderRecord>(`${stateDir}/shells/iso/holder.json`);
    const cgroups = detectCgroups();
    if (!holder || typeof cgroups === "string") throw new Error("shell not running");
    const shell = new ShellCgroup(cgroups, "shells", shellCgroupName(stateDir, "iso"));
    const args = [
      helper,
      "exec",
      ...shellEntryArgs(
        {
          initPid: holder.initPid,
          initStart: holder.initStart,
          cgroupProcs: shell.procsFiles,
          oomEventsFile: shell.oomEventsFile,
          rootCapabilities: "none",
        },
        "/",
      ),
      "--",
      "sh",
      "-c",
      FD_ATTACK,
    ];
    const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
    const { stdout } = await execFileAsync(
      "bash",
      ["-c", `exec 7</ 9<'${strayDir}' 3>/dev/null; exec ${quoted}`],
      { maxBuffer: 1 << 20 },
    );
    expect(stdout).toContain("done");
    expect(stdout).not.toMatch(/LISTED|WROTE|CLIMBED/);
    expect(await readdir(strayDir)).toEqual([]);
    expect((await readdir("/")).filter((name) => name.startsWith("pwned"))).toEqual([]);
  });

  it("hands a command no descriptor beyond its stdio, through exec and spawn", async () => {
    const result = await backend.exec("iso", request(["sh", "-c", "ls /proc/self/fd"]));
    expect(result.stdout.trim().split(/\s+/).sort()).toEqual(["0", "1", "2", "3"]); // 3: ls's own dir
    let output = "";
    const process = await backend.spawn(
      "iso",
      { ...request(["sh", "-c", "ls /proc/self/fd; echo end"]), pty: undefined },
      {
        onOutput: (_stream, chunk) => {
          output += Buffer.from(chunk).toString("utf8");
        },
      },
    );
    await process.exit;
    expect(output.replace("end", "").trim().split(/\s+/).sort()).toEqual(["0", "1", "2", "3"]);
  });

  it("shows no host path in any process's command line or environment, nor in the mount table", async () => {
    // A background process keeps an output drainer alive in the shell while we look.
    await backend.exec("iso", request(["sh", "-c", "sleep 30 & echo started"]));
    const script = `
for f in /proc/[0-9]*/cmdline /proc/[0-9]*/environ /proc/self/mountinfo /proc/mounts; do
  tr '\\0' '\\n' < "$f" 2>/dev/null | sed "s|^|$f: |"
done`;
    const result = await backend.exec("iso", request(["sh", "-c", script]));
    expect(result.stdout).toContain("/proc/1/cmdline: shells-init");
    expect(result.stdout).toContain("shells-drain");
    for (const hostPath of [stateDir, TEST_IMAGES_DIR, "/sys/fs/cgroup", "/var/lib/shells"])
      expect(result.stdout).not.toContain(hostPath);
  });

  it("keeps the exec cgroups it makes no longer than something runs in them", async () => {
    await backend.exec("iso", request(["true"]));
    const cgroups = detectCgroups();
    if (typeof cgroups === "string") throw new Error(cgroups);
    const shell = new ShellCgroup(cgroups, "shells", shellCgroupName(stateDir, "iso"));
    // Only the background `sleep 30` of the previous test may still hold one, and one empty
    // group is kept for the next exec.
    const groups = await shell.execGroups();
    const held = await Promise.all(groups.map(async (group) => (await group.members()).length > 0));
    expect(held.filter(Boolean).length).toBeLessThanOrEqual(1);
    expect(held.filter((holds) => !holds).length).toBeLessThanOrEqual(1);
    for (let i = 0; i < 5; i++) await backend.exec("iso", request(["true"]));
    expect((await shell.execGroups()).length).toBe(groups.length);
    expect(existsSync(shell.pidsDir)).toBe(true);
  });
});
