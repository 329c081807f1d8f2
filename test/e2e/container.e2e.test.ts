import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  call,
  freePort,
  startServerProcess,
  startTestServer,
  waitReady,
  type TestServer,
} from "./harness.js";

// Real sandboxes through the real API: the container backend under the control plane.

describe("container shells through the API", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ backend: "container" });
  }, 300_000);
  afterAll(async () => {
    for (const shell of (
      await call<{ items: { id: string }[] }>(server, "GET", "/api/v1/shells?limit=200")
    ).body.items) {
      await call(server, "DELETE", `/api/v1/shells/${shell.id}`);
    }
    await server.close();
  });

  it("keeps a background server reachable across execs in localhost mode", async () => {
    const shell = (
      await call<{ id: string; status: string; backend: string }>(
        server,
        "POST",
        "/api/v1/shells",
        { language: "python", network: "localhost" },
      )
    ).body;
    expect(shell).toMatchObject({ status: "running", backend: "container" });
    const start = await call<{ exitCode: number }>(
      server,
      "POST",
      `/api/v1/shells/${shell.id}/exec`,
      {
        command: [
          "sh",
          "-c",
          "cd /workspace && echo served > index.html && (python3 -m http.server 8000 >/dev/null 2>&1 &) ; sleep 1",
        ],
      },
    );
    expect(start.body.exitCode).toBe(0);
    const fetched = await call<{ stdout: string; exitCode: number }>(
      server,
      "POST",
      `/api/v1/shells/${shell.id}/exec`,
      {
        command: [
          "python3",
          "-c",
          "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/index.html').read().decode().strip())",
        ],
      },
    );
    expect(fetched.body).toMatchObject({ exitCode: 0, stdout: "served\n" });
  }, 120_000);

  it("keeps an interpreter's variables across turns and reports a Python traceback as a structured error", async () => {
    const shell = (
      await call<{ id: string }>(server, "POST", "/api/v1/shells", { language: "python" })
    ).body;
    const first = await call<{ value: unknown; restarted: boolean; stdout: string }>(
      server,
      "POST",
      `/api/v1/shells/${shell.id}/interpreter`,
      { code: "x = 41\nprint('set')\nx" },
    );
    expect(first.body).toMatchObject({ value: 41, restarted: true, stdout: "set\n", error: null });
    const second = await call<{ value: unknown; restarted: boolean }>(
      server,
      "POST",
      `/api/v1/shells/${shell.id}/interpreter`,
      { code: "x + 1" },
    );
    expect(second.body).toMatchObject({ value: 42, restarted: false });
    const failing = await call<{ error: { name: string; message: string; traceback: string } }>(
      server,
      "POST",
      `/api/v1/shells/${shell.id}/interpreter`,
      { code: "def f():\n    return 1 / 0\nf()" },
    );
    expect(failing.body.error).toMatchObject({
      name: "ZeroDivisionError",
      message: "division by zero",
    });
    expect(failing.body.error.traceback).toMatch(/Traceback[\s\S]*in f[\s\S]*ZeroDivisionError/);
    const slow = await call<{ error: { name: string } }>(
      server,
      "POST",
      `/api/v1/shells/${shell.id}/interpreter`,
      { code: "import time\ntime.sleep(30)", timeoutMs: 1000 },
    );
    expect(slow.body.error.name).toBe("TimeoutError");
    const fresh = await call<{ restarted: boolean; error: { name: string } | null }>(
      server,
      "POST",
      `/api/v1/shells/${shell.id}/interpreter`,
      { code: "'x' in globals()" },
    );
    expect(fresh.body).toMatchObject({ restarted: true, value: false, error: null });
  }, 120_000);

  it("runs python code one-shot, returning its shells.result JSON and declared artifact", async () => {
    const code = [
      "total = sum([1, 2, 3])",
      "open('report.csv', 'w').write('total,6\\n')",
      "shells.artifact('report.csv')",
      "shells.result({'total': total})",
      "print('done')",
    ].join("\n");
    const run = (
      await call<{ id: string }>(server, "POST", "/api/v1/runs", { language: "python", code })
    ).body;
    let final:
      | { status: string; result: unknown; artifacts: { path: string }[]; exitCode: number }
      | undefined;
    for (let i = 0; i < 100 && (!final || final.status === "running"); i += 1) {
      await new Promise((r) => setTimeout(r, 200));
      final = (await call<typeof final & object>(server, "GET", `/api/v1/runs/${run.id}/result`))
        .body;
    }
    expect(final).toMatchObject({
      status: "succeeded",
      exitCode: 0,
      result: { total: 6 },
      artifacts: [{ path: "report.csv" }],
    });
    const res = await fetch(
      `${server.url}/api/v1/runs/${run.id}/artifacts/content?path=report.csv`,
      { headers: { authorization: `Bearer ${server.token}` } },
    );
    expect(await res.text()).toBe("total,6\n");
  }, 120_000);
});

function shellCgroups(stateDirHashHint: string): string[] {
  const dir = "/sys/fs/cgroup/pids/shells";
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((name) => name.includes(stateDirHashHint));
}

describe("the control plane dies and comes back", () => {
  it("re-adopts running shells after kill -9 and leaves nothing behind once they are deleted", async () => {
    expect(existsSync("apps/server/dist/server.js"), "build first: npm run build").toBe(true);
    const dataDir = mkdtempSync(join(tmpdir(), "shells-kill9-"));
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    let child = startServerProcess(dataDir, port);
    try {
      await waitReady(url);
      const server = { url, token: readFileSync(join(dataDir, "admin-token"), "utf8").trim() };
      const kept = (
        await call<{ id: string }>(server, "POST", "/api/v1/shells", {
          language: "bash",
          name: "survivor",
        })
      ).body;
      await call(server, "POST", `/api/v1/shells/${kept.id}/exec`, {
        command: ["sh", "-c", "echo before > /workspace/mark"],
      });
      const stopped = (
        await call<{ id: string }>(server, "POST", "/api/v1/shells", {
          language: "bash",
          name: "sleeper",
        })
      ).body;
      await call(server, "POST", `/api/v1/shells/${stopped.id}/actions/stop`, {});
      // Kill the control plane in the middle of an exec and of a create.
      void call(server, "POST", `/api/v1/shells/${kept.id}/exec`, {
        command: ["sleep", "30"],
      }).catch(() => undefined);
      void call(server, "POST", "/api/v1/shells", { language: "bash", name: "half-made" }).catch(
        () => undefined,
      );
      await new Promise((r) => setTimeout(r, 150));
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));

      child = startServerProcess(dataDir, port);
      await waitReady(url);
      const after = await call<{ status: string }>(server, "GET", `/api/v1/shells/${kept.id}`);
      expect(after.body.status).toBe("running");
      expect(
        (
          await call<{ stdout: string }>(server, "POST", `/api/v1/shells/${kept.id}/exec`, {
            command: ["cat", "/workspace/mark"],
          })
        ).body.stdout,
      ).toBe("before\n");
      expect(
        (await call<{ status: string }>(server, "GET", `/api/v1/shells/${stopped.id}`)).body.status,
      ).toBe("stopped");
      const all = (
        await call<{ items: { id: string; name: string; status: string }[] }>(
          server,
          "GET",
          "/api/v1/shells?limit=200",
        )
      ).body.items;
      for (const shell of all)
        expect(["running", "stopped", "error"], `${shell.name} is ${shell.status}`).toContain(
          shell.status,
        );
      const halfMade = all.find((s) => s.name === "half-made");
      if (halfMade?.status === "running") {
        expect(
          (
            await call<{ exitCode: number }>(server, "POST", `/api/v1/shells/${halfMade.id}/exec`, {
              command: ["true"],
            })
          ).body.exitCode,
        ).toBe(0);
      }
      for (const shell of all)
        expect((await call(server, "DELETE", `/api/v1/shells/${shell.id}`)).status).toBe(200);
      const ids = all.map((s) => s.id);
      const cgroupsLeft = ids.flatMap((id) => shellCgroups(id));
      expect(cgroupsLeft).toEqual([]);
      const mounts = readFileSync("/proc/self/mountinfo", "utf8");
      for (const id of ids) expect(mounts.includes(id), `mount of ${id} left`).toBe(false);
      const ps = spawnSync("ps", ["-eo", "args"], { encoding: "utf8" }).stdout;
      for (const id of ids) expect(ps.includes(id), `process of ${id} left`).toBe(false);
      const shellsDir = join(dataDir, "container", "shells");
      expect(existsSync(shellsDir) ? readdirSync(shellsDir) : []).toEqual([]);
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => setTimeout(r, 300));
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 180_000);
});
