import { existsSync, lstatSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, startTestServer, type TestServer } from "./harness.js";

interface SandboxPoolReport {
  languages: { language: string; internet: boolean; ready: number; target: number }[];
  memoryMbEach: number;
  memoryMb: number;
  memoryBytes: number;
}

// A server configured with a warm pool of started container sandboxes (SHELLS_CONTAINER_POOL).
describe("container shells claimed from a warm sandbox pool", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({
      backend: "container",
      env: {
        SHELLS_CONTAINER_POOL: "bash=1",
        // A budget the pool's sandbox and a 200 MiB shell fit in, and a 256 MiB shell does not.
        SHELLS_HOST_MEMORY_MB: "300",
        SHELLS_MEMORY_OVERCOMMIT: "1",
      },
    });
  }, 300_000);
  afterAll(async () => {
    await server?.close();
  });

  /** Whether the backend's one pooled sandbox is started (its record says `ready`). */
  const poolStarted = () => {
    const boxes = join(server.dataDir, "container", "boxes");
    return (
      existsSync(boxes) &&
      readdirSync(boxes).some((box) =>
        readFileSync(join(boxes, box, "shell.json"), "utf8").includes('"phase": "ready"'),
      )
    );
  };

  /**
   * The pool as /readyz shows it, asked once the pool is full (availability is cached for up to
   * 30 s, so an earlier answer may still be served).
   */
  const fullPool = async (): Promise<SandboxPoolReport> => {
    while (!poolStarted()) await new Promise((resolve) => setTimeout(resolve, 100));
    const deadline = Date.now() + 45_000;
    for (;;) {
      const ready = await call<{
        runtimes: { runtime: string; sandboxPool?: SandboxPoolReport }[];
      }>(server, "GET", "/readyz");
      const pool = ready.body.runtimes.find((r) => r.runtime === "container")?.sandboxPool;
      if (pool?.languages[0]?.ready === 1 || Date.now() > deadline) return pool!;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };

  it("reports the pool on /readyz, counts its memory at the capacity gate, and serves a create from it", async () => {
    const pool = await fullPool();
    expect(pool).toMatchObject({
      languages: [{ language: "bash", internet: false, ready: 1, target: 1 }],
      memoryMb: pool.memoryMbEach,
    });
    expect(pool.memoryBytes).toBeGreaterThan(0);

    // 256 MiB would fit the 300 MiB budget alone; with the pool's sandbox counted it does not.
    const refused = await call<{ error: { code: string } }>(server, "POST", "/api/v1/shells", {
      language: "bash",
      resources: { memoryMb: 256 },
    });
    expect(refused.status).toBe(503);
    expect(refused.body.error.code).toBe("capacity_unavailable");

    const shell = (
      await call<{ id: string; status: string }>(server, "POST", "/api/v1/shells", {
        language: "bash",
        network: "localhost",
        resources: { memoryMb: 200 },
        env: { FROM_POOL: "yes" },
      })
    ).body;
    expect(shell.status).toBe("running");
    // Claimed: the shell's name in the backend's state is a symlink to the pooled sandbox.
    expect(lstatSync(join(server.dataDir, "container", "shells", shell.id)).isSymbolicLink()).toBe(
      true,
    );
    const seen = await call<{ stdout: string; exitCode: number }>(
      server,
      "POST",
      `/api/v1/shells/${shell.id}/exec`,
      {
        command: ["bash", "-c", 'cat /proc/sys/kernel/hostname; echo "$FROM_POOL"'],
      },
    );
    expect(seen.body).toMatchObject({ exitCode: 0, stdout: `${shell.id}\nyes\n` });

    expect((await call(server, "DELETE", `/api/v1/shells/${shell.id}`)).status).toBeLessThan(300);
  }, 90_000);
});
