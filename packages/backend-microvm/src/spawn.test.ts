import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SandboxProcess, SandboxSpawnRequest } from "@shells/sandbox";
import {
  makeTestBackend,
  missingTools,
  request,
  TEST_MEMORY_MB,
  TEST_MICROVM_DIR,
  testImages,
} from "./internal/test-support.js";
import { MicrovmBackend } from "./microvm-backend.js";

/**
 * Spawned processes in a real guest: terminals on a pty (^C, signals to the foreground job), pipes,
 * backpressure, several at once over the one agent port, limits, and what a lost connection does.
 *
 * Slow part: one microvm restored from the bash template (~0.2–1 s under emulation); each test
 * spawns in it. ~15–25 s here.
 */
describe.skipIf(missingTools.length > 0)("spawned processes in a microvm", () => {
  let backend: MicrovmBackend;
  let stateDir: string;
  let cleanup: () => Promise<void>;
  const id = `mvs-${process.pid.toString(36)}`;

  async function spawnText(
    command: string[],
    pty?: SandboxSpawnRequest["pty"],
  ): Promise<{ proc: SandboxProcess; out: { stdout: string; stderr: string } }> {
    const out = { stdout: "", stderr: "" };
    const proc = await backend.spawn(
      id,
      { command, env: {}, cwd: "/workspace", ...(pty ? { pty } : {}) },
      { onOutput: (stream, chunk) => void (out[stream] += Buffer.from(chunk).toString("utf8")) },
    );
    return { proc, out };
  }

  /** The command names of every process in the guest. */
  async function processes(): Promise<string> {
    return (
      await backend.exec(id, request(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"]))
    ).stdout;
  }

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    const info = await backend.create({
      shellId: id,
      language: "bash",
      runtime: "microvm",
      network: "sealed",
      resources: { cpu: 1, memoryMb: TEST_MEMORY_MB, pids: 64, diskMb: 64 },
      env: {},
    });
    expect(info.state).toBe("running");
    stateDir = backend.shellDirOf(id).replace(/\/shells\/[^/]+$/, "");
  }, 120_000);
  afterAll(async () => {
    await backend?.close();
    await cleanup?.();
  }, 60_000);

  it("interrupts the terminal's foreground command on ^C and keeps the shell", async () => {
    const { proc, out } = await spawnText(["sh"], { cols: 80, rows: 24 });
    await proc.write("sleep 100; echo after-sleep=$?\n");
    await expect.poll(processes, { timeout: 10_000 }).toMatch(/sleep 100/);
    await proc.write(Uint8Array.of(0x03));
    // The interactive shell drops the rest of the line (no after-sleep) and prompts again.
    await expect.poll(() => out.stdout, { timeout: 10_000 }).toMatch(/\^C/);
    await proc.write("echo still-here\n");
    await expect.poll(() => out.stdout, { timeout: 10_000 }).toMatch(/^still-here\r?$/m);
    expect(await processes()).not.toMatch(/sleep 100/);
    await proc.write("exit\n");
    expect((await proc.exit).exitCode).toBe(0);
  });

  it("sends signal() to the terminal's foreground job, SIGKILL ends the terminal", async () => {
    const { proc, out } = await spawnText(["sh"], { cols: 80, rows: 24 });
    await proc.write("sleep 101; echo status=$?\n");
    await expect.poll(processes, { timeout: 10_000 }).toMatch(/sleep 101/);
    proc.signal("SIGTERM");
    await expect.poll(() => out.stdout, { timeout: 10_000 }).toMatch(/status=143/);
    proc.signal("SIGKILL");
    expect((await proc.exit).exitCode).toBe(137);
  });

  it("keeps stdout and stderr apart without a pty, ends on EOF, and says 127 for no command", async () => {
    const { proc, out } = await spawnText([
      "sh",
      "-c",
      "while read -r line; do echo out:$line; echo err:$line >&2; done; exit 5",
    ]);
    await proc.write("one\ntwo\n");
    await expect.poll(() => out.stdout, { timeout: 10_000 }).toBe("out:one\nout:two\n");
    expect(out.stderr).toBe("err:one\nerr:two\n");
    proc.closeStdin();
    expect(await proc.exit).toMatchObject({ exitCode: 5 });
    const missing = await spawnText(["no-such-command"]);
    expect((await missing.proc.exit).exitCode).toBe(127);
    expect(missing.out.stderr).toMatch(/no-such-command/);
  });

  it("runs several spawns and an exec at once over the one port, their output kept apart", async () => {
    const script = (tag: string) => [
      "sh",
      "-c",
      `i=0; while [ $i -lt 200 ]; do echo ${tag}$i; i=$((i+1)); done`,
    ];
    const [a, b] = await Promise.all([spawnText(script("a")), spawnText(script("b"))]);
    const exec = await backend.exec(id, request(script("c")));
    const expected = (tag: string) =>
      Array.from({ length: 200 }, (_, i) => `${tag}${i}\n`).join("");
    expect((await a.proc.exit).exitCode).toBe(0);
    expect((await b.proc.exit).exitCode).toBe(0);
    expect(a.out.stdout).toBe(expected("a"));
    expect(b.out.stdout).toBe(expected("b"));
    expect(exec.stdout).toBe(expected("c"));
  });

  it("stops reading while onOutput holds back, and loses nothing", async () => {
    let release: () => void = () => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    let bytes = 0;
    let first = true;
    const proc = await backend.spawn(
      id,
      {
        command: [
          "sh",
          "-c",
          "n=0; while [ $n -lt 64 ]; do head -c 65536 /dev/zero; n=$((n+1)); echo $n > /tmp/progress; done",
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
    await expect.poll(() => bytes, { timeout: 10_000 }).toBeGreaterThan(0);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    // Held back: the process blocked on its full pipe far short of its 64 rounds.
    const progress = Number((await backend.exec(id, request(["cat", "/tmp/progress"]))).stdout);
    expect(progress).toBeLessThan(8);
    release();
    expect((await proc.exit).exitCode).toBe(0);
    expect(bytes).toBe(64 * 65536);
  });

  it("holds a spawned process to the shell's pids limit", async () => {
    const { proc } = await spawnText(["sh", "-c", "f(){ f|f & }; f; sleep 5"]);
    expect(await proc.exit).toMatchObject({ killReason: "pids", exitCode: 137 });
    expect((await backend.exec(id, request(["echo", "alive"]))).stdout).toBe("alive\n");
  });

  it("kills spawned processes whose connection is gone, and the next server takes execs", async () => {
    const { proc } = await spawnText(["sh", "-c", "exec sleep 302"], { cols: 80, rows: 24 });
    await expect.poll(processes, { timeout: 10_000 }).toMatch(/sleep 302/);
    // The control plane goes away (its connection closes); QEMU and the guest run on.
    await backend.close();
    expect((await proc.exit).killReason).toBe("host_restart");
    backend = new MicrovmBackend({
      stateDir,
      cacheDir: TEST_MICROVM_DIR,
      images: testImages,
    });
    // The listing holds its own `cat`: an exec that failed (empty output) does not pass. The
    // first connection after a restart may go unanswered and be retried (up to ~15 s, see README).
    await expect
      .poll(
        async () => ((list) => /\bcat\b/.test(list) && !/sleep 302/.test(list))(await processes()),
        {
          timeout: 40_000,
        },
      )
      .toBe(true);
  }, 90_000);
});
