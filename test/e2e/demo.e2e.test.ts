import ShellsClient, { type Run } from "@l1fe/shells";
import { execFile, execFileSync } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { hostReport } from "../../packages/backend-container/src/internal/test-support.js";
import { startTestServer, type TestServer } from "./harness.js";

// `shells demo` as a user runs it: the built CLI against a server with real sandboxes. Every
// hostile workload must be contained — and the table must say how, in the terms the control plane
// recorded (egress decisions, kill reasons).

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const cliBin = join(repoRoot, "apps/cli/bin/shells.js");

interface CliRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

describe.runIf(hostReport.available)("shells demo", () => {
  let server: TestServer;
  let demo: CliRun;
  /** The runtime classes the server says it runs for real. */
  let classes: string[];

  beforeAll(async () => {
    execFileSync(
      process.execPath,
      [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/cli"],
      { cwd: repoRoot, stdio: "inherit" },
    );
    // The demo's binding workloads call an http upstream it starts on 127.0.0.2: the server has to
    // accept http binding upstreams and the org to allow that one address (as `npm run demo` does).
    server = await startTestServer({
      backend: "container",
      env: { SHELLS_BINDINGS_ALLOW_HTTP: "1" },
    });
    const policy = await fetch(`${server.url}/api/v1/org/policy`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
      body: JSON.stringify({ egress: { allowCidrs: ["127.0.0.2/32"] } }),
    });
    expect(policy.status).toBe(200);
    const ready = (await (await fetch(`${server.url}/readyz`)).json()) as {
      runtimes: { runtime: string; available: boolean }[];
    };
    classes = ready.runtimes.filter((r) => r.available).map((r) => r.runtime);
    demo = await new Promise<CliRun>((resolve) => {
      execFile(
        process.execPath,
        [cliBin, "demo"],
        { env: { ...process.env, SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token } },
        (error, stdout, stderr) =>
          resolve({ exitCode: error ? Number(error.code ?? 1) : 0, stdout, stderr }),
      );
    });
  }, 180_000);
  afterAll(async () => {
    await server?.close();
  });

  /** The table row of a workload on a class. */
  const row = (title: string, runtime: string) =>
    demo.stdout
      .split("\n")
      .find((line) => line.startsWith(title) && line.split(/\s{2,}/)[1] === runtime);

  it("contains every hostile workload on every class the server runs, and exits 0", () => {
    expect(demo.exitCode, demo.stdout + demo.stderr).toBe(0);
    expect(classes).toContain("container");
    expect(demo.stdout).toMatch(/^WORKLOAD\s+CLASS\s+CONTAINED\?\s+HOW$/m);
    for (const runtime of classes) {
      for (const title of [
        "exfiltrate via 169.254.169.254",
        "fork bomb",
        "memory balloon",
        "hunt for its binding's secret",
      ])
        expect(row(title, runtime), `${title} on ${runtime}`).toMatch(/\s{2}yes\s{2}/);
      expect(row("clean run", runtime)).toMatch(/\(clean\)\s+succeeded, result \{"sum":5050/);
    }
    expect(demo.stdout).toContain(
      `${4 * classes.length} of ${4 * classes.length} hostile runs contained; ${classes.length} of ${classes.length} clean runs returned their result.`,
    );
  });

  it("says how each was contained on the container class: the proxy's refusals, the kill reasons", () => {
    expect(row("exfiltrate", "container")).toMatch(
      /egress\.denied 169\.254\.169\.254:80 address_not_public, 10\.0\.0\.1:80 address_not_public/,
    );
    expect(row("fork bomb", "container")).toMatch(/killed: pids \(process limit\)$/);
    expect(row("memory balloon", "container")).toMatch(/killed: oom \(memory limit\)$/);
    // The hunter's calls reached the upstream with the secret, and still it saw none of it.
    const hunt = row("hunt for its binding's secret", "container");
    expect(hunt).toMatch(
      /secret not found \(\d+ KB of output searched; the upstream got it (\d+)×\)$/,
    );
    expect(Number(/got it (\d+)×/.exec(hunt ?? "")?.[1])).toBeGreaterThan(3);
    expect(row("clean run", "container")).toMatch(
      /"api":\{"answer":42,"nonce":"[0-9a-f]{16}"\}\} \(bound API called\)$/,
    );
  });

  it("routes the microvm class's exfiltration and binding hunt through its egress proxy too", (ctx) => {
    if (!classes.includes("microvm")) ctx.skip();
    expect(row("exfiltrate", "microvm")).toMatch(
      /egress\.denied 169\.254\.169\.254:80 address_not_public, 10\.0\.0\.1:80 address_not_public/,
    );
    expect(row("hunt for its binding's secret", "microvm")).toMatch(
      /secret not found \(\d+ KB of output searched; the upstream got it \d+×\)$/,
    );
    expect(row("clean run", "microvm")).toMatch(/\(bound API called\)$/);
  });

  it("shows the activity excerpt, the binding calls and refusals included", () => {
    const excerpt = demo.stdout.slice(demo.stdout.indexOf("activity (excerpt):"));
    expect(excerpt).toMatch(
      /metadata-exfiltration\/container\s+egress\.denied\s+169\.254\.169\.254:80 http address_not_public/,
    );
    expect(excerpt).toMatch(
      /fork-bomb\/container\s+run\.finish\s+failed, exit code 137, killed: pids/,
    );
    expect(excerpt).toMatch(
      /metadata-exfiltration\/container\s+shell\.create\s+runtime container, network internet/,
    );
    expect(excerpt).toMatch(
      /binding-secret-hunt\/container\s+binding\.invoked\s+GET \/echo HTTP 200/,
    );
    expect(excerpt).toMatch(
      /binding-secret-hunt\/container\s+binding\.denied\s+TRACE \/echo method_not_allowed/,
    );
    expect(excerpt).toMatch(/clean-run\/container\s+binding\.invoked\s+GET \/answer HTTP 200/);
    expect(demo.stdout).not.toContain("not run:");
  });

  it("agrees with the server's records and leaves every run torn down", async () => {
    const shells = new ShellsClient({ baseUrl: server.url, token: server.token });
    const runs: Run[] = await shells.runs.list({ limit: 50 });
    expect(runs).toHaveLength(5 * classes.length);
    const container = runs.filter((r) => r.runtime === "container");
    expect(container.map((r) => r.killReason ?? "none").sort()).toEqual([
      "none",
      "none",
      "none",
      "oom",
      "pids",
    ]);
    for (const run of runs) {
      expect(run.status).not.toBe("running");
      expect((await shells.get(run.shellId)).status).toBe("deleted");
      const audit = await shells.runs.handle(run.id).audit();
      expect(audit.at(-1)?.action).toBe("run.teardown");
    }
    // The throwaway binding is gone, and no record kept its secret.
    expect(await shells.bindings.list()).toEqual([]);
  });
});
