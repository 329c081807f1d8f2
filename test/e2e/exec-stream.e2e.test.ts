import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server.close();
});

async function api(path: string, init: RequestInit = {}) {
  return fetch(`${server.url}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${server.token}`,
      "content-type": "application/json",
      ...init.headers,
    },
  });
}

/** Reads a server-sent event stream, stamping each event with the time it arrived. */
async function readEvents(
  res: Response,
): Promise<{ event: string; data: unknown; arrivedAt: number }[]> {
  const events: { event: string; data: unknown; arrivedAt: number }[] = [];
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
      const data = JSON.parse(/^data: (.*)$/m.exec(block)?.[1] ?? "null");
      events.push({ event, data, arrivedAt: Date.now() });
    }
  }
  return events;
}

describe("streamed exec over server-sent events", () => {
  it("delivers output frames as they happen, each timestamped, then the exit frame", async () => {
    const shell = (await (
      await api("/api/v1/shells", { method: "POST", body: JSON.stringify({ language: "bash" }) })
    ).json()) as { id: string };
    const script = Array.from({ length: 10 }, (_, i) => `echo tick-${i}; sleep 0.2`).join("; ");
    const started = Date.now();
    const res = await api(`/api/v1/shells/${shell.id}/exec`, {
      method: "POST",
      headers: { accept: "text/event-stream" },
      body: JSON.stringify({ command: ["sh", "-c", script] }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/text\/event-stream/);
    const events = await readEvents(res);
    const finished = Date.now();
    const output = events
      .filter((e) => e.event === "stdout")
      .map((e) => e.data as { type: "stdout"; data: string; time: number });
    expect(output.length).toBeGreaterThanOrEqual(5);
    expect(output.map((f) => f.data).join("")).toBe(
      Array.from({ length: 10 }, (_, i) => `tick-${i}\n`).join(""),
    );
    const firstArrival = events.find((e) => e.event === "stdout")!.arrivedAt;
    expect(finished - firstArrival).toBeGreaterThan(1000);
    for (let i = 1; i < output.length; i += 1)
      expect(output[i]!.time).toBeGreaterThanOrEqual(output[i - 1]!.time + 150);
    expect(output[0]!.time).toBeGreaterThanOrEqual(started - 5);
    const exit = events.at(-1)!;
    expect(exit.event).toBe("exit");
    expect(exit.data).toMatchObject({
      type: "exit",
      result: { exitCode: 0, stdout: "", stderr: "" },
    });
  });

  it("answers a stopped or unknown shell with a JSON error, not a stream", async () => {
    const res = await api("/api/v1/shells/sh-nope/exec", {
      method: "POST",
      headers: { accept: "text/event-stream" },
      body: JSON.stringify({ command: ["true"] }),
    });
    expect(res.status).toBe(404);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("shell_not_found");
  });
});
