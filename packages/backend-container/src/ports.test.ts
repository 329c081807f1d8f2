import { readdir, readFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import type { Duplex } from "node:stream";
import type { NetworkMode } from "@shells/contract";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ContainerBackend } from "./container-backend.js";
import { sleep } from "./internal/proc.js";
import {
  bashSpec,
  hostReport,
  installProbe,
  makeTestBackend,
  request,
} from "./internal/test-support.js";

/** How many of this process's port relays are alive (their helper names itself `shells-port`). */
async function relays(): Promise<number> {
  let count = 0;
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    const match = /^\d+ \((.*)\) (\S) (\d+)/.exec(stat);
    if (match?.[1] === "shells-port" && match[2] !== "Z" && Number(match[3]) === process.pid)
      count += 1;
  }
  return count;
}

/** Everything the connection answers until the server closes it. */
async function readAll(stream: Duplex): Promise<string> {
  let text = "";
  for await (const chunk of stream) text += String(chunk);
  return text;
}

describe.runIf(hostReport.available)("connecting to a port inside a container shell", () => {
  let backend: ContainerBackend;
  let cleanup: () => Promise<void>;
  let hostServer: Server;
  let hostPort: number;

  beforeAll(async () => {
    ({ backend, cleanup } = await makeTestBackend());
    // A server on the host's own loopback: no shell's port may ever reach it.
    hostServer = createServer((socket) => socket.end("host secret\n"));
    await new Promise<void>((resolve) => hostServer.listen(0, "127.0.0.1", resolve));
    hostPort = (hostServer.address() as { port: number }).port;
  });
  afterAll(async () => {
    hostServer?.close();
    await cleanup();
  });

  const serving = async (shellId: string, port: number, network: NetworkMode = "localhost") => {
    await backend.create(bashSpec(shellId, { network }));
    if (network === "sealed") return;
    await installProbe(backend, shellId);
    await backend.exec(
      shellId,
      request(["sh", "-c", `/workspace/probe serve ${port} >/dev/null 2>&1 &`]),
    );
    await sleep(200);
  };

  it("reaches a server on the shell's loopback, and only that shell's", async () => {
    await serving("port-a", 7000);
    await serving("port-b", 7001);
    expect(await readAll(await backend.connectPort("port-a", 7000))).toBe("pong\n");
    // Shell B's server is not reachable through shell A, nor is the host's.
    await expect(backend.connectPort("port-a", 7001)).rejects.toMatchObject({
      code: "connection_refused",
    });
    await expect(backend.connectPort("port-a", hostPort)).rejects.toMatchObject({
      code: "connection_refused",
    });
    expect(await readAll(await backend.connectPort("port-b", 7001))).toBe("pong\n");
  }, 120_000);

  it("carries many connections at once, and no relay outlives its connection", async () => {
    for (let round = 0; round < 4; round++) {
      const answers = await Promise.all(
        Array.from({ length: 8 }, async () => readAll(await backend.connectPort("port-a", 7000))),
      );
      expect(answers).toEqual(Array.from({ length: 8 }, () => "pong\n"));
    }
    await expect.poll(relays, { timeout: 5_000 }).toBe(0);
  }, 60_000);

  it("refuses a sealed shell, a paused one, and ports out of range", async () => {
    await serving("port-s", 7000, "sealed");
    await expect(backend.connectPort("port-s", 7000)).rejects.toMatchObject({
      code: "unsupported",
    });
    await expect(backend.connectPort("port-a", 70000)).rejects.toMatchObject({
      code: "unsupported",
    });
    await backend.pause("port-b");
    await expect(backend.connectPort("port-b", 7001)).rejects.toMatchObject({ code: "paused" });
    await backend.resume("port-b");
    expect(await readAll(await backend.connectPort("port-b", 7001))).toBe("pong\n");
  }, 60_000);
});
