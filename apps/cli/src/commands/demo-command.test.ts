import type { ActivityEvent, Run, RunCreate, RuntimeAvailability } from "@l1fe/shells";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import type { CliIo } from "../context.js";
import { runCli } from "../program.js";

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/**
 * A stand-in control plane whose sandboxes contain nothing: every run ends with exit code 0, no
 * kill reason, and its proxy allowed the metadata IP. The demo has to say so and fail.
 */
function leakyApi(runtimes: RuntimeAvailability[]): typeof fetch {
  const runs = new Map<string, Run>();
  return async (input, init) => {
    const request = new Request(input, init);
    const { pathname } = new URL(request.url);
    if (request.method === "GET" && pathname === "/readyz")
      return json({ status: "ready", runtimes });
    if (request.method === "POST" && pathname === "/api/v1/runs") {
      const spec = (await request.json()) as RunCreate;
      const source = spec.code ?? spec.command?.join(" ") ?? "";
      const run: Run = {
        id: `run-${runs.size + 1}`,
        status: "succeeded",
        language: spec.language ?? "bash",
        runtime: spec.runtime ?? "container",
        shellId: `sh-${runs.size + 1}`,
        exitCode: 0,
        killReason: null,
        result: source.includes("169.254.169.254")
          ? { "metadata credentials via the proxy": "reached: HTTP 200" }
          : source.includes("sum")
            ? { sum: 5050, ok: true }
            : null,
        artifacts: [],
        output: { stdout: "", stderr: "", stdoutBytes: 0, stderrBytes: 0 },
        error: null,
        createdAt: "2026-01-01T00:00:00.000Z",
        finishedAt: "2026-01-01T00:00:01.000Z",
      };
      runs.set(run.id, run);
      return json(run, 201);
    }
    const match = /^\/api\/v1\/runs\/(run-\d+)(\/result|\/activity|\/stream)?$/.exec(pathname);
    const run = match ? runs.get(match[1] as string) : undefined;
    if (run && match?.[2] === "/stream")
      return json({
        items: [
          { seq: 1, type: "stdout", data: "done\n", time: 1 },
          { seq: 2, type: "exit", data: { exitCode: 0 }, time: 2 },
        ],
      });
    if (run && match?.[2] === "/result") return json(run);
    if (run && request.method === "DELETE") return json(run);
    if (run && match?.[2] === "/activity") {
      const allowed: ActivityEvent = {
        id: `ev-${run.id}`,
        seq: 1,
        orgId: "org-1",
        actor: { type: "system", id: "egress-proxy" },
        action: "egress.allowed",
        target: { type: "shell", id: run.shellId },
        outcome: "success",
        details: { host: "169.254.169.254", port: 80, protocol: "http", bytes: 512, count: 1 },
        time: "2026-01-01T00:00:00.500Z",
        prevHash: "0",
        hash: "1",
      };
      return json({
        items: JSON.stringify(run.result).includes("metadata") ? [allowed] : [],
      });
    }
    return json({ error: { code: "not_found", message: "no", requestId: "r" } }, 404);
  };
}

async function demo(api: typeof fetch, args: string[] = []) {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: Object.assign(Readable.from([]), { isTTY: true }),
    env: { SHELLS_URL: "http://shells.test", SHELLS_API_TOKEN: "good" },
    cwd: "/nonexistent",
    fetch: api,
  };
  const exitCode = await runCli(["demo", ...args], io);
  return { exitCode, stdout, stderr };
}

const container: RuntimeAvailability = {
  runtime: "container",
  available: true,
  backend: "container",
  reason: null,
};

describe("shells demo", () => {
  it("exits 1 and marks each workload that got through, saying how", async () => {
    const { exitCode, stdout } = await demo(leakyApi([container]));
    expect(exitCode).toBe(1);
    const rows = stdout.split("\n");
    expect(rows.find((l) => l.startsWith("fork bomb"))).toMatch(
      /container\s+NO\s+not stopped by the process limit: succeeded, exit code 0/,
    );
    expect(rows.find((l) => l.startsWith("memory balloon"))).toMatch(/container\s+NO/);
    expect(rows.find((l) => l.startsWith("exfiltrate"))).toMatch(
      /container\s+NO\s+got through: egress\.allowed 169\.254\.169\.254/,
    );
    expect(rows.find((l) => l.startsWith("clean run"))).toMatch(
      /container\s+\(clean\)\s+succeeded/,
    );
    expect(stdout).toContain("0 of 3 hostile runs contained; 1 of 1 clean runs returned");
    expect(stdout).toContain("NOT ALL CONTAINED");
    // The stand-in has no org policy: the binding workloads are skipped, saying why.
    expect(stdout).toContain(
      "not run: hunt for its binding's secret: the org's egress policy could not be read (not_found)",
    );
  });

  it("refuses to demonstrate on a server that only simulates its classes", async () => {
    const { exitCode, stderr } = await demo(
      leakyApi([{ ...container, backend: "simulator", reason: "simulated" }]),
    );
    expect(exitCode).toBe(1);
    expect(stderr).toContain("error: nothing_to_demonstrate");
    expect(stderr).toContain("simulated only");
  });

  it("answers JSON with a row per workload and class", async () => {
    const { exitCode, stdout } = await demo(leakyApi([container]), ["--json"]);
    expect(exitCode).toBe(1);
    const report = JSON.parse(stdout) as { ok: boolean; rows: { workload: string; ok: boolean }[] };
    expect(report.ok).toBe(false);
    expect(report.rows.map((r) => [r.workload, r.ok])).toEqual([
      ["metadata-exfiltration", false],
      ["fork-bomb", false],
      ["memory-balloon", false],
      ["clean-run", true],
    ]);
  });
});
