import { createServer, type Server, type Socket } from "node:net";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EgressRelay } from "./internal/egress-relay.js";
import {
  AgentEgress,
  AgentListener,
  encodeNetOpen,
  FrameType,
  NET_WINDOW,
  type Frame,
} from "./internal/protocol.js";

/**
 * The host's half of the relay against a real unix socket proxy, with the guest's frames played
 * by the test (a subverted guest can send any of them; the guest's own half runs in
 * `egress.test.ts`, in real VMs).
 */
describe("egress relay (host side)", () => {
  let dir: string;
  let proxy: Server;
  let accepted: Socket[];
  let received: Buffer[];
  let sent: { type: number; id: number; payload: Buffer }[];
  let relay: EgressRelay;

  const frame = (type: number, id: number, payload: Buffer = Buffer.alloc(0)): Frame => ({
    type,
    id,
    payload,
  });
  const open = (id: number, listener: number = AgentListener.PROXY, clientAddress = "127.0.0.1") =>
    relay.onFrame(
      frame(FrameType.NET_OPEN, id, encodeNetOpen({ listener, clientAddress, clientPort: 40000 })),
    );
  const until = async (check: () => boolean) => {
    for (let i = 0; i < 200 && !check(); i++) await new Promise((r) => setTimeout(r, 10));
    expect(check()).toBe(true);
  };
  const sentOf = (type: number) => sent.filter((f) => f.type === type);

  beforeEach(async () => {
    dir = await mkdtemp(`${tmpdir()}/shells-relay-`);
    accepted = [];
    received = [];
    sent = [];
    proxy = createServer((socket) => {
      accepted.push(socket);
      socket.on("data", (chunk: Buffer) => received.push(chunk));
      socket.on("error", () => undefined);
    });
    await new Promise<void>((resolve) => proxy.listen(`${dir}/proxy.sock`, resolve));
    relay = new EgressRelay(
      (type, id, payload) => sent.push({ type, id, payload: Buffer.from(payload ?? []) }),
      { socketPath: `${dir}/proxy.sock`, egress: AgentEgress.INTERNET },
    );
  });
  afterEach(async () => {
    relay.closeAll();
    for (const socket of accepted) socket.destroy();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it("writes its own PROXY line naming the listener, then the guest's bytes, and credits them", async () => {
    open(3);
    relay.onFrame(frame(FrameType.NET_DATA, 3, Buffer.from("PROXY TCP4 1.2.3.4 9.9.9.9 1 25\r\n")));
    await until(() => Buffer.concat(received).toString().includes("9.9.9.9"));
    // The guest's bytes follow the line the host wrote; they never replace it.
    expect(Buffer.concat(received).toString()).toBe(
      "PROXY TCP4 127.0.0.1 127.0.0.1 40000 3128\r\nPROXY TCP4 1.2.3.4 9.9.9.9 1 25\r\n",
    );
    await until(() => sentOf(FrameType.NET_CREDIT).length === 1);
    expect(sentOf(FrameType.NET_CREDIT)[0]!.payload.readUInt32LE(0)).toBe(33);
    accepted[0]!.end("answer");
    // Half closed: the guest may still send until it ends its own direction too.
    await until(() => sentOf(FrameType.NET_DATA).some((f) => f.payload.length === 0));
    expect(relay.size).toBe(1);
    relay.onFrame(frame(FrameType.NET_DATA, 3));
    await until(() => sentOf(FrameType.NET_CLOSE).length === 1);
    expect(Buffer.concat(sentOf(FrameType.NET_DATA).map((f) => f.payload)).toString()).toBe(
      "answer",
    );
    // The proxy's end of data is passed on (an empty NET_DATA) before the stream closes.
    expect(sent.map((f) => f.type).slice(-2)).toEqual([FrameType.NET_DATA, FrameType.NET_CLOSE]);
  });

  it("names the resolver for DNS streams, and refuses them to a shell that only has bindings", async () => {
    open(1, AgentListener.DNS);
    await until(() => received.length > 0);
    expect(Buffer.concat(received).toString()).toBe("PROXY TCP4 127.0.0.1 127.0.0.53 40000 53\r\n");
    const bindingsOnly = new EgressRelay(
      (type, id, payload) => sent.push({ type, id, payload: Buffer.from(payload ?? []) }),
      { socketPath: `${dir}/proxy.sock`, egress: AgentEgress.BINDINGS },
    );
    bindingsOnly.onFrame(
      frame(
        FrameType.NET_OPEN,
        2,
        encodeNetOpen({ listener: AgentListener.DNS, clientAddress: "127.0.0.1", clientPort: 1 }),
      ),
    );
    expect(sent).toContainEqual({ type: FrameType.NET_CLOSE, id: 2, payload: Buffer.alloc(0) });
    expect(bindingsOnly.size).toBe(0);
  });

  it("names the address a transparent stream's client dialled, and refuses any other port, loopback, or a shell without internet", async () => {
    const transparent = (id: number, address: string, port: number, via = relay) =>
      via.onFrame(
        frame(
          FrameType.NET_OPEN,
          id,
          encodeNetOpen({
            listener: AgentListener.TRANSPARENT,
            clientAddress: "127.0.0.1",
            clientPort: 40000,
            destination: { address, port },
          }),
        ),
      );
    transparent(1, "93.184.216.34", 443);
    transparent(2, "169.254.169.254", 80);
    await until(() => received.length >= 2);
    expect(Buffer.concat(received).toString().split("\r\n").filter(Boolean).sort()).toEqual([
      "PROXY TCP4 127.0.0.1 169.254.169.254 40000 80",
      "PROXY TCP4 127.0.0.1 93.184.216.34 40000 443",
    ]);
    // A port the proxy would take for its own listener, the guest's loopback (127.0.0.53:53 is
    // the resolver), nowhere, multicast, or no destination at all.
    transparent(3, "93.184.216.34", 3128);
    transparent(4, "93.184.216.34", 22);
    transparent(5, "127.0.0.53", 80);
    transparent(6, "127.0.0.1", 443);
    transparent(7, "0.0.0.0", 80);
    transparent(8, "224.0.0.1", 80);
    relay.onFrame(
      frame(
        FrameType.NET_OPEN,
        9,
        encodeNetOpen({
          listener: AgentListener.TRANSPARENT,
          clientAddress: "127.0.0.1",
          clientPort: 1,
        }),
      ),
    );
    const bindingsOnly = new EgressRelay(
      (type, id, payload) => sent.push({ type, id, payload: Buffer.from(payload ?? []) }),
      { socketPath: `${dir}/proxy.sock`, egress: AgentEgress.BINDINGS },
    );
    transparent(10, "93.184.216.34", 443, bindingsOnly);
    expect(sentOf(FrameType.NET_CLOSE).map((f) => f.id)).toEqual([3, 4, 5, 6, 7, 8, 9, 10]);
    expect(relay.size).toBe(2);
    expect(bindingsOnly.size).toBe(0);
  });

  it("refuses unknown listeners, clients off loopback and ids out of range", () => {
    open(1, 7);
    open(2, AgentListener.PROXY, "10.0.0.5");
    open(0);
    open(65);
    expect(sentOf(FrameType.NET_CLOSE).map((f) => f.id)).toEqual([1, 2, 0, 65]);
    expect(relay.size).toBe(0);
  });

  it("cuts off a guest that sends past its window", async () => {
    open(4);
    // The proxy reads nothing, so nothing is credited back.
    await until(() => accepted.length === 1);
    accepted[0]!.pause();
    const chunk = Buffer.alloc(64 * 1024);
    for (let sentBytes = 0; sentBytes <= NET_WINDOW; sentBytes += chunk.length)
      relay.onFrame(frame(FrameType.NET_DATA, 4, chunk));
    expect(relay.size).toBe(0);
    expect(sentOf(FrameType.NET_CLOSE).map((f) => f.id)).toEqual([4]);
  });

  it("stops reading the proxy while the guest has a window's worth unread, and goes on when credited", async () => {
    open(5);
    await until(() => accepted.length === 1);
    const big = Buffer.alloc(4 * NET_WINDOW, 7);
    accepted[0]!.write(big);
    const downBytes = () =>
      sentOf(FrameType.NET_DATA).reduce((total, f) => total + f.payload.length, 0);
    await until(() => downBytes() >= NET_WINDOW);
    await new Promise((r) => setTimeout(r, 200));
    // Never past the window (the agent cuts off a host that sends more): the rest waits in the
    // proxy's socket, and at most one chunk of it here.
    expect(downBytes()).toBe(NET_WINDOW);
    const credit = Buffer.alloc(4);
    credit.writeUInt32LE(NET_WINDOW / 2, 0);
    relay.onFrame(frame(FrameType.NET_CREDIT, 5, credit));
    await until(() => downBytes() === NET_WINDOW + NET_WINDOW / 2);
    await new Promise((r) => setTimeout(r, 100));
    expect(downBytes()).toBe(NET_WINDOW + NET_WINDOW / 2);
  });

  it("fails a stream at once while no proxy listens, and connects the next one afresh", async () => {
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
    open(6);
    await until(() => sentOf(FrameType.NET_CLOSE).length === 1);
    proxy = createServer((socket) => {
      accepted.push(socket);
      socket.on("data", (chunk: Buffer) => received.push(chunk));
    });
    await new Promise<void>((resolve) => proxy.listen(`${dir}/proxy.sock`, resolve));
    open(6);
    await until(() => received.length > 0);
    expect(relay.size).toBe(1);
  });
});
