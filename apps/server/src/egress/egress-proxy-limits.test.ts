import type { EgressRuleLists } from "@shells/contract";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import {
  connect,
  createServer as createTcpServer,
  type AddressInfo,
  type Server,
  type Socket,
} from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect as tlsConnect } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { EgressDecision } from "./decision-log.js";
import { EgressProxy, type EgressProxyOptions } from "./egress-proxy.js";
import { EgressPolicy } from "./policy.js";
import { MAX_CLIENT_HELLO_BYTES } from "./tls-client-hello.js";

// A shell's worst behaviour against its own proxy, over real sockets: the forwarder's unix socket
// on one side, loopback upstreams on the other (opened explicitly by the org policy here).

const ORG: EgressRuleLists = {
  allowHosts: [],
  denyHosts: [],
  allowCidrs: ["127.0.0.1/32"],
  denyCidrs: [],
  allowPorts: [],
  denyPorts: [],
};

let dir: string;
let upstream: HttpServer;
let upstreamPort = 0;
let echo: Server;
let echoPort = 0;
let flood: Server;
let floodPort = 0;
const proxies: EgressProxy[] = [];
const clients: Socket[] = [];

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "egress-limits-"));
  upstream = createHttpServer((req, res) => res.end(`hello ${req.url}`));
  echo = createTcpServer((socket) => socket.pipe(socket));
  // Streams bytes until the tunnel ends: a shell downloading past its budget.
  flood = createTcpServer((socket) => {
    const chunk = Buffer.alloc(16 * 1024, 120);
    const pump = () => {
      while (socket.writable && socket.write(chunk));
    };
    socket.on("drain", pump);
    socket.on("error", () => socket.destroy());
    pump();
  });
  const listen = async (server: Server | HttpServer) => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  };
  upstreamPort = await listen(upstream);
  echoPort = await listen(echo);
  floodPort = await listen(flood);
});

afterAll(() => {
  upstream.close();
  echo.close();
  flood.close();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  for (const proxy of proxies.splice(0)) await proxy.close();
});

let sequence = 0;
async function startProxy(
  overrides: Partial<EgressProxyOptions> = {},
): Promise<{ socketPath: string; decisions: EgressDecision[] }> {
  const decisions: EgressDecision[] = [];
  const socketPath = join(dir, `proxy-${sequence++}.sock`);
  const proxy = new EgressProxy({
    orgId: "org",
    shellId: "shl",
    socketPath,
    policy: () => Promise.resolve(new EgressPolicy({ org: ORG })),
    resolve: () => Promise.resolve(["127.0.0.1"]),
    maxConnections: 16,
    maxBytes: 1 << 30,
    maxRequestsPerSecond: 1000,
    record: (decision) => decisions.push(decision),
    ...overrides,
  });
  await proxy.listen();
  proxies.push(proxy);
  return { socketPath, decisions };
}

/** A connection from the shell's forwarder: its PROXY line (to the proxy listener by default). */
function forwarded(socketPath: string, line = "PROXY TCP4 127.0.0.1 127.0.0.1 40000 3128"): Socket {
  const socket = connect(socketPath);
  socket.on("error", () => undefined);
  socket.write(`${line}\r\n`);
  clients.push(socket);
  return socket;
}

/** Everything the proxy sends until it closes the connection, and when it did (ms after `since`). */
function untilClosed(
  socket: Socket,
  since = performance.now(),
): Promise<{ data: string; ms: number }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.once("close", () =>
      resolve({ data: Buffer.concat(chunks).toString("latin1"), ms: performance.now() - since }),
    );
  });
}

/** One plain HTTP request through the proxy; its status line, or "closed". */
async function get(socketPath: string, path = "/ok"): Promise<string> {
  const socket = forwarded(socketPath);
  const answer = untilClosed(socket);
  socket.write(
    `GET http://ok.test:${upstreamPort}${path} HTTP/1.1\r\nhost: ok.test:${upstreamPort}\r\nconnection: close\r\n\r\n`,
  );
  const { data } = await answer;
  return data ? (data.split("\r\n")[0] as string) : "closed";
}

/** Opens a CONNECT tunnel to `port`; resolves once the proxy answered its status line. */
async function tunnel(
  socketPath: string,
  port: number,
): Promise<{ socket: Socket; status: string }> {
  const socket = forwarded(socketPath);
  socket.write(`CONNECT ok.test:${port} HTTP/1.1\r\nhost: ok.test:${port}\r\n\r\n`);
  const status = await new Promise<string>((resolve) => {
    socket.once("data", (chunk: Buffer) =>
      resolve(chunk.toString("latin1").split("\r\n")[0] ?? ""),
    );
    socket.once("close", () => resolve("closed"));
  });
  return { socket, status };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("the egress proxy against a hostile shell", () => {
  it("cuts off a request head trickled in a byte at a time, and answers others meanwhile", async () => {
    const { socketPath } = await startProxy({ headerTimeoutMs: 600 });
    const slow = forwarded(socketPath);
    const closed = untilClosed(slow);
    slow.write(`GET http://ok.test:${upstreamPort}/ HTTP/1.1\r\n`);
    const trickle = setInterval(() => slow.write("x"), 50);
    try {
      // A well-behaved client is served while the slow one holds its connection.
      expect(await get(socketPath)).toBe("HTTP/1.1 200 OK");
      const { data, ms } = await closed;
      expect(data).not.toContain("200 OK"); // closed, the request never forwarded
      expect(ms).toBeGreaterThanOrEqual(500);
      expect(ms).toBeLessThan(5_000);
    } finally {
      clearInterval(trickle);
    }
    expect(await get(socketPath)).toBe("HTTP/1.1 200 OK");
  });

  it("closes a connection that never sends its PROXY line or its ClientHello in time", async () => {
    const { socketPath, decisions } = await startProxy({ headerTimeoutMs: 400 });
    const silent = connect(socketPath);
    silent.on("error", () => undefined);
    clients.push(silent);
    const tls = forwarded(socketPath, "PROXY TCP4 127.0.0.1 192.0.2.1 40000 443");
    tls.write(Buffer.from([22, 3, 1, 0x02, 0x00, 1])); // a record header and one byte of hello
    const [a, b] = await Promise.all([untilClosed(silent), untilClosed(tls)]);
    for (const { ms } of [a, b]) expect(ms).toBeLessThan(5_000);
    expect(decisions.at(-1)).toMatchObject({ protocol: "tls", reason: "no_server_name" });
  });

  it("drops connections over the shell's cap, records connection_limit, and serves again once one closes", async () => {
    const { socketPath, decisions } = await startProxy({ maxConnections: 3 });
    const held = [0, 1, 2].map(() => forwarded(socketPath));
    await sleep(100);
    const over = connect(socketPath);
    over.on("error", () => undefined);
    clients.push(over);
    const { ms } = await untilClosed(over);
    expect(ms).toBeLessThan(2_000);
    expect(decisions).toContainEqual(
      expect.objectContaining({ allowed: false, reason: "connection_limit" }),
    );
    held[0]?.destroy();
    await sleep(100);
    expect(await get(socketPath)).toBe("HTTP/1.1 200 OK");
  });

  it("closes a tunnel that moves nothing, and keeps a busy one open", async () => {
    const { socketPath } = await startProxy({ tunnelIdleMs: 400 });
    const idle = await tunnel(socketPath, echoPort);
    const busy = await tunnel(socketPath, echoPort);
    expect([idle.status, busy.status]).toEqual([
      "HTTP/1.1 200 Connection Established",
      "HTTP/1.1 200 Connection Established",
    ]);
    const idleClosed = untilClosed(idle.socket);
    let echoed = "";
    busy.socket.on("data", (chunk: Buffer) => (echoed += chunk.toString()));
    for (let i = 0; i < 12; i++) {
      busy.socket.write(".");
      await sleep(100);
    }
    expect((await idleClosed).ms).toBeLessThan(5_000);
    expect(busy.socket.destroyed).toBe(false);
    expect(echoed).toBe("............");
  });

  it("refuses requests past the shell's rate with 429 and records rate_limited, DNS questions included", async () => {
    const { socketPath, decisions } = await startProxy({ maxRequestsPerSecond: 4 });
    const statuses = await Promise.all(Array.from({ length: 7 }, () => get(socketPath)));
    expect(statuses.filter((s) => s === "HTTP/1.1 200 OK").length).toBe(4);
    expect(statuses.filter((s) => s === "HTTP/1.1 429 Too Many Requests").length).toBe(3);
    expect(decisions.filter((d) => d.reason === "rate_limited").length).toBe(3);
    // A DNS question over the rate is refused too (REFUSED, rcode 5), never looked up.
    const dns = forwarded(socketPath, "PROXY TCP4 127.0.0.1 127.0.0.53 40000 53");
    const answer = untilClosed(dns);
    const question = Buffer.from([
      0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 2, 111, 107, 4, 116, 101, 115, 116, 0, 0, 1,
      0, 1,
    ]);
    dns.end(Buffer.concat([Buffer.from([0, question.length]), question]));
    const reply = Buffer.from((await answer).data, "latin1");
    expect((reply[2 + 3] as number) & 0xf).toBe(5);
    expect(decisions.at(-1)).toMatchObject({ protocol: "dns", reason: "rate_limited" });
    await sleep(1_100); // a second refills the bucket
    expect(await get(socketPath)).toBe("HTTP/1.1 200 OK");
  });

  it("ends every connection once the shell passes its byte budget, reports it once, and refuses with egress_limit", async () => {
    const reports: number[] = [];
    const { socketPath, decisions } = await startProxy({
      maxBytes: 256 * 1024,
      onByteLimit: (bytes) => reports.push(bytes),
    });
    const { socket, status } = await tunnel(socketPath, floodPort);
    expect(status).toBe("HTTP/1.1 200 Connection Established");
    socket.resume();
    const { ms } = await untilClosed(socket);
    expect(ms).toBeLessThan(5_000);
    expect(await get(socketPath)).toBe("HTTP/1.1 403 Forbidden");
    expect(decisions.at(-1)).toMatchObject({ allowed: false, reason: "egress_limit" });
    expect(reports.length).toBe(1);
    expect(reports[0]).toBeGreaterThanOrEqual(256 * 1024);
  });
});

describe("a redirected TLS connection whose ClientHello spans several records", () => {
  /** Node's ClientHello naming `servername`, as its one record's handshake message. */
  async function helloMessage(servername: string): Promise<Buffer> {
    const capture = createTcpServer();
    await new Promise<void>((resolve) => capture.listen(0, "127.0.0.1", resolve));
    const hello = new Promise<Buffer>((resolve) =>
      capture.once("connection", (socket) => socket.once("data", (d: Buffer) => resolve(d))),
    );
    const client = tlsConnect({
      host: "127.0.0.1",
      port: (capture.address() as AddressInfo).port,
      servername,
    });
    client.on("error", () => undefined);
    const record = await hello;
    client.destroy();
    capture.close();
    return record.subarray(5, 5 + record.readUInt16BE(3));
  }
  const records = (message: Buffer, size: number) => {
    const out: Buffer[] = [];
    for (let at = 0; at < message.length; at += size) {
      const part = message.subarray(at, at + size);
      out.push(Buffer.from([22, 3, 1, part.length >> 8, part.length & 0xff]), part);
    }
    return Buffer.concat(out);
  };

  it("is decided on the SNI put together from its records", async () => {
    const { socketPath, decisions } = await startProxy({
      policy: () =>
        Promise.resolve(
          new EgressPolicy({ org: ORG, shell: { mode: "allowlist", allow: ["ok.test"] } }),
        ),
    });
    const client = forwarded(socketPath, "PROXY TCP4 127.0.0.1 192.0.2.1 40000 443");
    const closed = untilClosed(client);
    client.write(records(await helloMessage("bad.test"), 50));
    await closed;
    expect(decisions.at(-1)).toMatchObject({
      protocol: "tls",
      host: "bad.test",
      allowed: false,
      reason: "not_in_shell_allowlist",
    });
  });

  it("refuses one spread thinner than the proxy reads, without deciding on a part", async () => {
    const { socketPath, decisions } = await startProxy();
    const message = await helloMessage("ok.test");
    const padded = Buffer.concat([message, Buffer.alloc(8 * 1024)]);
    padded.writeUIntBE(padded.length - 4, 1, 3);
    const thin = records(padded, 1);
    expect(thin.length).toBeGreaterThan(MAX_CLIENT_HELLO_BYTES);
    const client = forwarded(socketPath, "PROXY TCP4 127.0.0.1 192.0.2.1 40000 443");
    const closed = untilClosed(client);
    client.write(thin);
    expect((await closed).data).toBe("");
    expect(decisions.at(-1)).toMatchObject({ protocol: "tls", reason: "no_server_name" });
  });
});
