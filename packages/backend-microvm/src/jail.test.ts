import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { detectCgroups } from "@shells/backend-container";
import type { SandboxSpec } from "@shells/sandbox";
import {
  makeTestBackend,
  missingTools,
  qemuPidOf,
  request,
  TEST_MEMORY_MB,
} from "./internal/test-support.js";
import type { MicrovmBackend } from "./microvm-backend.js";

/**
 * QEMU's jail, looked at from the host: the process of each shell's VM, its credentials, its
 * namespaces, what its mount namespace holds and its host cgroup.
 *
 * Slow part: two microvms restored from the bash template (~0.2–1 s each under emulation).
 */
describe.skipIf(missingTools.length > 0)("QEMU's jail, seen from the host", () => {
  let backend: MicrovmBackend;
  let cleanup: () => Promise<void>;
  const a = `mvj-${process.pid.toString(36)}-a`;
  const b = `mvj-${process.pid.toString(36)}-b`;
  let pidA: number;
  let pidB: number;
  let uidA: number;

  const spec = (shellId: string): SandboxSpec => ({
    shellId,
    language: "bash",
    runtime: "microvm",
    network: "sealed",
    resources: { cpu: 1, memoryMb: TEST_MEMORY_MB, pids: 64, diskMb: 64 },
    env: {},
  });
  const status = (pid: number) => readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (pid: number, name: string) =>
    new RegExp(`^${name}:[ \\t]*(.*)$`, "m").exec(status(pid))?.[1]?.trim();

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    await backend.create(spec(a));
    await backend.create(spec(b));
    pidA = await qemuPidOf(backend, a);
    pidB = await qemuPidOf(backend, b);
    uidA = Number(field(pidA, "Uid")!.split(/\s+/)[0]);
  }, 120_000);
  afterAll(async () => {
    await backend?.close();
    await cleanup?.();
  }, 60_000);

  it("runs QEMU under a uid of its own, not root, with no capabilities, no_new_privs and seccomp", () => {
    expect(readFileSync(`/proc/${pidA}/comm`, "utf8").trim()).toMatch(/^qemu-system/);
    const uidsA = field(pidA, "Uid")!.split(/\s+/).map(Number);
    const uidsB = field(pidB, "Uid")!.split(/\s+/).map(Number);
    expect(uidsA).toHaveLength(4);
    for (const uid of [...uidsA, ...uidsB]) expect(uid).not.toBe(0);
    expect(uidsA[0]).not.toBe(uidsB[0]);
    expect(field(pidA, "Gid")!.split(/\s+/).map(Number)).not.toContain(0);
    expect(field(pidA, "Groups")).toBe("");
    for (const caps of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
      expect(field(pidA, caps), caps).toBe("0000000000000000");
    expect(field(pidA, "NoNewPrivs")).toBe("1");
    // 2: a seccomp filter (QEMU's -sandbox) is in force.
    expect(field(pidA, "Seccomp")).toBe("2");
  });

  it("gives QEMU its own mount, pid, net and ipc namespaces", () => {
    for (const ns of ["mnt", "pid", "net", "ipc", "uts"]) {
      const host = readlinkSync(`/proc/self/ns/${ns}`);
      expect(readlinkSync(`/proc/${pidA}/ns/${ns}`), ns).not.toBe(host);
      expect(readlinkSync(`/proc/${pidA}/ns/${ns}`), ns).not.toBe(
        readlinkSync(`/proc/${pidB}/ns/${ns}`),
      );
    }
    // QEMU is alone in its pid namespace, and its network has nothing but loopback.
    expect(field(pidA, "NSpid")!.split(/\s+/).at(-1)).toBe("1");
    const interfaces = readFileSync(`/proc/${pidA}/net/dev`, "utf8")
      .split("\n")
      .slice(2)
      .map((line) => line.split(":")[0]!.trim())
      .filter(Boolean);
    expect(interfaces).toEqual(["lo"]);
  });

  it("shows QEMU its own disk layer and sockets, and not another VM's disk or the host's files", () => {
    const root = `/proc/${pidA}/root`;
    const dirA = backend.shellDirOf(a);
    const dirB = backend.shellDirOf(b);
    expect(existsSync(`${root}${dirA}/disk.qcow2`)).toBe(true);
    expect(existsSync(`${root}${dirA}/run/agent.sock`)).toBe(true);
    expect(existsSync(`${root}${dirB}/disk.qcow2`)).toBe(false);
    expect(existsSync(`${root}${dirA}/shell.json`)).toBe(false);
    for (const hostPath of ["/etc/passwd", "/root", "/var/lib", "/home", "/sys"])
      expect(existsSync(`${root}${hostPath}`), hostPath).toBe(false);
    // Of the state directory, only its own shell's directory, and in it only the layer and sockets.
    expect(readdirSync(`${root}${dirname(dirA)}`)).toEqual([basename(dirA)]);
    expect(readdirSync(`${root}${dirA}`).sort()).toEqual(["disk.qcow2", "run"]);
    // Each VM's layer belongs to its own QEMU's uid and nobody else may open it.
    const uidB = Number(field(pidB, "Uid")!.split(/\s+/)[0]);
    const diskB = statSync(`${dirB}/disk.qcow2`);
    expect(diskB.uid).toBe(uidB);
    expect(diskB.mode & 0o077).toBe(0);
  });

  it("caps the files QEMU writes near its disk's size, and puts its sockets out of its reach", () => {
    const limits = readFileSync(`/proc/${pidA}/limits`, "utf8");
    const fileSize = Number(/^Max file size\s+(\d+)\s+(\d+)\s+bytes/m.exec(limits)?.[1]);
    const record = JSON.parse(readFileSync(`${backend.shellDirOf(a)}/shell.json`, "utf8")) as {
      template: { diskBytes: number };
    };
    const diskBytes = record.template.diskBytes + 64 * 1024 * 1024;
    expect(fileSize).toBeGreaterThan(diskBytes);
    expect(fileSize).toBeLessThan(diskBytes * 1.1 + 128 * 1024 * 1024);
    // The socket directory is root's once QEMU has bound its sockets: QEMU cannot swap them.
    const runDir = statSync(`${backend.shellDirOf(a)}/run`);
    expect([runDir.uid, runDir.mode & 0o777]).toEqual([0, 0o700]);
    expect(statSync(`${backend.shellDirOf(a)}/run/agent.sock`).uid).toBe(uidA);
  });

  it("bounds QEMU's memory and threads with a host cgroup", () => {
    const host = detectCgroups();
    if (typeof host === "string") throw new Error(host);
    const groups = readFileSync(`/proc/${pidA}/cgroup`, "utf8").split("\n");
    const pathOf = (controller: string) =>
      groups
        .map((line) => line.split(":"))
        .find(([, controllers]) =>
          host.version === 2 ? controllers === "" : controllers!.split(",").includes(controller),
        )?.[2];
    const memory =
      host.version === 2
        ? readFileSync(`${host.root}${pathOf("")}/../memory.max`, "utf8")
        : readFileSync(`${host.memory}${pathOf("memory")}/memory.limit_in_bytes`, "utf8");
    const limitMb = Number(memory.trim()) / 2 ** 20;
    // The guest's memory, QEMU's own and (under emulation) its translation cache: bounded.
    expect(limitMb).toBeGreaterThan(TEST_MEMORY_MB);
    expect(limitMb).toBeLessThanOrEqual(TEST_MEMORY_MB + 512);
    const pids =
      host.version === 2
        ? readFileSync(`${host.root}${pathOf("")}/../pids.max`, "utf8")
        : readFileSync(`${host.pids}${pathOf("pids")}/pids.max`, "utf8");
    expect(Number(pids.trim())).toBeGreaterThan(0);
  });

  it("keeps the guest working: execs and a snapshot of the jailed VM", async () => {
    expect((await backend.exec(a, request(["echo", "jailed"]))).stdout).toBe("jailed\n");
    await backend.exec(a, request(["sh", "-c", "echo kept > /workspace/k"]));
    await backend.snapshot(a, "s1");
    await backend.exec(a, request(["rm", "/workspace/k"]));
    await backend.restore(a, "s1");
    expect((await backend.exec(a, request(["cat", "/workspace/k"]))).stdout).toBe("kept\n");
    // The restore cold-booted a new QEMU, jailed the same way, under the same uid.
    const pid = await qemuPidOf(backend, a);
    expect(pid).not.toBe(pidA);
    expect(field(pid, "Seccomp")).toBe("2");
    expect(Number(field(pid, "Uid")!.split(/\s+/)[0])).toBe(uidA);
  }, 120_000);
});
