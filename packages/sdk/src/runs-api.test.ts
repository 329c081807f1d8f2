import type { Run, RunFrame } from "@shells/contract";
import { describe, expect, it } from "vitest";
import { ShellsClient } from "./index.js";

function serve(handler: (request: Request) => Response | Promise<Response>): typeof fetch {
  return async (input, init) => handler(new Request(input, init));
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

function frame(seq: number, type: RunFrame["type"], data: unknown): RunFrame {
  return { seq, type, data, time: 1_700_000_000_000 + seq };
}

function sse(frame: RunFrame): string {
  return `id: ${frame.seq}\nevent: ${frame.type}\ndata: ${JSON.stringify(frame)}\n\n`;
}

/** An event stream that sends `frames`, then either ends or drops the connection. */
function eventStream(frames: RunFrame[], ending: "end" | "drop"): Response {
  const encoder = new TextEncoder();
  let sent = false;
  // Pulled, not pushed at once: a stream errored with chunks still queued would discard them.
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!sent) {
        sent = true;
        for (const f of frames) controller.enqueue(encoder.encode(sse(f)));
        if (frames.length > 0) return;
      }
      if (ending === "end") controller.close();
      else controller.error(new TypeError("terminated"));
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
}

const run: Run = {
  id: "run-1",
  status: "succeeded",
  language: "bash",
  runtime: "container",
  shellId: "sh-1",
  exitCode: 0,
  killReason: null,
  result: { ok: true },
  artifacts: [{ path: "out.txt", sizeBytes: 3 }],
  output: { stdout: "one\n", stderr: "", stdoutBytes: 4, stderrBytes: 0 },
  error: null,
  createdAt: "2025-01-01T00:00:00.000Z",
  finishedAt: "2025-01-01T00:00:01.000Z",
};

const frames = [
  frame(1, "status", { status: "running" }),
  frame(2, "stdout", "one\n"),
  frame(3, "stdout", "two\n"),
  frame(4, "result", { ok: true }),
  frame(5, "exit", { exitCode: 0 }),
];

describe("a run's stream", () => {
  it("resumes after a dropped connection from the last event, losing and repeating nothing", async () => {
    const resumedFrom: (string | null)[] = [];
    const client = new ShellsClient({
      baseUrl: "http://shells.test",
      token: "t",
      fetch: serve((request) => {
        const after = request.headers.get("last-event-id");
        resumedFrom.push(after);
        if (after === null) return eventStream(frames.slice(0, 2), "drop");
        // A server that replays one frame too many is tolerated: the seq says it was seen.
        return eventStream(frames.slice(Number(after) - 1), "end");
      }),
    });
    const seen: RunFrame[] = [];
    for await (const f of client.runs.handle("run-1").stream()) seen.push(f);
    expect(seen).toEqual(frames);
    expect(resumedFrom).toEqual([null, "2"]);
  });

  it("gives up with a ConnectionError when the connection keeps dropping without progress", async () => {
    let attempts = 0;
    const client = new ShellsClient({
      baseUrl: "http://shells.test",
      token: "t",
      fetch: serve(() => {
        attempts += 1;
        return eventStream([], "drop");
      }),
    });
    const consume = async () => {
      for await (const f of client.runs.handle("run-1").stream()) void f;
    };
    await expect(consume()).rejects.toMatchObject({
      name: "ConnectionError",
      code: "connection_failed",
    });
    expect(attempts).toBe(6);
  }, 10_000);

  it("does not resume after the server refused the stream", async () => {
    const client = new ShellsClient({
      baseUrl: "http://shells.test",
      token: "t",
      fetch: serve(() =>
        json({ error: { code: "run_not_found", message: "No run.", requestId: "r" } }, 404),
      ),
    });
    const stream = client.runs.handle("run-x").stream();
    await expect(stream.next()).rejects.toMatchObject({ name: "NotFoundError" });
  });
});

describe("a run's result", () => {
  it("follows the stream while the run is running, then answers the finished run", async () => {
    let finished = false;
    const client = new ShellsClient({
      baseUrl: "http://shells.test",
      token: "t",
      fetch: serve((request) => {
        const path = new URL(request.url).pathname;
        if (path === "/api/v1/runs/run-1/result") {
          return json(finished ? run : { ...run, status: "running", exitCode: null });
        }
        if (path === "/api/v1/runs/run-1/stream") {
          finished = true;
          return eventStream(frames, "end");
        }
        return json({ error: { code: "not_found", message: path, requestId: "r" } }, 404);
      }),
    });
    expect(await client.runs.handle("run-1").result()).toEqual(run);
  });

  it("creates a run with the spec as its body and answers a handle on it", async () => {
    let body: unknown;
    const client = new ShellsClient({
      baseUrl: "http://shells.test",
      token: "t",
      fetch: serve(async (request) => {
        body = await request.json();
        return json({ ...run, status: "running" }, 201);
      }),
    });
    const handle = await client.run({ language: "bash", command: ["echo", "hi"] });
    expect(handle.id).toBe("run-1");
    expect(body).toEqual({ language: "bash", command: ["echo", "hi"] });
  });
});

describe("a run of a template that asks for review", () => {
  it("answers a handle on the waiting run with its pending approval", async () => {
    const approval = {
      id: "apr-1",
      shellId: "run-9",
      action: "run",
      state: "pending",
      requestedBy: { type: "user", id: "usr-1" },
      decidedBy: null,
      reason: null,
      outcome: null,
      context: { template: "reviewed@1" },
      createdAt: "2025-01-01T00:00:00.000Z",
      expiresAt: "2025-01-01T01:00:00.000Z",
      decidedAt: null,
    };
    const client = new ShellsClient({
      baseUrl: "http://shells.test",
      token: "t",
      fetch: serve(() =>
        json({ status: "pending_approval", message: "run of run-9 waits", approval }, 202),
      ),
    });
    const handle = await client.run({ template: "reviewed", command: ["true"] });
    expect(handle.id).toBe("run-9");
    expect(handle.pendingApproval?.approval).toMatchObject({ id: "apr-1", action: "run" });
  });
});
