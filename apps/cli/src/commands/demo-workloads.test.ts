import type { ActivityEvent, Run } from "@l1fe/shells";
import { describe, expect, it } from "vitest";
import { DEMO_WORKLOADS, PENDING_WORKLOADS, type DemoVerdict } from "./demo-workloads.js";

const base: Run = {
  id: "run-1",
  status: "succeeded",
  language: "python",
  runtime: "container",
  shellId: "sh-1",
  exitCode: 0,
  killReason: null,
  result: null,
  artifacts: [],
  output: { stdout: "", stderr: "", stdoutBytes: 0, stderrBytes: 0 },
  error: null,
  createdAt: "2026-01-01T00:00:00.000Z",
  finishedAt: "2026-01-01T00:00:01.000Z",
};

function event(action: string, details: Record<string, unknown>): ActivityEvent {
  return {
    id: `ev-${action}`,
    seq: 1,
    orgId: "org-1",
    actor: { type: "system", id: "egress-proxy" },
    action,
    target: { type: "shell", id: "sh-1" },
    outcome: action === "egress.denied" ? "denied" : "success",
    details,
    time: "2026-01-01T00:00:00.500Z",
    prevHash: "0",
    hash: "1",
  };
}

function judge(
  id: string,
  runtime: "container" | "wasm",
  run: Partial<Run>,
  audit: ActivityEvent[] = [],
): DemoVerdict {
  const workload = DEMO_WORKLOADS.find((w) => w.id === id);
  if (!workload) throw new Error(`no workload ${id}`);
  return workload.variant(runtime).judge({ run: { ...base, runtime, ...run }, audit });
}

const denied = event("egress.denied", {
  host: "169.254.169.254",
  address: "169.254.169.254",
  port: 80,
  protocol: "http",
  reason: "address_not_public",
});
const refusedAttempts = {
  "metadata credentials via the proxy": "refused: HTTP 403",
  "metadata by raw socket": "failed: [Errno 111] Connection refused",
};

describe("the demo's judgement", () => {
  it("counts an exfiltration contained only with every attempt refused and no egress allowed", () => {
    expect(
      judge("metadata-exfiltration", "container", { result: refusedAttempts }, [denied]),
    ).toEqual({ ok: true, how: "egress.denied 169.254.169.254:80 address_not_public" });
    const allowed = event("egress.allowed", { host: "169.254.169.254", port: 80 });
    expect(
      judge("metadata-exfiltration", "container", { result: refusedAttempts }, [denied, allowed]),
    ).toMatchObject({ ok: false, how: expect.stringContaining("egress.allowed 169.254.169.254") });
    expect(
      judge("metadata-exfiltration", "container", {
        result: { ...refusedAttempts, "metadata by raw socket": "reached: HTTP/1.1 200 OK" },
      }),
    ).toMatchObject({ ok: false, how: "got through: metadata by raw socket" });
    // Code that ended before it reported proves nothing either way.
    expect(
      judge("metadata-exfiltration", "container", { killReason: "wall_clock", result: null }),
    ).toMatchObject({ ok: false });
    expect(
      judge("metadata-exfiltration", "wasm", { result: { net: "refused: Cannot find module" } }),
    ).toEqual({ ok: true, how: "no network: wasm has no socket API (sealed)" });
  });

  it("counts a fork bomb or a balloon contained only when the sandbox killed it for that limit", () => {
    expect(judge("fork-bomb", "container", { killReason: "pids", exitCode: 137 })).toEqual({
      ok: true,
      how: "killed: pids (process limit)",
    });
    expect(judge("fork-bomb", "container", { killReason: "wall_clock" })).toEqual({
      ok: false,
      how: "not stopped by the process limit: killed: wall_clock",
    });
    expect(judge("memory-balloon", "wasm", { killReason: "oom" })).toMatchObject({ ok: true });
    expect(judge("memory-balloon", "container", { exitCode: 0 })).toEqual({
      ok: false,
      how: "not stopped by the memory limit: succeeded, exit code 0",
    });
    expect(judge("fork-bomb", "wasm", { result: { spawned: 0 } })).toMatchObject({ ok: true });
    expect(judge("fork-bomb", "wasm", { result: { spawned: 12 } })).toMatchObject({ ok: false });
  });

  it("wants the clean run's structured result", () => {
    expect(judge("clean-run", "container", { result: { sum: 5050, ok: true } })).toEqual({
      ok: true,
      how: 'succeeded, result {"sum":5050,"ok":true}',
    });
    expect(
      judge("clean-run", "container", { status: "failed", exitCode: 1, result: null }),
    ).toEqual({ ok: false, how: "no result: failed, exit code 1" });
  });

  it("runs three hostile workloads and one clean one, and names the one still missing", () => {
    expect(DEMO_WORKLOADS.map((w) => [w.id, w.kind])).toEqual([
      ["metadata-exfiltration", "hostile"],
      ["fork-bomb", "hostile"],
      ["memory-balloon", "hostile"],
      ["clean-run", "clean"],
    ]);
    expect(PENDING_WORKLOADS.map((w) => w.id)).toEqual(["binding-secret-hunt"]);
    for (const workload of DEMO_WORKLOADS) {
      expect(workload.variant("container").spec.runtime).toBe("container");
      expect(workload.variant("wasm").spec.language).toBe("node");
    }
  });
});
