import { mkdtemp, rm } from "node:fs/promises";
import { connect, createServer, type AddressInfo, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EgressBridge, type EgressRoute } from "./internal/egress-bridge.js";
import { startEgressForwarder } from "./internal/egress-forwarder.js";

/**
 * A shell's egress path on Kubernetes, on loopback: the agent's forwarder (in the shell's Pod)
 * → the control plane's bridge → the shell's egress proxy socket (here a unix socket that records
 * what it receives and echoes it back).
 */

let dir: string;
let proxy: Server;
let received: Buffer[];
let bridge: EgressBridge;
const forwarders: Server[] = [];
const TOKEN = "a".repeat(43);

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "shells-k8s-egress-"));
  received = [];
  proxy = createServer((socket) => {
    socket.on("data", (chunk: Buffer) => {
      received.push(chunk);
      socket.write(chunk);
    });
  });
  await new Promise<void>((resolve) => proxy.listen(join(dir, "proxy.sock"), resolve));
});

afterEach(async () => {
  for (const forwarder of forwarders.splice(0)) forwarder.close();
  await bridge?.close();
  await new Promise<void>((resolve) => proxy.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

async function path(
  routes: Record<string, EgressRoute>,
  claim: { shellId: string; token: string },
  resolve: (shellId: string) => Promise<EgressRoute | null> = async () => null,
) {
  bridge = new EgressBridge(resolve);
  for (const [shellId, route] of Object.entries(routes)) bridge.allow(shellId, route);
  const bridgePort = await bridge.listen(0, "127.0.0.1");
  const forwarder = await startEgressForwarder({
    ...claim,
    bridgeHost: "127.0.0.1",
    bridgePort,
    listenPort: 0,
  });
  forwarders.push(forwarder);
  return (forwarder.address() as AddressInfo).port;
}

/** Sends a request through the forwarder; resolves with what came back before the close. */
function roundTrip(port: number, request: string): Promise<string> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, "127.0.0.1", () => socket.write(request));
    let answer = "";
    socket.on("data", (chunk: Buffer) => {
      answer += chunk.toString();
      if (answer.length >= request.length) socket.end();
    });
    socket.on("close", () => resolve(answer));
    socket.on("error", () => resolve(answer));
  });
}

const REQUEST = "CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n";

describe("the egress bridge", () => {
  it("relays a shell's traffic to its egress proxy, without the preamble", async () => {
    const port = await path(
      { "sh-1": { token: TOKEN, socketPath: join(dir, "proxy.sock") } },
      { shellId: "sh-1", token: TOKEN },
    );
    expect(await roundTrip(port, REQUEST)).toBe(REQUEST);
    expect(Buffer.concat(received).toString()).toBe(REQUEST);
  });

  it("closes a connection with a wrong credential before a byte reaches the proxy", async () => {
    const port = await path(
      { "sh-1": { token: TOKEN, socketPath: join(dir, "proxy.sock") } },
      { shellId: "sh-1", token: "b".repeat(43) },
    );
    expect(await roundTrip(port, REQUEST)).toBe("");
    expect(received).toEqual([]);
  });

  it("will not let one shell's credential open another shell's proxy", async () => {
    const port = await path(
      {
        "sh-1": { token: TOKEN, socketPath: join(dir, "proxy.sock") },
        "sh-2": { token: "c".repeat(43), socketPath: join(dir, "other.sock") },
      },
      { shellId: "sh-2", token: TOKEN },
    );
    expect(await roundTrip(port, REQUEST)).toBe("");
    expect(received).toEqual([]);
  });

  it("finds a shell it has not seen (after a restart) through its resolver, once", async () => {
    const asked: string[] = [];
    const port = await path({}, { shellId: "sh-9", token: TOKEN }, async (shellId) => {
      asked.push(shellId);
      return { token: TOKEN, socketPath: join(dir, "proxy.sock") };
    });
    expect(await roundTrip(port, REQUEST)).toBe(REQUEST);
    expect(await roundTrip(port, REQUEST)).toBe(REQUEST);
    expect(asked).toEqual(["sh-9"]);
  });

  it("refuses a shell it forgot", async () => {
    const port = await path(
      { "sh-1": { token: TOKEN, socketPath: join(dir, "proxy.sock") } },
      { shellId: "sh-1", token: TOKEN },
    );
    bridge.forget("sh-1");
    expect(await roundTrip(port, REQUEST)).toBe("");
  });
});
