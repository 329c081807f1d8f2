/**
 * Long-lived processes in a microvm through a real server: a terminal over the PTY WebSocket (a
 * pty in the guest, typed input, output, resize) and interpreter turns that keep their globals
 * (a Python REPL spawned on pipes in the guest). Both ride the guest agent's one virtio-serial port.
 *
 * Slow part: the shell is a QEMU guest restored from the python template's saved VM state
 * (~0.2–1 s under emulation, more on a loaded host); the first turn starts the interpreter in the
 * guest (~1–3 s). The template (python, 512 MiB) is made by the test global setup.
 */
import ShellsClient, { type Shell } from "@l1fe/shells";
import WebSocket from "ws";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { missingTools } from "../../packages/backend-microvm/src/internal/test-support.js";
import { startTestServer, type TestServer } from "./harness.js";

describe.skipIf(missingTools.length > 0)("terminals and interpreter turns on microvm", () => {
  let server: TestServer;
  let shells: ShellsClient;
  let shell: Shell;

  beforeAll(async () => {
    server = await startTestServer({ backend: "container" });
    shells = new ShellsClient({ baseUrl: server.url, token: server.token });
    shell = await shells.create({ language: "python", runtime: "microvm" });
  }, 180_000);
  afterAll(async () => {
    if (shell) await shells.delete(shell.id).catch(() => undefined);
    await server?.close();
  }, 120_000);

  it("opens a terminal in the guest: a command's output, resize, exit", async () => {
    expect(shell).toMatchObject({ runtime: "microvm", backend: "microvm" });
    const credential = await shells.term(shell.id);
    const socket = new WebSocket(credential.url, [
      "shells.term.v1",
      `shells.token.${credential.token}`,
    ]);
    let output = "";
    socket.on("message", (data, isBinary) => {
      output += isBinary
        ? Buffer.from(data as Buffer).toString("utf8")
        : `\n[control ${Buffer.from(data as Buffer).toString("utf8")}]\n`;
    });
    const closed = new Promise<number>((done) => socket.on("close", (code) => done(code)));
    await new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("error", reject);
    });

    // The guest's own kernel answers, on a pty of the guest's devpts.
    socket.send(Buffer.from("echo kernel=$(uname -r); tty\r"), { binary: true });
    await expect.poll(() => output, { timeout: 15_000 }).toMatch(/kernel=\S+cloud-amd64/);
    await expect.poll(() => output, { timeout: 15_000 }).toMatch(/\/dev\/pts\/\d+/);
    socket.send(JSON.stringify({ type: "resize", cols: 123, rows: 45 }));
    socket.send(Buffer.from("stty size\r"), { binary: true });
    await expect.poll(() => output, { timeout: 15_000 }).toMatch(/45 123/);
    socket.send(Buffer.from("exit 4\r"), { binary: true });
    await expect.poll(() => output, { timeout: 15_000 }).toMatch(/"type":"exit","exitCode":4/);
    expect(await closed).toBe(1000);
  }, 60_000);

  it("keeps an interpreter's globals from one turn to the next", async () => {
    const turn = async (code: string) => {
      const res = await fetch(`${server.url}/api/v1/shells/${shell.id}/interpreter`, {
        method: "POST",
        headers: { authorization: `Bearer ${server.token}`, "content-type": "application/json" },
        body: JSON.stringify({ code }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as { value: unknown; restarted: boolean; error: unknown };
    };
    expect(await turn("import os\nx = 41\nos.uname().release")).toMatchObject({
      value: expect.stringMatching(/cloud-amd64$/),
      restarted: true,
      error: null,
    });
    expect(await turn("x + 1")).toMatchObject({ value: 42, restarted: false, error: null });
  }, 60_000);
});
