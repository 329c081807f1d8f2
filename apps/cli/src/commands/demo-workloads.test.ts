import type { ActivityEvent, Run } from "@l1fe/shells";
import { describe, expect, it } from "vitest";
import type { DemoBinding } from "./demo-binding.js";
import { DEMO_WORKLOADS, type DemoContext, type DemoVerdict } from "./demo-workloads.js";

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

const SECRET = "sk_demo_0123456789abcdef0123456789abcdef";
const binding: DemoBinding = {
  name: "demo_1234",
  envVar: "SHELLS_BINDING_DEMO_1234_URL",
  secret: SECRET,
  nonce: "00ff00ff00ff00ff",
  callsWithSecret: () => 7,
};
const lent: DemoContext = { binding, internet: true, bindings: true };
/** What the demo lends on a class with no route out and no bindings (wasm, microvm here). */
const sealedOnly: DemoContext = { binding, internet: false, bindings: false };

function judge(
  id: string,
  runtime: "container" | "wasm",
  run: Partial<Run>,
  audit: ActivityEvent[] = [],
  output = "",
): DemoVerdict {
  const workload = DEMO_WORKLOADS.find((w) => w.id === id);
  if (!workload) throw new Error(`no workload ${id}`);
  return workload
    .variant(runtime, runtime === "wasm" ? sealedOnly : lent)
    .judge({ run: { ...base, runtime, ...run }, audit, output });
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
    // A wasm shell with `internet` has fetch through the proxy: a 403 with a denial is contained,
    // an answer is not.
    const wasmOnline = (result: Record<string, string>, audit: ActivityEvent[] = []) =>
      DEMO_WORKLOADS[0]!.variant("wasm", lent).judge({
        run: { ...base, runtime: "wasm", result },
        audit,
        output: "",
      });
    expect(DEMO_WORKLOADS[0]!.variant("wasm", lent).spec.network).toBe("internet");
    expect(wasmOnline({ "metadata credentials via fetch": "refused: HTTP 403" }, [denied])).toEqual(
      { ok: true, how: "egress.denied 169.254.169.254:80 address_not_public" },
    );
    expect(wasmOnline({ "metadata credentials via fetch": "reached: HTTP 200" })).toMatchObject({
      ok: false,
      how: "got through: metadata credentials via fetch",
    });
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

  it("counts the secret hunt contained only when the secret is nowhere in what it printed", () => {
    const searched = { processes: 4, files: 120, "binding calls": 17 };
    expect(
      judge("binding-secret-hunt", "container", { result: searched }, [], "x".repeat(4096)),
    ).toEqual({
      ok: true,
      how: "secret not found (4 KB of output searched; the upstream got it 7×)",
    });
    for (const output of [
      `-- /proc/12/environ: TOKEN=${SECRET}`,
      `body: {"authorization":"Bearer ${Buffer.from(SECRET).toString("base64")}"}`,
    ])
      expect(
        judge("binding-secret-hunt", "container", { result: searched }, [], output),
      ).toMatchObject({ ok: false, how: expect.stringContaining("SECRET FOUND") });
    // In the structured result or the record's output tail counts as found too.
    expect(judge("binding-secret-hunt", "container", { result: { leaked: SECRET } })).toMatchObject(
      { ok: false },
    );
    expect(
      judge("binding-secret-hunt", "container", { killReason: "wall_clock", result: null }),
    ).toMatchObject({ ok: false, how: expect.stringContaining("cannot tell") });
  });

  it("grants the hunter and the clean run the binding, sealed otherwise", () => {
    for (const id of ["binding-secret-hunt", "clean-run"]) {
      const spec = DEMO_WORKLOADS.find((w) => w.id === id)?.variant("container", lent).spec;
      expect(spec).toMatchObject({ bindings: ["demo_1234"], egress: { mode: "deny_all" } });
      expect(JSON.stringify(spec)).not.toContain(SECRET);
      expect(spec?.code).toContain(binding.envVar);
    }
  });

  it("runs the POSIX workloads sealed and unbound on a class with no route out or bindings", () => {
    const exfiltration = DEMO_WORKLOADS.find((w) => w.id === "metadata-exfiltration");
    expect(exfiltration?.variant("microvm", sealedOnly).spec).toMatchObject({ network: "sealed" });
    expect(exfiltration?.variant("microvm", lent).spec).toMatchObject({ network: "internet" });
    for (const id of ["binding-secret-hunt", "clean-run"]) {
      const spec = DEMO_WORKLOADS.find((w) => w.id === id)?.variant("microvm", sealedOnly).spec;
      expect(spec).toMatchObject({ language: "python", egress: { mode: "deny_all" } });
      expect(spec?.bindings ?? []).toEqual([]);
      expect(spec?.code).not.toContain(binding.envVar);
    }
  });

  it("wants the clean run's structured result, with the bound API's answer when it has a binding", () => {
    const api = { answer: 42, nonce: binding.nonce };
    expect(judge("clean-run", "container", { result: { sum: 5050, ok: true, api } })).toEqual({
      ok: true,
      how: `succeeded, result ${JSON.stringify({ sum: 5050, ok: true, api })} (bound API called)`,
    });
    expect(judge("clean-run", "container", { result: { sum: 5050, ok: true } })).toMatchObject({
      ok: false,
    });
    expect(judge("clean-run", "wasm", { result: { sum: 5050, ok: true } })).toEqual({
      ok: true,
      how: 'succeeded, result {"sum":5050,"ok":true}',
    });
    expect(
      judge("clean-run", "container", { status: "failed", exitCode: 1, result: null }),
    ).toEqual({ ok: false, how: "no result: failed, exit code 1" });
  });

  it("runs four hostile workloads and one clean one", () => {
    expect(DEMO_WORKLOADS.map((w) => [w.id, w.kind])).toEqual([
      ["metadata-exfiltration", "hostile"],
      ["fork-bomb", "hostile"],
      ["memory-balloon", "hostile"],
      ["binding-secret-hunt", "hostile"],
      ["clean-run", "clean"],
    ]);
    for (const workload of DEMO_WORKLOADS) {
      expect(workload.variant("container", lent).spec.runtime).toBe("container");
      expect(workload.variant("wasm", sealedOnly).spec.language).toBe("node");
    }
  });
});
