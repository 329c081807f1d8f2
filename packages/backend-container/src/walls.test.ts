import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { detectCgroups, ShellCgroup, shellCgroupName } from "./internal/cgroups.js";
import { UID_BASE } from "./internal/state.js";
import {
  bashSpec,
  hostReport,
  installProbe,
  makeTestBackend,
  request,
} from "./internal/test-support.js";

/** Host pids of the processes in a shell's cgroup. */
async function shellProcesses(stateDir: string, shellId: string): Promise<number[]> {
  const cgroups = detectCgroups();
  if (typeof cgroups === "string") throw new Error(cgroups);
  const group = new ShellCgroup(cgroups, "shells", shellCgroupName(stateDir, shellId));
  return group.members();
}

async function status(pid: number): Promise<Record<string, string>> {
  const fields: Record<string, string> = {};
  for (const line of (await readFile(`/proc/${pid}/status`, "utf8")).split("\n")) {
    const [key, value] = line.split(":\t");
    if (key && value !== undefined) fields[key] = value.trim();
  }
  return fields;
}

describe.runIf(hostReport.available)("the walls around a container shell", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;
  let hostDir: string;
  const secret = `host-secret-${randomBytes(8).toString("hex")}`;
  let hostServer: Server;
  let hostPort = 0;
  let hostConnections = 0;

  beforeAll(async () => {
    ({ backend, stateDir, cleanup } = await makeTestBackend());
    hostDir = await mkdtemp(`${tmpdir()}/shells-host-secret-`);
    await writeFile(`${hostDir}/secret.txt`, secret);
    // A server on the host's loopback only, like the control plane's port.
    hostServer = createServer((socket) => {
      hostConnections += 1;
      socket.end("host says hi\n");
    });
    await new Promise<void>((resolve) => hostServer.listen(0, "127.0.0.1", resolve));
    hostPort = (hostServer.address() as { port: number }).port;
  });
  afterAll(async () => {
    await cleanup();
    await rm(hostDir, { recursive: true, force: true });
    await new Promise((resolve) => hostServer.close(resolve));
  });

  const create = (shellId: string, network: "sealed" | "localhost" = "sealed") =>
    backend.create(bashSpec(shellId, { network }));
  const sh = (shellId: string, script: string) =>
    backend.exec(shellId, request(["sh", "-c", script]));

  it("keeps the host's files, the state dir and other shells' workspaces out of reach", async () => {
    await create("walls-a");
    await create("walls-b");
    expect((await sh("walls-a", `echo ${secret}-a > /workspace/mine.txt`)).exitCode).toBe(0);

    const hostShadow = await readFile("/etc/shadow", "utf8");
    const shadowInside = await sh("walls-b", "cat /etc/shadow");
    // The shell has its own /etc/shadow (from its image), never the host's.
    expect(shadowInside.stdout).not.toBe(hostShadow);
    for (const path of [`${hostDir}/secret.txt`, hostDir, stateDir, `${stateDir}/shells/walls-a`]) {
      expect((await sh("walls-b", `test -e '${path}'`)).exitCode, path).not.toBe(0);
    }
    // Nothing anywhere in shell b's filesystem carries the host's secret or shell a's file.
    const search = await sh(
      "walls-b",
      `grep -rls -e '${secret}' / --exclude-dir=proc --exclude-dir=sys; ls /workspace`,
    );
    expect(search.stdout).not.toContain(secret);
    expect(search.stdout).not.toContain("mine.txt");
    expect(search.stdout).not.toMatch(/\//);
    // Mounts inside are the shell's own: no host path shows up in its mount table.
    const mounts = await sh("walls-b", "cat /proc/mounts");
    expect(mounts.stdout).not.toContain(stateDir);
    expect(mounts.stdout).not.toContain("/dev/vda");
  });

  it("shows the host only an unprivileged uid and no capabilities in sandbox processes", async () => {
    await create("walls-uid-1");
    await create("walls-uid-2");
    expect((await sh("walls-uid-1", "id -u")).stdout).toBe("0\n");
    await sh("walls-uid-1", "sleep 60 > /dev/null 2>&1 &");
    await sh("walls-uid-2", "sleep 60 > /dev/null 2>&1 &");
    const uids: number[] = [];
    for (const shellId of ["walls-uid-1", "walls-uid-2"]) {
      let sleeper: Record<string, string> | undefined;
      for (const pid of await shellProcesses(stateDir, shellId)) {
        const fields = await status(pid).catch(() => null);
        if (fields?.Name === "sleep") sleeper = fields;
      }
      expect(sleeper, `a sleep process in ${shellId}`).toBeDefined();
      const [realUid, effectiveUid] = (sleeper?.Uid ?? "").split(/\s+/).map(Number);
      expect(realUid).toBeGreaterThanOrEqual(UID_BASE);
      expect(effectiveUid).toBe(realUid);
      expect(sleeper?.CapEff).toBe("0000000000000000");
      expect(sleeper?.CapPrm).toBe("0000000000000000");
      expect(sleeper?.NoNewPrivs).toBe("1");
      expect(sleeper?.Seccomp).toBe("2");
      uids.push(realUid ?? 0);
    }
    // Each shell has its own range: root of one is not root of the other.
    expect(uids[0]).not.toBe(uids[1]);
  });

  it("refuses nested user namespaces, keyrings, bpf, perf events and userfaultfd", async () => {
    await create("walls-syscalls");
    await installProbe(backend, "walls-syscalls");
    const probe = await backend.exec("walls-syscalls", request(["/workspace/probe", "syscalls"]));
    const errnos = Object.fromEntries(
      probe.stdout
        .trim()
        .split("\n")
        .map((line) => line.split(" ")),
    );
    expect(errnos).toEqual({
      keyctl: "1",
      bpf: "1",
      perf_event_open: "1",
      userfaultfd: "1",
      unshare_user: "1",
    });
    const unshare = await sh("walls-syscalls", "unshare -U true");
    expect(unshare.exitCode).not.toBe(0);
    expect(unshare.stderr).toMatch(/Operation not permitted/);
  });

  it("hides the host's processes", async () => {
    await create("walls-pids");
    const inside = await sh(
      "walls-pids",
      "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline; echo; done",
    );
    expect(inside.exitCode).toBe(0);
    expect(inside.stdout).not.toMatch(/node|vitest|shells-keeper|systemd|process_api/);
    // Only the shell's own few processes exist: its init and this exec's.
    const pids = await sh("walls-pids", "ls -d /proc/[0-9]* | wc -l");
    expect(Number(pids.stdout.trim())).toBeLessThan(6);
  });

  it("cannot reach a server on the host's loopback from sealed or localhost shells", async () => {
    await create("walls-net-sealed", "sealed");
    await create("walls-net-local", "localhost");
    const connect = `exec 3<>/dev/tcp/127.0.0.1/${hostPort} && cat <&3`;
    const sealed = await backend.exec("walls-net-sealed", request(["bash", "-c", connect]));
    const local = await backend.exec("walls-net-local", request(["bash", "-c", connect]));
    expect(sealed.exitCode).not.toBe(0);
    expect(sealed.stderr).toMatch(/Network is unreachable|Cannot assign/);
    expect(local.exitCode).not.toBe(0);
    expect(local.stderr).toMatch(/Connection refused/);
    expect(sealed.stdout + local.stdout).not.toContain("host says hi");
    expect(hostConnections).toBe(0);
    // The sealed shell has no usable interface at all; the localhost one only loopback.
    expect(
      (
        await sh(
          "walls-net-sealed",
          "cat /sys/class/net/lo/operstate 2>/dev/null; ls /proc/net/dev >/dev/null && tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
        )
      ).stdout.trim(),
    ).toBe("lo");
  });

  it("keeps the state dir unreadable to other host users", async () => {
    // The control plane's files (disk images, env values in shell.json) are root-only.
    const entries = await readdir(stateDir);
    expect(entries).toContain("shells");
    const mode = execFileSync("stat", ["-c", "%a", `${stateDir}/shells`])
      .toString()
      .trim();
    expect(mode).toBe("700");
  });
});
