import type { ExecResult, Shell } from "@shells/contract";
import { connect } from "node:net";
import { once } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

/** Sends the head of a request without its final blank line: the request is under way. */
async function startRequest(port: number, head: string) {
  const socket = connect(port, "127.0.0.1");
  await once(socket, "connect");
  socket.write(head);
  let answer = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => (answer += chunk));
  return {
    /** Sends the rest of the request and reads the answer until the server closes. */
    finish: async () => {
      socket.write("\r\n");
      await once(socket, "close");
      return answer;
    },
  };
}

describe("a graceful shutdown", () => {
  it("answers in the API's error shape with Retry-After, and ends an exec still running after the grace with host_restart", async () => {
    const app = (t = await createTestApp({ env: { SHELLS_SHUTDOWN_GRACE_SECONDS: "0.5" } }));
    const shell = (await app.call("POST", "/api/v1/shells", { language: "bash" })).json<Shell>();
    await app.app.listen({ port: 0, host: "127.0.0.1" });
    const { port } = app.app.server.address() as { port: number };
    const authorization = `Bearer ${app.token}`;
    // Far longer than any test may take: only the grace can end it.
    const exec = fetch(`http://127.0.0.1:${port}/api/v1/shells/${shell.id}/exec`, {
      method: "POST",
      headers: { authorization, "content-type": "application/json" },
      body: JSON.stringify({ command: ["sleep", "600"], timeoutMs: 600_000 }),
    });
    const late = await startRequest(
      port,
      `GET /api/v1/shells HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: ${authorization}\r\n`,
    );
    await new Promise((resolve) => setTimeout(resolve, 200));
    const closed = app.app.close();

    const answer = await late.finish();
    const [head = "", body = ""] = answer.split("\r\n\r\n");
    expect(head).toMatch(/^HTTP\/1\.1 503 /);
    expect(head.toLowerCase()).toContain("retry-after: 2");
    expect(JSON.parse(body)).toEqual({
      error: { code: "shutting_down", message: expect.any(String), requestId: expect.any(String) },
    });

    const result = (await (await exec).json()) as ExecResult;
    expect(result.killReason).toBe("host_restart");
    await closed;
  });
});
