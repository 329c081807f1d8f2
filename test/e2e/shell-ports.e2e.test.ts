import ShellsClient, { type PortUrl, type Shell } from "@l1fe/shells";
import { runCli, type CliIo } from "@shells/cli";
import { createLogger } from "@shells/server";
import { createServer, type Server } from "node:net";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { startTestServer, type TestServer } from "./harness.js";

/**
 * A server for the tests, standard library only: `GET /…` answers what it received (path, host,
 * credentials), `POST /echo` returns its body, `/moved` redirects, `/ws` is a WebSocket that
 * echoes text frames. Every answer tries to set a cookie.
 */
const SERVER = String.raw`
import base64, hashlib, http.server, json, sys
hits = 0
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def answer(self, status, body, extra=()):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Set-Cookie", "session=from-the-shell; Path=/")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self.answer(200, self.rfile.read(length))
    def do_GET(self):
        global hits
        if self.path == "/moved":
            return self.answer(302, b"", [("Location", "/target")])
        if self.path == "/ws":
            return self.websocket()
        hits += 1
        seen = {"path": self.path, "host": self.headers.get("Host"), "hits": hits,
                "cookie": self.headers.get("Cookie"), "authorization": self.headers.get("Authorization"),
                "referer": self.headers.get("Referer")}
        self.answer(200, json.dumps(seen).encode(), [("Content-Type", "application/json")])
    def websocket(self):
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("Set-Cookie", "ws=from-the-shell")
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 15, head[1] & 127
            if length == 126:
                length = int.from_bytes(self.rfile.read(2), "big")
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:
                return
            reply = b"echo:" + data
            self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
`;

async function cli(server: TestServer, args: string[]) {
  let stdout = "";
  let stderr = "";
  const io: CliIo = {
    stdout: { write: (text: string | Uint8Array) => (stdout += String(text)) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin: Readable.from([]),
    env: { SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token },
    cwd: process.cwd(),
  };
  return { exitCode: await runCli(args, io), stdout, stderr };
}

describe("exposed ports of container shells", () => {
  const logLines: string[] = [];
  let server: TestServer;
  let shells: ShellsClient;
  let local: Shell;
  let hostServer: Server;
  let hostPort: number;

  const serve = async (shell: Shell, port: number) => {
    await shells.files.write(shell.id, "/workspace/server.py", SERVER);
    const started = await shells.exec(shell.id, {
      command: ["sh", "-c", `(python3 /workspace/server.py ${port} >/dev/null 2>&1 &); sleep 1`],
    });
    expect(started.exitCode).toBe(0);
  };
  const errorCode = async (response: Response) =>
    ((await response.json()) as { error: { code: string } }).error.code;

  beforeAll(async () => {
    // Request lines are logged at info: the URLs they name must not carry the token.
    const logger = createLogger("info", { write: (line: string) => void logLines.push(line) });
    server = await startTestServer({ backend: "container", logger });
    shells = new ShellsClient({ baseUrl: server.url, token: server.token });
    local = await shells.create({ language: "python", network: "localhost" });
    await serve(local, 8000);
    // A server on the host's loopback: a shell's port must never reach it.
    hostServer = createServer((socket) => socket.end("HTTP/1.1 200 OK\r\n\r\nhost secret"));
    await new Promise<void>((resolve) => hostServer.listen(0, "127.0.0.1", resolve));
    hostPort = (hostServer.address() as { port: number }).port;
  }, 300_000);
  afterAll(async () => {
    hostServer?.close();
    await server?.close();
  });

  it("reaches the shell's server over HTTP, with no credential of the caller and no cookie back", async () => {
    const exposed = await shells.url(local.id, 8000);
    expect(exposed).toMatchObject({ shellId: local.id, port: 8000 });
    expect(exposed.url).toMatch(/\/ports\/shp_[0-9a-z]{12}_[A-Za-z0-9_-]{43}\/$/);
    const response = await fetch(`${exposed.url}deep/path?q=1`, {
      headers: { cookie: "console=secret", authorization: `Bearer ${server.token}` },
    });
    expect(response.status).toBe(200);
    const seen = (await response.json()) as Record<string, unknown>;
    expect(seen).toMatchObject({
      path: "/deep/path?q=1",
      host: "localhost:8000",
      cookie: null,
      authorization: null,
      referer: null,
    });
    expect(response.headers.get("set-cookie")).toBeNull();
    expect(response.headers.get("content-security-policy")).toMatch(/^sandbox /);
    expect(response.headers.get("content-security-policy")).not.toMatch(/allow-same-origin/);

    const body = "x".repeat(2 * 1024 * 1024);
    const echoed = await fetch(`${exposed.url}echo`, { method: "POST", body });
    expect(await echoed.text()).toBe(body);

    const moved = await fetch(`${exposed.url}moved`, { redirect: "manual" });
    expect(moved.status).toBe(302);
    expect(moved.headers.get("location")).toBe(`${new URL(exposed.url).pathname}target`);

    // The URL without its trailing slash sends the browser to the one with it.
    const bare = await fetch(exposed.url.replace(/\/$/, ""), { redirect: "manual" });
    expect(bare.status).toBe(308);
  }, 60_000);

  it("carries a WebSocket both ways, and its handshake sets no cookie", async () => {
    const exposed = await shells.url(local.id, 8000);
    const socket = new WebSocket(`${exposed.url.replace(/^http/, "ws")}ws`);
    const handshake = new Promise<Record<string, string | string[] | undefined>>((resolve) =>
      socket.on("upgrade", (response) => resolve(response.headers)),
    );
    await new Promise((resolve, reject) => {
      socket.on("open", resolve);
      socket.on("error", reject);
    });
    expect((await handshake)["set-cookie"]).toBeUndefined();
    const answers: string[] = [];
    const got = new Promise<void>((resolve) =>
      socket.on("message", (data) => {
        answers.push((data as Buffer).toString("utf8"));
        if (answers.length === 2) resolve();
      }),
    );
    socket.send("hello");
    socket.send("again");
    await got;
    expect(answers).toEqual(["echo:hello", "echo:again"]);
    socket.close();
  }, 60_000);

  it("never reaches the host or another shell, whatever port is asked", async () => {
    const other = await shells.create({ language: "python", network: "localhost" });
    await serve(other, 8001);
    const hostAttempt = await shells.url(local.id, hostPort);
    const refused = await fetch(hostAttempt.url);
    expect(refused.status).toBe(502);
    expect(await errorCode(refused)).toBe("port_not_listening");
    const otherAttempt = await fetch((await shells.url(local.id, 8001)).url);
    expect(otherAttempt.status).toBe(502);
    // The other shell's own URL does reach its server.
    const own = await fetch(`${(await shells.url(other.id, 8001)).url}mine`);
    expect(((await own.json()) as { path: string }).path).toBe("/mine");
  }, 120_000);

  it("works for internet shells, and refuses sealed shells and the egress forwarder's ports", async () => {
    const online = await shells.create({ language: "python", network: "internet" });
    await serve(online, 8000);
    const response = await fetch(`${(await shells.url(online.id, 8000)).url}net`);
    expect(((await response.json()) as { path: string }).path).toBe("/net");
    const reserved = await shells.url(online.id, 3128).catch((e: unknown) => e);
    expect(reserved).toMatchObject({ code: "validation_failed" });
    const sealed = await shells.create({ language: "bash" });
    const refused = await shells.url(sealed.id, 8000).catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: "network_mode_unavailable" });
  }, 120_000);

  it("refuses a forged token, answers a paused shell with shell_paused, and records the URL without its token", async () => {
    const exposed: PortUrl = await shells.url(local.id, 8000);
    const forged = exposed.url.replace(
      /_([A-Za-z0-9_-]{43})\/$/,
      (_m, secret: string) => `_${secret.startsWith("A") ? "B" : "A"}${secret.slice(1)}/`,
    );
    const denied = await fetch(forged);
    expect(denied.status).toBe(401);
    expect(await errorCode(denied)).toBe("unauthenticated");

    await shells.action(local.id, "pause");
    const paused = await fetch(exposed.url);
    expect(paused.status).toBe(409);
    expect(await errorCode(paused)).toBe("shell_paused");
    await shells.action(local.id, "resume");
    const again = await fetch(exposed.url);
    expect(again.status).toBe(200);

    const events = [];
    for await (const event of shells.activity({ action: "shell.port.expose" })) events.push(event);
    const mine = events.find((e) => e.details["portUrlId"] === exposed.id);
    expect(mine).toMatchObject({ target: { id: local.id }, details: { port: 8000 } });
    const token = /\/ports\/([^/]+)\//.exec(exposed.url)![1]!;
    expect(JSON.stringify(events)).not.toContain(token);
    // The server logged the requests, with the token masked.
    expect(logLines.some((line) => line.includes("/ports/[redacted]/"))).toBe(true);
    expect(logLines.join("\n")).not.toContain(token);
  }, 60_000);

  it("lists the URLs that still work without their tokens, and a revoked URL answers 404 at once and closes its open WebSocket", async () => {
    const kept = await shells.url(local.id, 8000);
    const revoked = await shells.url(local.id, 8000, { ttlSeconds: 600 });
    const socket = new WebSocket(`${revoked.url.replace(/^http/, "ws")}ws`);
    await new Promise((resolve, reject) => {
      socket.on("open", resolve);
      socket.on("error", reject);
    });
    const closed = new Promise<void>((resolve) => socket.on("close", () => resolve()));

    const listed = await shells.urls(local.id);
    const ids = listed.map((url) => url.id);
    expect(ids).toEqual(expect.arrayContaining([kept.id, revoked.id]));
    expect(listed.find((url) => url.id === revoked.id)).toMatchObject({
      shellId: local.id,
      port: 8000,
      expiresAt: revoked.expiresAt,
      revokedAt: null,
      createdBy: { type: "user" },
    });
    const tokenOf = (url: string) => /\/ports\/([^/]+)\//.exec(url)![1]!;
    const listedJson = JSON.stringify(listed);
    expect(listedJson).not.toContain(tokenOf(kept.url));
    expect(listedJson).not.toContain(tokenOf(revoked.url));

    const answer = await shells.revokeUrl(local.id, revoked.id);
    expect(answer.revokedAt).not.toBeNull();
    const refused = await fetch(`${revoked.url}after`);
    expect(refused.status).toBe(404);
    expect(await errorCode(refused)).toBe("not_found");
    await closed;
    // The other URL still works, and only it is listed.
    expect((await fetch(`${kept.url}still`)).status).toBe(200);
    expect((await shells.urls(local.id)).map((url) => url.id)).not.toContain(revoked.id);
    // A second revocation finds nothing; the revocation is recorded, without the token.
    await expect(shells.revokeUrl(local.id, revoked.id)).rejects.toMatchObject({
      code: "not_found",
    });
    const events = [];
    for await (const event of shells.activity({ action: "shell.port.revoke" })) events.push(event);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      target: { id: local.id },
      details: { portUrlId: revoked.id },
    });
    expect(JSON.stringify(events)).not.toContain(tokenOf(revoked.url));
  }, 60_000);

  it("`shells url --list` shows a URL's id and port, and `--revoke` ends it", async () => {
    const exposed = await shells.url(local.id, 8000);
    const list = await cli(server, ["url", local.id, "--list"]);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`${exposed.id}\\s+8000\\s`));
    expect(list.stdout).not.toContain(/\/ports\/([^/]+)\//.exec(exposed.url)![1]!);
    const revoke = await cli(server, ["url", local.id, "--revoke", exposed.id]);
    expect(revoke.exitCode, revoke.stderr).toBe(0);
    expect(revoke.stdout).toContain(`revoked ${exposed.id}`);
    expect((await fetch(exposed.url)).status).toBe(404);
    const both = await cli(server, ["url", local.id, "8000", "--list"]);
    expect(both.exitCode).not.toBe(0);
  }, 60_000);

  it("`shells url` prints a URL that works", async () => {
    const run = await cli(server, ["url", local.id, "8000", "--ttl", "5m"]);
    expect(run.exitCode, run.stderr).toBe(0);
    const url = run.stdout.trim();
    const response = await fetch(`${url}from-cli`);
    expect(((await response.json()) as { path: string }).path).toBe("/from-cli");
  }, 60_000);
});
