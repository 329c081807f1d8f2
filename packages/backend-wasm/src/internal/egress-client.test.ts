import { mkdtemp, rm } from "node:fs/promises";
import { createServer as createHttpServer, type IncomingMessage } from "node:http";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { viaEgressProxy, type GuestHttpRequest } from "./egress-client.js";

/**
 * A stand-in for the shell's egress proxy on a unix socket, speaking what the real one expects: a
 * PROXY line, then HTTP (absolute-URI requests, origin-form requests to its own paths, CONNECT).
 * It answers each request with what it received, and refuses every tunnel.
 */
describe("the wasm egress bridge to the proxy's socket", () => {
  let dir: string;
  let socketPath: string;
  let front: Server;
  const proxyLines: string[] = [];
  const connects: string[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "shells-egress-bridge-"));
    socketPath = join(dir, "proxy.sock");
    const http = createHttpServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () =>
        res.end(
          JSON.stringify({
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: Buffer.concat(chunks).toString("base64"),
          }),
        ),
      );
    });
    http.on("connect", (req: IncomingMessage, socket: Socket) => {
      connects.push(req.url ?? "");
      socket.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
    });
    front = createNetServer((socket) => {
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf("\r\n");
        if (end < 0) return;
        socket.off("data", onData);
        proxyLines.push(head.subarray(0, end).toString("latin1"));
        socket.unshift(head.subarray(end + 2));
        http.emit("connection", socket);
      };
      socket.on("data", onData);
    });
    await new Promise<void>((resolve) => front.listen(socketPath, resolve));
  });
  afterAll(async () => {
    front.close();
    await rm(dir, { recursive: true, force: true });
  });

  const request = (fields: Partial<GuestHttpRequest>): GuestHttpRequest => ({
    method: "GET",
    url: "http://example.test/",
    headers: {},
    body: null,
    ...fields,
  });
  const echoed = async (fields: Partial<GuestHttpRequest>) => {
    const answer = await viaEgressProxy(socketPath, request(fields));
    if (!answer.ok) throw new Error(answer.error);
    return JSON.parse(Buffer.from(answer.body, "base64").toString("utf8")) as {
      method: string;
      url: string;
      headers: Record<string, string>;
      body: string;
    };
  };

  it("sends http as an absolute-URI request after the PROXY line naming the proxy listener, body bytes intact", async () => {
    const body = Buffer.from([0, 1, 2, 255, 254, 10, 13]).toString("base64");
    const seen = await echoed({
      method: "post",
      url: "http://example.test:8080/path?q=1",
      headers: { "X-Guest": "yes", "Proxy-Authorization": "Basic Zm9v", Host: "elsewhere.test" },
      body,
    });
    expect(proxyLines.at(-1)).toMatch(/^PROXY TCP4 127\.0\.0\.1 127\.0\.0\.1 \d+ 3128$/);
    expect(seen).toMatchObject({ method: "POST", url: "http://example.test:8080/path?q=1", body });
    expect(seen.headers["x-guest"]).toBe("yes");
    // The connection's own headers are the bridge's: the guest cannot set them.
    expect(seen.headers["proxy-authorization"]).toBeUndefined();
    expect(seen.headers.host).toBe("example.test:8080");
  });

  it("sends the listener's own paths (binding URLs) in origin form", async () => {
    const seen = await echoed({ url: "http://127.0.0.1:3128/bindings/echo/v1/x?y=2" });
    expect(seen.url).toBe("/bindings/echo/v1/x?y=2");
  });

  it("tunnels https with CONNECT to the named host and hands the proxy's refusal back as the answer", async () => {
    const answer = await viaEgressProxy(socketPath, request({ url: "https://169.254.169.254/x" }));
    expect(connects.at(-1)).toBe("169.254.169.254:443");
    expect(answer).toMatchObject({ ok: true, status: 403 });
  });

  it("refuses other loopback ports, other schemes and CONNECT from the guest without reaching the proxy", async () => {
    const before = proxyLines.length + connects.length;
    for (const fields of [
      { url: "http://127.0.0.1:6379/" },
      { url: "http://localhost/" },
      { url: "file:///etc/passwd" },
      { url: "http://user:pw@example.test/" },
      { method: "CONNECT", url: "http://example.test/" },
    ])
      expect(await viaEgressProxy(socketPath, request(fields))).toMatchObject({ ok: false });
    expect(proxyLines.length + connects.length).toBe(before);
  });
});
