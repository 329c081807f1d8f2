import { readdir, readFile } from "node:fs/promises";
import { writeTar } from "@shells/sandbox";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { bashSpec, hostReport, makeTestBackend, request } from "./internal/test-support.js";

const decoder = new TextDecoder();

/** A spawned process whose output accumulates as text. */
async function spawnText(
  backend: ContainerBackend,
  shellId: string,
  command: string[],
  pty?: { cols: number; rows: number },
) {
  const out = { stdout: "", stderr: "" };
  const proc = await backend.spawn(
    shellId,
    { command, env: {}, cwd: "/workspace", ...(pty ? { pty } : {}) },
    { onOutput: (stream, chunk) => void (out[stream] += decoder.decode(chunk)) },
  );
  return { proc, out };
}

/** utime + stime (clock ticks) of a host process. */
async function cpuTicks(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

/** Host pids of `shells-sandbox spawn` helpers of a state dir. */
async function spawnHelpers(stateDir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const argv = await readFile(`/proc/${entry}/cmdline`, "utf8").then(
      (text) => text.split("\0"),
      () => [],
    );
    if (argv[0]?.startsWith(`${stateDir}/bin/`) && argv[1] === "spawn") pids.push(Number(entry));
  }
  return pids;
}

describe.runIf(hostReport.available)("spawned processes and terminals in a container shell", () => {
  let backend: ContainerBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, stateDir, cleanup } = await makeTestBackend());
    await backend.create(bashSpec("term"));
  });
  afterAll(() => cleanup());

  it("gives the terminal a pty of the shell's own devpts, as the controlling terminal", async () => {
    const { proc, out } = await spawnText(backend, "term", ["sh"], { cols: 80, rows: 24 });
    await proc.write("tty; echo ctty=$(cat /proc/self/stat | cut -d' ' -f7); stty size\n");
    await expect.poll(() => out.stdout, { timeout: 5000 }).toMatch(/24 80/);
    const tty = /(\/dev\/pts\/\d+)/.exec(out.stdout)?.[1];
    expect(tty).toBeDefined();
    // tty_nr of the process is non-zero: it has a controlling terminal. The device is listed in
    // the shell's /dev/pts (its own instance: an exec sees the same node).
    expect(out.stdout).toMatch(/ctty=[1-9]\d*/);
    const listing = await backend.exec("term", request(["ls", "/dev/pts"]));
    expect(listing.stdout.split("\n")).toContain(tty?.replace("/dev/pts/", ""));
    await proc.write("exit 3\n");
    expect((await proc.exit).exitCode).toBe(3);
  });

  it("interrupts the foreground command on Ctrl-C (0x03) and keeps the shell", async () => {
    const { proc, out } = await spawnText(backend, "term", ["sh"], { cols: 80, rows: 24 });
    await proc.write("sleep 100; echo after-sleep=$?\n");
    // Wait until sleep runs in the shell, then type Ctrl-C.
    await expect
      .poll(
        async () =>
          (await backend.exec("term", request(["sh", "-c", "cat /proc/[0-9]*/comm"]))).stdout,
        {
          timeout: 5000,
        },
      )
      .toMatch(/^sleep$/m);
    const sent = performance.now();
    await proc.write(Uint8Array.of(0x03));
    await expect.poll(() => out.stdout, { timeout: 5000 }).toMatch(/\^C/);
    expect(performance.now() - sent).toBeLessThan(5000);
    await proc.write("echo still-here\n");
    await expect.poll(() => out.stdout, { timeout: 5000 }).toMatch(/^still-here\r?$/m);
    const sleeping = await backend.exec("term", request(["sh", "-c", "cat /proc/[0-9]*/comm"]));
    expect(sleeping.stdout).not.toMatch(/^sleep$/m);
    await proc.write("exit\n");
    expect((await proc.exit).exitCode).toBe(0);
  });

  it("sends signal() to the terminal's foreground job", async () => {
    const { proc, out } = await spawnText(backend, "term", ["sh"], { cols: 80, rows: 24 });
    await proc.write("sleep 100; echo status=$?\n");
    await expect
      .poll(
        async () =>
          (await backend.exec("term", request(["sh", "-c", "cat /proc/[0-9]*/comm"]))).stdout,
        {
          timeout: 5000,
        },
      )
      .toMatch(/^sleep$/m);
    proc.signal("SIGTERM");
    await expect.poll(() => out.stdout, { timeout: 5000 }).toMatch(/status=143/);
    proc.signal("SIGKILL");
    expect((await proc.exit).exitCode).toBe(137);
  });

  it("keeps stdout and stderr apart without a pty, and ends on EOF", async () => {
    const { proc, out } = await spawnText(backend, "term", [
      "sh",
      "-c",
      "while read -r line; do echo out:$line; echo err:$line >&2; done; exit 5",
    ]);
    await proc.write("one\ntwo\n");
    await expect.poll(() => out.stdout, { timeout: 5000 }).toBe("out:one\nout:two\n");
    expect(out.stderr).toBe("err:one\nerr:two\n");
    proc.closeStdin();
    expect(await proc.exit).toMatchObject({ exitCode: 5 });
    expect(out.stdout).toBe("out:one\nout:two\n");
  });

  it("reports a command that does not exist as exit 127", async () => {
    const { proc, out } = await spawnText(backend, "term", ["no-such-command"]);
    expect((await proc.exit).exitCode).toBe(127);
    expect(out.stderr).toMatch(/no-such-command/);
  });

  it("stops reading while onOutput holds back, and loses nothing", async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let bytes = 0;
    let first = true;
    const proc = await backend.spawn(
      "term",
      {
        command: [
          "sh",
          "-c",
          "n=0; while [ $n -lt 500 ]; do head -c 65536 /dev/zero; n=$((n+1)); echo $n > /tmp/progress; done",
        ],
        env: {},
        cwd: "/workspace",
      },
      {
        onOutput: (_stream, chunk) => {
          bytes += chunk.length;
          if (!first) return;
          first = false;
          return held;
        },
      },
    );
    const progress = async () =>
      Number((await backend.exec("term", request(["cat", "/tmp/progress"]))).stdout.trim() || 0);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const before = await progress();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(await progress()).toBe(before);
    expect(before).toBeLessThan(100);
    release();
    expect((await proc.exit).exitCode).toBe(0);
    expect(bytes).toBe(500 * 65536);
  });

  it("starts a terminal about as fast as an exec, and an idle one costs the host no CPU", async () => {
    const timings: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      const { proc } = await spawnText(backend, "term", ["cat"], { cols: 80, rows: 24 });
      timings.push(performance.now() - started);
      proc.signal("SIGKILL");
      await proc.exit;
    }
    timings.sort((a, b) => a - b);
    expect(timings[2]).toBeLessThan(250);

    const { proc } = await spawnText(backend, "term", ["sh"], { cols: 80, rows: 24 });
    const [helper] = await spawnHelpers(stateDir);
    expect(helper).toBeDefined();
    const before = await cpuTicks(helper ?? 0);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect((await cpuTicks(helper ?? 0)) - before).toBeLessThanOrEqual(2);
    proc.signal("SIGKILL");
    await proc.exit;
  });

  it("ends terminals with stopped on restart, and with deleted on destroy", async () => {
    await backend.create(bashSpec("term-ends"));
    const first = await spawnText(backend, "term-ends", ["sh"], { cols: 80, rows: 24 });
    await first.proc.write("sleep 100\n");
    await backend.restart("term-ends");
    expect((await first.proc.exit).killReason).toBe("stopped");
    const second = await spawnText(backend, "term-ends", ["sh"], { cols: 80, rows: 24 });
    await backend.destroy("term-ends");
    expect((await second.proc.exit).killReason).toBe("deleted");
    expect(await spawnHelpers(stateDir)).toEqual([]);
    await expect(
      backend.spawn(
        "term-ends",
        { command: ["sh"], env: {}, cwd: "/" },
        { onOutput: () => undefined },
      ),
    ).rejects.toMatchObject({ code: "not_found" });
  });

  it("refuses to spawn in a stopped shell", async () => {
    await backend.create(bashSpec("term-stopped"));
    await backend.stop("term-stopped");
    await expect(
      backend.spawn(
        "term-stopped",
        { command: ["sh"], env: {}, cwd: "/" },
        { onOutput: () => undefined },
      ),
    ).rejects.toMatchObject({ code: "not_running" });
  });
});

describe.runIf(hostReport.available)("file paths in a container shell stay inside it", () => {
  let backend: ContainerBackend;
  let cleanup: () => Promise<void>;
  const marker = `sandbox-host-${Date.now()}`;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    await backend.create(bashSpec("paths"));
    await backend.files.write("paths", "/etc/hostname", new TextEncoder().encode(`${marker}\n`));
  });
  afterAll(() => cleanup());

  it("resolves `..` the caller did not normalise at the shell's root", async () => {
    const host = await readFile("/etc/hostname", "utf8");
    expect(host).not.toContain(marker);
    for (const path of ["/workspace/../../etc/hostname", "/../../../../etc/hostname"]) {
      expect(decoder.decode(await backend.files.read("paths", path, 4096))).toBe(`${marker}\n`);
    }
    const root = await backend.files.list("paths", "/workspace/../..");
    expect(root.map((entry) => entry.path)).toContain("/workspace/../../workspace");
  });

  it("follows a symlink pointing out of /workspace only inside the shell", async () => {
    await backend.exec("paths", request(["ln", "-s", "/etc/hostname", "/workspace/link"]));
    await backend.exec("paths", request(["ln", "-s", "../../../../../etc", "/workspace/up"]));
    expect(decoder.decode(await backend.files.read("paths", "/workspace/link", 4096))).toBe(
      `${marker}\n`,
    );
    expect(decoder.decode(await backend.files.read("paths", "/workspace/up/hostname", 4096))).toBe(
      `${marker}\n`,
    );
    expect(await backend.files.stat("paths", "/workspace/link")).toMatchObject({ type: "symlink" });
  });

  it("unpacks traversal entries of an archive inside the shell, never on the host", async () => {
    const name = `shells-escape-${Date.now()}`;
    const archive = await writeTar([
      {
        name: `../../../../../tmp/${name}`,
        type: "file",
        mode: 0o644,
        linkName: "",
        data: new TextEncoder().encode("escaped\n"),
      },
    ]);
    await backend.files.importTar("paths", "/workspace/unpacked", archive).catch(() => undefined);
    await expect(readFile(`/tmp/${name}`)).rejects.toMatchObject({ code: "ENOENT" });
  });
});
