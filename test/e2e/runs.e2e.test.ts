import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server.close();
});

async function api<T = unknown>(
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; body: T; raw: Response }> {
  const raw = await fetch(`${server.url}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${server.token}`,
      ...(typeof init.body === "string" ? { "content-type": "application/json" } : {}),
      ...(init.headers as Record<string, string>),
    },
  });
  const text = await raw.clone().text();
  return {
    status: raw.status,
    body: (text && raw.headers.get("content-type")?.includes("json")
      ? JSON.parse(text)
      : text) as T,
    raw,
  };
}

interface RunBody {
  id: string;
  status: string;
  shellId: string;
  exitCode: number | null;
  result: unknown;
  artifacts: { path: string; sizeBytes: number }[];
}

async function finished(id: string): Promise<RunBody> {
  await expect
    .poll(async () => (await api<RunBody>(`/api/v1/runs/${id}`)).body.status, { timeout: 15_000 })
    .not.toBe("running");
  return (await api<RunBody>(`/api/v1/runs/${id}/result`)).body;
}

describe("one-shot runs", () => {
  it("run a command in an ephemeral shell, return its $SHELLS_RESULT JSON and declared artifact, and tear the shell down", async () => {
    const started = await api<RunBody>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({
        language: "bash",
        command: [
          "sh",
          "-c",
          `echo working; sleep 0.3; echo '{"ok":true,"answer":42}' > "$SHELLS_RESULT"; echo report > report.txt`,
        ],
        files: [{ path: "input.txt", content: "seeded" }],
        artifacts: ["*.txt"],
      }),
    });
    expect(started.status).toBe(201);
    expect(started.body.status).toBe("running");
    const run = await finished(started.body.id);
    expect(run).toMatchObject({
      status: "succeeded",
      exitCode: 0,
      result: { ok: true, answer: 42 },
    });
    expect(run.artifacts.map((a) => a.path).sort()).toEqual(["input.txt", "report.txt"]);
    const artifact = await api<string>(`/api/v1/runs/${run.id}/artifacts/content?path=report.txt`);
    expect(artifact.body).toBe("report\n");
    expect((await api<{ status: string }>(`/api/v1/shells/${run.shellId}`)).body.status).toBe(
      "deleted",
    );

    const frames = (
      await api<{ items: { seq: number; type: string; data: unknown }[] }>(
        `/api/v1/runs/${run.id}/stream`,
      )
    ).body.items;
    expect(frames.map((f) => f.type)).toEqual([
      "status",
      "stdout",
      "result",
      "artifact",
      "artifact",
      "exit",
    ]);
    expect(frames.map((f) => f.seq)).toEqual([1, 2, 3, 4, 5, 6]);

    const activity = (
      await api<{ items: { action: string }[] }>(`/api/v1/runs/${run.id}/activity`)
    ).body.items.map((e) => e.action);
    expect(activity).toEqual(
      expect.arrayContaining([
        "run.start",
        "shell.create",
        "shell.exec",
        "run.finish",
        "shell.delete",
      ]),
    );
  });

  it("streams frames over SSE and resumes after Last-Event-ID", async () => {
    const started = await api<RunBody>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({
        language: "bash",
        command: ["sh", "-c", "echo one; sleep 0.2; echo two; sleep 0.2; echo three"],
      }),
    });
    const res = await fetch(`${server.url}/api/v1/runs/${started.body.id}/stream`, {
      headers: { authorization: `Bearer ${server.token}`, accept: "text/event-stream" },
    });
    const text = await res.text();
    const ids = [...text.matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(ids).toEqual([1, 2, 3, 4, 5]);
    expect(text).toMatch(/event: exit/);
    const resumed = await fetch(`${server.url}/api/v1/runs/${started.body.id}/stream`, {
      headers: {
        authorization: `Bearer ${server.token}`,
        accept: "text/event-stream",
        "last-event-id": "3",
      },
    });
    const rest = [...(await resumed.text()).matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
    expect(rest).toEqual([4, 5]);
  });

  it("keeps the end of the run's output on its record, with secret values redacted", async () => {
    const secret = "s3cr3t-value-never-shown";
    const started = await api<RunBody>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({
        language: "bash",
        command: [
          "sh",
          "-c",
          'printf "%s" "$FILLER"; echo; echo "token=$API_TOKEN"; echo "failed with $API_TOKEN" >&2; exit 2',
        ],
        env: { FILLER: "x".repeat(6000) },
        secretEnv: { API_TOKEN: secret },
      }),
    });
    const run = await finished(started.body.id);
    expect(run).toMatchObject({ status: "failed", exitCode: 2 });
    const { output } = (
      await api<RunBody & { output: Record<string, unknown> }>(`/api/v1/runs/${run.id}`)
    ).body;
    expect(output).toEqual({
      stdout: `${"x".repeat(4096 - "\ntoken=[redacted]\n".length)}\ntoken=[redacted]\n`,
      stderr: "failed with [redacted]\n",
      stdoutBytes: 6000 + "\ntoken=[redacted]\n".length,
      stderrBytes: "failed with [redacted]\n".length,
    });
    const listed = await api<{ items: RunBody[] }>("/api/v1/runs?limit=5");
    expect(JSON.stringify(listed.body)).not.toContain(secret);
    expect(listed.body.items.find((r) => r.id === run.id)).toMatchObject({ output });
  });

  it("shows the output so far while the run is still running", async () => {
    const started = await api<RunBody>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({
        language: "bash",
        command: ["sh", "-c", "echo first; sleep 1.5; echo second"],
      }),
    });
    await expect
      .poll(
        async () => {
          const { body } = await api<RunBody & { output: { stdout: string } | null }>(
            `/api/v1/runs/${started.body.id}`,
          );
          return [body.status, body.output?.stdout];
        },
        { timeout: 5_000, interval: 50 },
      )
      .toEqual(["running", "first\n"]);
    await finished(started.body.id);
    const done = await api<RunBody & { output: { stdout: string } }>(
      `/api/v1/runs/${started.body.id}`,
    );
    expect(done.body.output.stdout).toBe("first\nsecond\n");
  });

  it("reports a failing command as failed with its exit code and refuses a body with both code and command", async () => {
    const started = await api<RunBody>("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({ language: "bash", command: ["sh", "-c", "exit 3"] }),
    });
    const run = await finished(started.body.id);
    expect(run).toMatchObject({ status: "failed", exitCode: 3, result: null });
    const both = await api("/api/v1/runs", {
      method: "POST",
      body: JSON.stringify({ language: "bash", command: ["true"], code: "true" }),
    });
    expect(both.status).toBe(400);
  });
});
