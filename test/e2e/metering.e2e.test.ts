import { WasmBackend } from "@shells/backend-wasm";
import type {
  ActivityEvent,
  ExecResult,
  RuntimeAvailability,
  Shell,
  UsageReport,
} from "@shells/contract";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { call, freePort, startServerProcess, startTestServer, waitReady } from "./harness.js";

// Metering of real sandboxes: container shells (and wasm and microvm where the host runs them)
// under a real control plane, killed with -9 in the middle and started again on the same store.
const wasmAvailable =
  (await new WasmBackend({ stateDir: "/nonexistent" }).availability())[0]?.available === true;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** CPU seconds (user + system) a `sh` reports with `times` for itself and its children. */
function cpuOfTimes(stdout: string): number {
  let total = 0;
  for (const match of stdout.matchAll(/(\d+)m([\d.]+)s/g))
    total += Number(match[1]) * 60 + Number(match[2]);
  return total;
}

describe("metering of real shells", () => {
  it("meters shells for a measured time through a kill -9 of the control plane: seconds and cost within a second of truth, CPU counted once", async () => {
    expect(existsSync("apps/server/dist/server.js"), "build first: npm run build").toBe(true);
    const dataDir = mkdtempSync(join(tmpdir(), "shells-metering-"));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    // Microvm shells restore the template the test setup made in the shared cache.
    const env = {
      SHELLS_MICROVM_CACHE_DIR:
        process.env.SHELLS_TEST_MICROVM_CACHE ?? "/var/cache/shells-test/microvm",
    };
    let child = startServerProcess(dataDir, port, env);
    const shells: Shell[] = [];
    try {
      await waitReady(url);
      const server = { url, token: readFileSync(join(dataDir, "admin-token"), "utf8").trim() };
      const container = await call<Shell>(server, "POST", "/api/v1/shells", { language: "bash" });
      expect(container.status).toBe(201);
      shells.push(container.body);
      if (wasmAvailable) {
        const wasm = await call<Shell>(server, "POST", "/api/v1/shells", {
          language: "node",
          runtime: "wasm",
        });
        expect(wasm.status).toBe(201);
        shells.push(wasm.body);
      }
      const { body: runtimes } = await call<{ items: RuntimeAvailability[] }>(
        server,
        "GET",
        "/api/v1/runtimes",
      );
      if (runtimes.items.some((r) => r.runtime === "microvm" && r.available)) {
        const microvm = await call<Shell>(server, "POST", "/api/v1/shells", {
          language: "bash",
          runtime: "microvm",
          resources: { memoryMb: 128 },
        });
        expect(microvm.status, JSON.stringify(microvm.body)).toBe(201);
        shells.push(microvm.body);
      }
      // CPU the shell burns, as its own shell counts it.
      const burn = await call<ExecResult>(
        server,
        "POST",
        `/api/v1/shells/${container.body.id}/exec`,
        { command: ["sh", "-c", "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; times"] },
      );
      const burnt = cpuOfTimes(burn.body.stdout);
      expect(burnt).toBeGreaterThan(0.2);
      await sleep(3_000);

      // A crash: no last checkpoint, no graceful close. The sandboxes run on meanwhile.
      child.kill("SIGKILL");
      await new Promise((resolve) => child.once("exit", resolve));
      await sleep(2_500);
      child = startServerProcess(dataDir, port, env);
      await waitReady(url);
      // Two checkpoints after the restart (every 2 s by default), so counters are read again.
      await sleep(4_500);

      const { body: report, status } = await call<UsageReport>(
        server,
        "GET",
        "/api/v1/usage?groupBy=shell,class",
      );
      expect(status).toBe(200);
      const now = Date.now();
      for (const shell of shells) {
        const row = report.rows.find((r) => r.shell === shell.id);
        expect(row, shell.id).toBeDefined();
        // Truth: the shell has existed (provisioning, then running) since its creation, the
        // downtime included: its sandbox never stopped.
        const truth = (now - Date.parse(shell.createdAt)) / 1000;
        const metered = row!.seconds.provisioning + row!.seconds.running;
        expect(
          Math.abs(metered - truth),
          `${shell.runtime}: ${metered} s vs ${truth} s`,
        ).toBeLessThan(1);
        expect(row!.seconds.stopped + row!.seconds.error).toBe(0);
        // Cost: running time at the class's default rate per hour (wasm < container < microvm).
        const rate = { wasm: 0.01, container: 0.04, microvm: 0.08 }[shell.runtime];
        expect(Number(row!.cost)).toBeCloseTo((row!.seconds.running * rate) / 3600, 6);
      }
      const containerRow = report.rows.find((r) => r.shell === container.body.id)!;
      // What the loop burnt, counted once (not again after the restart), plus what the shell's
      // init and exec helpers took: well under half a second on top.
      expect(containerRow.cpuSeconds).toBeGreaterThanOrEqual(burnt - 0.05);
      expect(containerRow.cpuSeconds).toBeLessThan(burnt + 0.5);
      expect(containerRow.memoryMbSeconds).toBeGreaterThan(0);

      const csv = await fetch(`${url}/api/v1/usage?groupBy=class&format=csv`, {
        headers: { authorization: `Bearer ${server.token}` },
      });
      expect(csv.headers.get("content-type")).toMatch(/^text\/csv/);
      const lines = (await csv.text()).split("\r\n");
      for (const shell of shells)
        expect(lines.slice(1)).toContainEqual(
          expect.stringMatching(new RegExp(`^${shell.runtime},`)),
        );

      for (const shell of shells) await call(server, "DELETE", `/api/v1/shells/${shell.id}`);
    } finally {
      child.kill("SIGTERM");
      await new Promise((resolve) => child.once("exit", resolve));
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 180_000);

  it("stops a running container shell with kill reason quota when its project's running-time cap is reached, and refuses the next create", async () => {
    const server = await startTestServer({ backend: "container" });
    try {
      expect((await call(server, "POST", "/api/v1/projects", { name: "capped" })).status).toBe(201);
      const caps = await call(server, "PUT", "/api/v1/projects/capped/caps", {
        caps: [{ metric: "running_seconds", period: "day", limit: 4 }],
      });
      expect(caps.status).toBe(200);
      const shell = (
        await call<Shell>(server, "POST", "/api/v1/shells", {
          language: "bash",
          project: "capped",
        })
      ).body;
      const exec = await call<ExecResult>(server, "POST", `/api/v1/shells/${shell.id}/exec`, {
        command: ["sleep", "60"],
      });
      expect(exec.body.killReason).toBe("quota");
      // The exec ends as the stop kills its processes; the stop is recorded right after.
      await expect
        .poll(async () => (await call<Shell>(server, "GET", `/api/v1/shells/${shell.id}`)).body)
        .toMatchObject({
          status: "stopped",
          statusReason: expect.stringMatching(/^quota: project capped reached its cap/),
        });
      const actions = (
        await call<{ items: ActivityEvent[] }>(
          server,
          "GET",
          "/api/v1/activity?action=quota.&order=asc",
        )
      ).body.items.map((e) => e.action);
      expect(actions).toEqual(["quota.warning", "quota.reached", "quota.stopped"]);
      const refused = await call<{ error: { code: string; details: Record<string, unknown> } }>(
        server,
        "POST",
        "/api/v1/shells",
        { language: "bash", project: "capped" },
      );
      expect(refused.status).toBe(409);
      expect(refused.body.error).toMatchObject({
        code: "quota_exceeded",
        details: { quota: "running_seconds", project: "capped", limit: 4 },
      });
      // Another project is not held back by this one's cap.
      const elsewhere = await call<Shell>(server, "POST", "/api/v1/shells", { language: "bash" });
      expect(elsewhere.status).toBe(201);
    } finally {
      await server.close();
    }
  }, 120_000);
});
