import { WasmBackend } from "@shells/backend-wasm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { call, startTestServer, type TestServer } from "./harness.js";

// Real wasm shells through the real API: Pyodide in a jailed worker process under the control plane.
const available =
  (await new WasmBackend({ stateDir: "/nonexistent" }).availability())[0]?.available === true;

interface Exec {
  exitCode: number;
  stdout: string;
  stderr: string;
  killReason?: string;
}

describe.skipIf(!available)("wasm shells through the API", () => {
  let server: TestServer;
  let shellId: string;
  const exec = (command: string[], extra: Record<string, unknown> = {}) =>
    call<Exec>(server, "POST", `/api/v1/shells/${shellId}/exec`, { command, ...extra });
  const python = (code: string, extra: Record<string, unknown> = {}) =>
    exec(["python3", "-c", code], extra);

  // The Python pool is filled here, outside any test's timeout: a cold Pyodide load takes
  // seconds of CPU, a warm one is claimed in milliseconds.
  // The shell the tests share is created here too, and the pool filled again after it, so the
  // python run below claims a warm interpreter as well.
  let created: {
    status: number;
    body: { id: string; status: string; backend: string; runtime: string };
  };
  beforeAll(async () => {
    server = await startTestServer({ backend: "container" });
    const wasm = server.server.backends.find((b) => b.name === "wasm") as WasmBackend;
    await wasm.warm(undefined, ["python"]);
    created = await call(server, "POST", "/api/v1/shells", { language: "python", runtime: "wasm" });
    await new Promise((resolve) => setTimeout(resolve, 500));
    await wasm.warm(undefined, ["python"]);
  }, 180_000);
  afterAll(async () => {
    await server?.close();
  });

  it("creates a python wasm shell and runs python3 -c", async () => {
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ status: "running", backend: "wasm", runtime: "wasm" });
    shellId = created.body.id;
    expect((await python("print(6*7)")).body).toMatchObject({ exitCode: 0, stdout: "42\n" });
  });

  it("keeps a file written by one exec for the next", async () => {
    expect((await python("open('/workspace/note.txt','w').write('kept')")).body.exitCode).toBe(0);
    expect((await python("print(open('note.txt').read())")).body.stdout).toBe("kept\n");
  });

  it("ends while True: pass with wall_clock and the shell still answers", async () => {
    const looped = await python("while True: pass", { timeoutMs: 1000 });
    expect(looped.status).toBe(200);
    expect(looped.body.killReason).toBe("wall_clock");
    expect((await python("print('still here')")).body.stdout).toBe("still here\n");
  });

  it("refuses a command that is not the interpreter with unsupported_command", async () => {
    const refused = await call<{ error: { code: string; message: string } }>(
      server,
      "POST",
      `/api/v1/shells/${shellId}/exec`,
      { command: ["sh", "-c", "cat /etc/hostname"] },
    );
    expect(refused.status).toBe(422);
    expect(refused.body.error.code).toBe("unsupported_command");
    expect(refused.body.error.message).toMatch(/python3 -c CODE/);
  });

  it("shows no host file, no socket and none of the server's environment", async () => {
    const probe = await python(
      [
        "import os, socket",
        "try: print('READ', open('/etc/hostname').read())",
        "except OSError: print('no host file')",
        "try: socket.create_connection(('127.0.0.1', 22), timeout=2); print('CONNECTED')",
        "except OSError: print('no socket')",
        "print(sorted(k for k in os.environ if k not in ('HOME', 'PATH')))",
      ].join("\n"),
    );
    expect(probe.body.stdout).toBe("no host file\nno socket\n[]\n");
  });

  it("keeps globals across interpreter turns and returns errors with their traceback", async () => {
    const turn = (code: string, extra: Record<string, unknown> = {}) =>
      call<{
        value: unknown;
        stdout: string;
        error: { name: string; traceback: string } | null;
        restarted: boolean;
      }>(server, "POST", `/api/v1/shells/${shellId}/interpreter`, { code, ...extra });
    const first = await turn("x = 41");
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ error: null, restarted: true });
    expect((await turn("print('hi'); x + 1")).body).toMatchObject({
      value: 42,
      stdout: "hi\n",
      error: null,
      restarted: false,
    });
    const failed = await turn("def f():\n    raise ValueError('nope')\nf()");
    expect(failed.status).toBe(200);
    expect(failed.body.error).toMatchObject({ name: "ValueError" });
    expect(failed.body.error?.traceback).toMatch(/Traceback[\s\S]*in f[\s\S]*ValueError: nope/);
    const slow = await turn("while True: pass", { timeoutMs: 500 });
    expect(slow.body.error?.name).toBe("TimeoutError");
    expect((await turn("x")).body.value).toBe(41);
  });

  it("keeps globals across node interpreter turns in a node wasm shell", async () => {
    const created = await call<{ id: string }>(server, "POST", "/api/v1/shells", {
      language: "node",
      runtime: "wasm",
    });
    expect(created.status).toBe(201);
    const turn = (code: string) =>
      call<{ value: unknown; error: { name: string } | null }>(
        server,
        "POST",
        `/api/v1/shells/${created.body.id}/interpreter`,
        { code },
      );
    expect((await turn("let x = 41")).body.error).toBeNull();
    expect((await turn("x + 1")).body.value).toBe(42);
    expect((await turn("null.y")).body.error?.name).toBe("TypeError");
  });

  interface Run {
    id: string;
    status: string;
    shellId: string;
    exitCode: number | null;
    result: unknown;
    artifacts: { path: string }[];
  }
  async function oneShot(body: Record<string, unknown>): Promise<Run> {
    const started = await call<Run>(server, "POST", "/api/v1/runs", { runtime: "wasm", ...body });
    expect(started.status).toBe(201);
    await expect
      .poll(
        async () => (await call<Run>(server, "GET", `/api/v1/runs/${started.body.id}`)).body.status,
        {
          timeout: 30_000,
        },
      )
      .not.toBe("running");
    return (await call<Run>(server, "GET", `/api/v1/runs/${started.body.id}/result`)).body;
  }

  it("runs python code once with shells.result() and shells.artifact(), then tears the shell down", async () => {
    const run = await oneShot({
      language: "python",
      code: [
        "import sys",
        "print('working', sys.argv[0])",
        "open('report.txt', 'w').write('report')",
        "shells.artifact('report.txt')",
        "shells.result({'answer': 6 * 7, 'seeded': open('input.txt').read()})",
      ].join("\n"),
      files: [{ path: "input.txt", content: "seeded" }],
    });
    expect(run).toMatchObject({
      status: "succeeded",
      exitCode: 0,
      result: { answer: 42, seeded: "seeded" },
    });
    expect(run.artifacts.map((a) => a.path)).toEqual(["report.txt"]);
    const artifact = await fetch(
      `${server.url}/api/v1/runs/${run.id}/artifacts/content?path=report.txt`,
      { headers: { authorization: `Bearer ${server.token}` } },
    );
    expect(await artifact.text()).toBe("report");
    // The run's shell is deleted right after the run is marked finished.
    await expect
      .poll(
        async () =>
          (await call<{ status: string }>(server, "GET", `/api/v1/shells/${run.shellId}`)).body
            .status,
        { timeout: 10_000 },
      )
      .toBe("deleted");
  }, 60_000);

  it("runs node code once with shells.result() and a declared artifact pattern", async () => {
    const run = await oneShot({
      language: "node",
      code: "const fs = require('fs'); fs.writeFileSync('out.txt', 'node'); shells.result({ sum: 1 + 2 })",
      artifacts: ["*.txt"],
    });
    expect(run).toMatchObject({ status: "succeeded", exitCode: 0, result: { sum: 3 } });
    expect(run.artifacts.map((a) => a.path)).toEqual(["out.txt"]);
  }, 60_000);

  it("reads and writes files through the files API, never outside /workspace and /tmp", async () => {
    const put = await fetch(
      `${server.url}/api/v1/shells/${shellId}/files/content?path=/workspace/api.txt`,
      {
        method: "PUT",
        headers: {
          authorization: `Bearer ${server.token}`,
          "content-type": "application/octet-stream",
        },
        body: "via api",
      },
    );
    expect(put.status).toBeLessThan(300);
    expect((await python("print(open('/workspace/api.txt').read())")).body.stdout).toBe(
      "via api\n",
    );
    const host = await fetch(
      `${server.url}/api/v1/shells/${shellId}/files/content?path=/etc/passwd`,
      {
        headers: { authorization: `Bearer ${server.token}` },
      },
    );
    expect(host.status).toBe(404);
  });

  it("refuses languages wasm does not run, naming the presets it does", async () => {
    const refused = await call<{ error: { code: string; message: string } }>(
      server,
      "POST",
      "/api/v1/shells",
      { language: "bash", runtime: "wasm" },
    );
    expect(refused.status).toBe(422);
    expect(refused.body.error.code).toBe("runtime_unavailable");
    expect(refused.body.error.message).toMatch(/python and node/);
  });
});
