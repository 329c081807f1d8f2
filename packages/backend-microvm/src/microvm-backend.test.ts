import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { release } from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SandboxSpec } from "@shells/sandbox";
import { describeSandboxBackend } from "@shells/sandbox/conformance";
import {
  makeTestBackend,
  missingTools,
  request,
  TEST_GROWN_DISK_MB,
  TEST_MEMORY_MB,
} from "./internal/test-support.js";
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
  pidsLimit: true,
  memoryLimit: false,
  diskLimit: true,
  binaryStdin: true,
  files: true,
  spawn: true,
  pty: true,
  snapshots: true,
  reinstallOs: true,
  cpuUsage: true,
  networkModes: ["sealed", "localhost", "internet"],
} as const;

if (missingTools.length === 0)
  describeSandboxBackend("microvm (QEMU, restored from a saved state)", PROFILE, async () => {
    const { backend, cleanup } = await makeTestBackend();
    return { backend, runtime: "microvm", language: "bash", cleanup };
  });

const FORK_BOMB = "f(){ f|f & }; f";

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
  let isolation: string | undefined;
  const id = `mvt-${process.pid.toString(36)}`;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    // The template exists already (test global setup); this only restores it.
    ({ isolation } = await backend.create(spec(id)));
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

  it("turns address space randomization off in the guest under emulation only", async () => {
    const result = await backend.exec(id, request(["cat", "/proc/sys/kernel/randomize_va_space"]));
    expect(result.stdout.trim()).toBe(isolation === "microvm (emulated)" ? "0" : "2");
  });

  it("runs each exec in a cgroup holding nothing of an earlier exec's, even one that left a process", async () => {
    // Its own cgroup and what that cgroup holds (sh, and the cat reading it).
    const where = request([
      "sh",
      "-c",
      "g=/sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup); echo $g; cat $g/pids.current",
    ]);
    const left = await backend.exec(
      id,
      request([
        "sh",
        "-c",
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & sleep 0.5; cut -d: -f3 /proc/self/cgroup",
      ]),
    );
    const leftGroup = `/sys/fs/cgroup${left.stdout.trim()}`;
    const groups: string[] = [];
    for (let i = 0; i < 3; i++) {
      const [group, pids] = (await backend.exec(id, where)).stdout.trim().split("\n");
      expect(group).toMatch(/^\/sys\/fs\/cgroup\/shell\/x\d+$/);
      expect(group).not.toBe(leftGroup);
      expect(Number(pids)).toBeLessThanOrEqual(2);
      groups.push(group!);
    }
    // The sleep is still counted where it was started, and nowhere else.
    const sleeping = await backend.exec(id, request(["cat", `${leftGroup}/cgroup.procs`]));
    expect(sleeping.stdout.trim().split("\n")).toHaveLength(1);
    await backend.exec(id, request(["sh", "-c", `kill $(cat ${leftGroup}/cgroup.procs)`]));
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

  it("sets the shell's pids limit and a memory limit below the guest's size in the guest", async () => {
    const result = await backend.exec(
      id,
      request(["cat", "/sys/fs/cgroup/shell/pids.max", "/sys/fs/cgroup/shell/memory.max"]),
    );
    const [pids, memoryBytes] = result.stdout.trim().split("\n").map(Number);
    expect(pids).toBe(64);
    // What the guest kernel and the agent need stays out of the shell's reach.
    expect(memoryBytes).toBeGreaterThan(16 * 1024 * 1024);
    expect(memoryBytes).toBeLessThan(TEST_MEMORY_MB * 1024 * 1024);
  });

  it("stops a fork bomb with killReason pids, and the next exec works", async () => {
    const result = await backend.exec(
      id,
      request(["sh", "-c", `${FORK_BOMB}; sleep 5`], { timeoutMs: 20_000 }),
    );
    expect(result.killReason).toBe("pids");
    // Killed (137), or `sh` gave up on a refused fork (2) just before its group was killed.
    expect([137, 2]).toContain(result.exitCode);
    expect((await backend.exec(id, request(["echo", "still here"]))).stdout).toBe("still here\n");
  });

  it("ends a memory balloon with killReason oom, and the next exec works", async () => {
    const result = await backend.exec(
      id,
      request(["sh", "-c", "head -c 1000000000 /dev/zero | tail"], { timeoutMs: 60_000 }),
    );
    expect(result.killReason).toBe("oom");
    expect(result.exitCode).toBe(137);
    expect((await backend.exec(id, request(["echo", "still here"]))).stdout).toBe("still here\n");
  });

  it("kills a detached fork bomb after its exec returned, and the shell takes execs again", async () => {
    // A server started by an earlier, well-behaved exec must survive the bomb's end. (Each exec's
    // own process group ends with it: the exec waits a moment so setsid has left that group.)
    await backend.exec(
      id,
      request(["sh", "-c", "setsid sleep 300 </dev/null >/dev/null 2>&1 & sleep 1"]),
    );
    // The bomb starts two seconds after its exec has returned.
    const bomb = await backend.exec(
      id,
      request([
        "sh",
        "-c",
        `setsid sh -c 'sleep 2; touch /tmp/bomb-started; ${FORK_BOMB}' </dev/null >/dev/null 2>&1 & sleep 0.5`,
      ]),
    );
    expect(bomb).toMatchObject({ exitCode: 0 });
    expect(bomb.killReason).toBeUndefined();
    // Whether the bomb has started, the exec cgroups (the server's and this census's once the
    // bomb's is gone), the processes in the shell's cgroup, and the sleeps running.
    const census = request([
      "sh",
      "-c",
      "test -e /tmp/bomb-started && echo 1 || echo 0; ls -d /sys/fs/cgroup/shell/x* | wc -l; " +
        "cat /sys/fs/cgroup/shell/pids.current; cat /proc/[0-9]*/comm | grep -c '^sleep$'",
    ]);
    const deadline = Date.now() + 20_000;
    let counts: number[];
    do {
      await new Promise((resolve) => setTimeout(resolve, 300));
      counts = (await backend.exec(id, census)).stdout.trim().split("\n").map(Number);
    } while (!(counts[0] === 1 && counts[1] === 2 && counts[2]! < 8) && Date.now() < deadline);
    const [started, groups, processes, sleeps] = counts;
    expect({ started, groups, sleeps }).toEqual({ started: 1, groups: 2, sleeps: 1 });
    expect(processes).toBeLessThan(8);
    expect((await backend.exec(id, request(["echo", "still here"]))).stdout).toBe("still here\n");
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

  it("brings loopback up only in localhost mode: a server from one exec answers the next", async () => {
    const server =
      'my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1:8000", Listen => 5, ReuseAddr => 1) or die "listen: $!\\n"; while (my $c = $s->accept) { print $c "pong\\n"; close $c }';
    const client =
      'my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1:8000", Timeout => 2) or die "connect: $!\\n"; print scalar <$c>';
    const serve = request([
      "sh",
      "-c",
      'setsid perl -MIO::Socket::INET -e "$1" </dev/null >/dev/null 2>&1 & sleep 1',
      "sh",
      server,
    ]);
    const ask = request(["perl", "-MIO::Socket::INET", "-e", client]);
    const local = `${id}-lo`;
    await backend.create(spec(local, { network: "localhost" }));
    try {
      await backend.exec(local, serve);
      expect(await backend.exec(local, ask)).toMatchObject({ exitCode: 0, stdout: "pong\n" });
      // IFF_UP | IFF_LOOPBACK
      expect((await backend.exec(local, request(["cat", "/sys/class/net/lo/flags"]))).stdout).toBe(
        "0x9\n",
      );
    } finally {
      await backend.destroy(local);
    }
    // Sealed: the loopback is down, so not even the shell's own server can be reached.
    expect((await backend.exec(id, request(["cat", "/sys/class/net/lo/flags"]))).stdout).toBe(
      "0x8\n",
    );
    await backend.exec(id, serve);
    const sealed = await backend.exec(id, ask);
    expect(sealed.exitCode).not.toBe(0);
    expect(sealed.stderr).toMatch(/^connect: Network is unreachable/);
  });

  it("gives the shell its diskMb to write, and bounds its layer by the template's disk plus that", async () => {
    const free = await backend.exec(id, request(["sh", "-c", "df -k / | tail -n 1"]));
    const availableMb = Number(free.stdout.trim().split(/\s+/)[3]) / 1024;
    // 64 MiB, less ext4's metadata for the added space, plus the few MiB the base disk keeps free.
    expect(availableMb).toBeGreaterThan(56);
    expect(availableMb).toBeLessThan(72);
    const dir = backend.shellDirOf(id);
    const record = JSON.parse(readFileSync(`${dir}/shell.json`, "utf8")) as {
      template: { diskBytes: number };
    };
    const info = JSON.parse(
      execFileSync("qemu-img", ["info", "-U", "--output=json", `${dir}/disk.qcow2`], {
        encoding: "utf8",
      }),
    ) as { "virtual-size": number };
    expect(info["virtual-size"] - record.template.diskBytes).toBe(64 * 1024 * 1024);
  });

  it("restores a shell of the grown size from the grown state, and grows any other size online", async () => {
    const backingOf = (shellId: string) =>
      (
        JSON.parse(
          execFileSync(
            "qemu-img",
            ["info", "-U", "--output=json", `${backend.shellDirOf(shellId)}/disk.qcow2`],
            { encoding: "utf8" },
          ),
        ) as { "backing-filename": string }
      )["backing-filename"];
    const template = (
      JSON.parse(readFileSync(`${backend.shellDirOf(id)}/shell.json`, "utf8")) as {
        template: { disk: string; grown?: { diskMb: number; disk: string }[] };
      }
    ).template;
    const grown = template.grown?.find((state) => state.diskMb === TEST_GROWN_DISK_MB);
    expect(backingOf(id)).toBe(grown?.disk);
    const other = `${id}-96`;
    await backend.create(
      spec(other, { resources: { cpu: 1, memoryMb: TEST_MEMORY_MB, pids: 64, diskMb: 96 } }),
    );
    try {
      expect(backingOf(other)).toBe(template.disk);
      const free = await backend.exec(other, request(["sh", "-c", "df -k / | tail -n 1"]));
      const availableMb = Number(free.stdout.trim().split(/\s+/)[3]) / 1024;
      expect(availableMb).toBeGreaterThan(86);
      expect(availableMb).toBeLessThan(104);
    } finally {
      await backend.destroy(other);
    }
  });

  it("reinstalls a stopped shell's OS, carrying a workspace of several chunks byte for byte", async () => {
    const other = `${id}-os`;
    await backend.create(spec(other));
    try {
      // 10 MB of noise (three of the transfer's 4 MiB chunks), a link and a mode to keep.
      const made = await backend.exec(
        other,
        request([
          "sh",
          "-c",
          "cd /workspace && head -c 10000000 /dev/urandom > big && ln -s big link && chmod 751 big && " +
            "echo junk > /etc/junk && md5sum big",
        ]),
      );
      expect(made.exitCode).toBe(0);
      await backend.stop(other);
      expect(await backend.reinstallOs(other)).toMatchObject({ state: "stopped" });
      await backend.start(other);
      const after = await backend.exec(
        other,
        request([
          "sh",
          "-c",
          "cd /workspace && md5sum big && readlink link && stat -c %a big; test -e /etc/junk && echo kept",
        ]),
      );
      expect(after.stdout).toBe(`${made.stdout}big\n751\n`);
    } finally {
      await backend.destroy(other);
    }
  }, 120_000);

  it("refuses internet without an egress proxy, and a proxy socket path the kernel cannot take", async () => {
    await expect(backend.create(spec(`${id}-net`, { network: "internet" }))).rejects.toMatchObject({
      code: "unsupported",
    });
    await expect(
      backend.create(
        spec(`${id}-net`, { network: "internet", egress: { socketPath: "relative/proxy.sock" } }),
      ),
    ).rejects.toMatchObject({ code: "unsupported" });
    await expect(
      backend.create(spec(`${id}-net`, { egress: { socketPath: `/${"x".repeat(120)}` } })),
    ).rejects.toMatchObject({ code: "unsupported" });
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
