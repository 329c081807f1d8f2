import type { ExecResult } from "@shells/contract";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { bashSpec, hostReport, makeTestBackend, request, SMALL } from "./internal/test-support.js";

describe.runIf(hostReport.available)("limits of a container shell", () => {
  let backend: ContainerBackend;
  let cleanup: () => Promise<void>;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    await backend.create(bashSpec("bystander"));
  });
  afterAll(() => cleanup());

  /**
   * Runs `script` in a fresh shell while a bystander shell keeps answering: the exhaustion stays
   * inside the shell that caused it. Returns the exhausting exec's result and the bystander's
   * slowest round trip.
   */
  async function exhaust(
    shellId: string,
    script: string,
    extra: Parameters<typeof request>[1] = {},
    resources = SMALL,
  ) {
    await backend.create({
      shellId,
      language: "bash",
      runtime: "container",
      network: "sealed",
      resources,
      env: {},
    });
    let done = false;
    const exhausting = backend.exec(shellId, request(["sh", "-c", script], extra)).finally(() => {
      done = true;
    });
    let slowestMs = 0;
    let answers = 0;
    while (!done) {
      const started = performance.now();
      const echo = await backend.exec("bystander", request(["echo", "alive"]));
      slowestMs = Math.max(slowestMs, performance.now() - started);
      expect(echo.stdout).toBe("alive\n");
      answers += 1;
    }
    const result: ExecResult = await exhausting;
    // The shell itself survives its exhaustion and answers again.
    expect((await backend.exec(shellId, request(["echo", "recovered"]))).stdout).toBe(
      "recovered\n",
    );
    return { result, slowestMs, answers };
  }

  it("stops a fork bomb with killReason pids while another shell stays responsive", async () => {
    const { result, slowestMs, answers } = await exhaust("bomb", "f(){ f|f & }; f; sleep 5", {
      timeoutMs: 15_000,
    });
    expect(result.killReason).toBe("pids");
    expect(answers).toBeGreaterThan(0);
    expect(slowestMs).toBeLessThan(2000);
  });

  it("ends a memory balloon with killReason oom while another shell stays responsive", async () => {
    const { result, slowestMs } = await exhaust(
      "balloon",
      "head -c 2000000000 /dev/zero | tail",
      { timeoutMs: 20_000 },
      { ...SMALL, memoryMb: 64 },
    );
    expect(result.killReason).toBe("oom");
    expect(result.exitCode).toBe(137);
    expect(slowestMs).toBeLessThan(2000);
  });

  it("ends an endless loop at its wall clock with killReason wall_clock", async () => {
    const { result, slowestMs } = await exhaust("spin", "while :; do :; done", { timeoutMs: 1500 });
    expect(result.killReason).toBe("wall_clock");
    expect(result.exitCode).toBe(137);
    expect(result.durationMs).toBeGreaterThanOrEqual(1500);
    expect(result.durationMs).toBeLessThan(5000);
    expect(slowestMs).toBeLessThan(2000);
  });

  it("cuts `yes | head -c 2G` at the output limit with killReason output_limit", async () => {
    const limit = 10 * 1024 * 1024;
    const { result } = await exhaust("flood", "yes | head -c 2G", {
      maxOutputBytes: limit,
      timeoutMs: 30_000,
    });
    expect(result.killReason).toBe("output_limit");
    expect(result.truncated).toBe(true);
    expect(Buffer.byteLength(result.stdout) + Buffer.byteLength(result.stderr)).toBe(limit);
    expect(result.durationMs).toBeLessThan(10_000);
  });

  it("fails writes past the disk limit with ENOSPC and killReason disk, never touching the host", async () => {
    const { result } = await exhaust(
      "filler",
      "dd if=/dev/zero of=/workspace/big bs=1M count=200",
      { timeoutMs: 20_000 },
      { ...SMALL, diskMb: 48 },
    );
    expect(result.exitCode).not.toBe(0);
    expect(result.stderr).toMatch(/No space left on device/);
    expect(result.killReason).toBe("disk");
    const df = await backend.exec("filler", request(["df", "-k", "/"]));
    const sizeKb = Number(df.stdout.trim().split("\n")[1]?.split(/\s+/)[1]);
    expect(sizeKb).toBeLessThanOrEqual(48 * 1024);
    // Freed space is usable again.
    expect(
      (
        await backend.exec(
          "filler",
          request([
            "sh",
            "-c",
            "rm /workspace/big && echo ok > /workspace/small && cat /workspace/small",
          ]),
        )
      ).stdout,
    ).toBe("ok\n");
  });

  it("holds a command back while the output consumer is slow, and still ends it at its wall clock", async () => {
    await backend.create(bashSpec("slow-reader"));
    let chunks = 0;
    const result = await backend.exec(
      "slow-reader",
      request(["yes"], { timeoutMs: 1000, maxOutputBytes: 10 * 1024 * 1024 }),
      {
        // A consumer that takes 100 ms per chunk: `yes` must wait for it instead of racing ahead.
        onOutput: () => {
          chunks += 1;
          return new Promise((resolve) => setTimeout(resolve, 100));
        },
      },
    );
    expect(result.killReason).toBe("wall_clock");
    expect(chunks).toBeLessThan(30);
    expect(result.stdout.length).toBeLessThan(4 * 1024 * 1024);
  });

  it("throttles cpu to the shell's quota", async () => {
    await backend.create({
      shellId: "quota",
      language: "bash",
      runtime: "container",
      network: "sealed",
      resources: { ...SMALL, cpu: 0.2 },
      env: {},
    });
    // Two busy loops for one second of wall time get about 0.2 s of cpu between them.
    const result = await backend.exec(
      "quota",
      request([
        "sh",
        "-c",
        "while :; do :; done & a=$!; while :; do :; done & b=$!; sleep 1; kill $a $b; wait; times",
      ]),
    );
    // `times`: this shell's user/sys time, then its (reaped) children's.
    const [, childrenLine = ""] = result.stdout.trim().split("\n");
    const seconds = childrenLine
      .split(/\s+/)
      .map((field) => /^(\d+)m([\d.]+)s$/.exec(field))
      .filter((m): m is RegExpExecArray => m !== null)
      .reduce((sum, m) => sum + Number(m[1]) * 60 + Number(m[2]), 0);
    expect(seconds).toBeGreaterThan(0.05);
    expect(seconds).toBeLessThan(0.6);
  });
});
