import { writeTar } from "@shells/sandbox";
import Database from "better-sqlite3";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startTestServer, type TestServer } from "./harness.js";

let server: TestServer;
let shellId = "";
beforeAll(async () => {
  server = await startTestServer();
  shellId = (
    (await (
      await api("/api/v1/shells", { method: "POST", body: JSON.stringify({ language: "bash" }) })
    ).json()) as { id: string }
  ).id;
});
afterAll(async () => {
  await server.close();
});

function api(path: string, init: RequestInit & { json?: boolean } = {}) {
  const headers: Record<string, string> = { authorization: `Bearer ${server.token}` };
  if (typeof init.body === "string") headers["content-type"] = "application/json";
  return fetch(`${server.url}${path}`, {
    ...init,
    headers: { ...headers, ...(init.headers as Record<string, string>) },
  });
}
const q = (path: string) => encodeURIComponent(path);
const errorCode = async (res: Response) =>
  ((await res.json()) as { error: { code: string } }).error.code;

describe("files API", () => {
  it("uploads, stats, lists, downloads (binary-safe) and removes files", async () => {
    const bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 256));
    const put = await api(`/api/v1/shells/${shellId}/files/content?path=${q("data/blob.bin")}`, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: bytes,
    });
    expect(put.status).toBe(200);
    expect(await put.json()).toMatchObject({
      path: "/workspace/data/blob.bin",
      type: "file",
      sizeBytes: 1000,
    });
    const listed = (await (
      await api(`/api/v1/shells/${shellId}/files?path=${q("/workspace/data")}`)
    ).json()) as { items: { path: string }[] };
    expect(listed.items.map((i) => i.path)).toEqual(["/workspace/data/blob.bin"]);
    const got = await api(
      `/api/v1/shells/${shellId}/files/content?path=${q("/workspace/data/blob.bin")}`,
    );
    expect(got.headers.get("content-type")).toBe("application/octet-stream");
    expect(Buffer.from(await got.arrayBuffer())).toEqual(bytes);
    expect(
      (
        await api(`/api/v1/shells/${shellId}/files?path=${q("/workspace/data")}&recursive=true`, {
          method: "DELETE",
        })
      ).status,
    ).toBe(200);
    expect(
      await errorCode(
        await api(`/api/v1/shells/${shellId}/files/stat?path=${q("/workspace/data")}`),
      ),
    ).toBe("file_not_found");
  });

  it("refuses ../ in any path, and answers a missing file with file_not_found", async () => {
    for (const path of ["../etc/passwd", "/workspace/../../etc/shadow", "a/../../b"]) {
      const res = await api(`/api/v1/shells/${shellId}/files/content?path=${q(path)}`);
      expect(res.status, path).toBe(400);
      expect(await errorCode(res)).toBe("validation_failed");
    }
    expect(
      await errorCode(
        await api(`/api/v1/shells/${shellId}/files/content?path=${q("/nope/never")}`),
      ),
    ).toBe("file_not_found");
  });

  it("round-trips a directory as tar and refuses archives with traversal, absolute or escaping link entries", async () => {
    const good = await writeTar([
      {
        name: "pkg/readme.txt",
        type: "file",
        mode: 0o644,
        linkName: "",
        data: Buffer.from("hi\n"),
      },
    ]);
    const up = await api(`/api/v1/shells/${shellId}/files/archive?path=${q("/workspace/in")}`, {
      method: "PUT",
      headers: { "content-type": "application/x-tar" },
      body: good,
    });
    expect(await up.json()).toEqual({ path: "/workspace/in", entries: 1 });
    const down = await api(`/api/v1/shells/${shellId}/files/archive?path=${q("/workspace/in")}`);
    expect(down.headers.get("content-type")).toBe("application/x-tar");
    expect(Buffer.from(await down.arrayBuffer()).includes(Buffer.from("pkg/readme.txt"))).toBe(
      true,
    );

    const evil = [
      { name: "../escape.txt", type: "file" as const, linkName: "" },
      { name: "/etc/cron.d/evil", type: "file" as const, linkName: "" },
      { name: "link", type: "symlink" as const, linkName: "/etc/shadow" },
      { name: "sub/link", type: "symlink" as const, linkName: "../../outside" },
    ];
    for (const entry of evil) {
      const archive = await writeTar([
        { ...entry, mode: 0o644, data: Buffer.from(entry.type === "file" ? "x" : "") },
      ]);
      const res = await api(
        `/api/v1/shells/${shellId}/files/archive?path=${q("/workspace/evil")}`,
        { method: "PUT", headers: { "content-type": "application/x-tar" }, body: archive },
      );
      expect(res.status, entry.name).toBe(400);
      expect(await errorCode(res)).toBe("unsafe_archive");
    }
    expect(
      await errorCode(
        await api(`/api/v1/shells/${shellId}/files/stat?path=${q("/workspace/evil")}`),
      ),
    ).toBe("file_not_found");
    const garbage = await api(`/api/v1/shells/${shellId}/files/archive?path=${q("/workspace/x")}`, {
      method: "PUT",
      headers: { "content-type": "application/x-tar" },
      body: Buffer.alloc(1024, 7),
    });
    expect(await errorCode(garbage)).toBe("unsafe_archive");
  });

  it("refuses a JSON body on an upload route and a raw body on a JSON route", async () => {
    const wrong = await api(`/api/v1/shells/${shellId}/files/content?path=x`, {
      method: "PUT",
      body: JSON.stringify({ a: 1 }),
    });
    expect(wrong.status).toBe(415);
    const raw = await api(`/api/v1/shells/${shellId}/exec`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream" },
      body: Buffer.from("x"),
    });
    expect(raw.status).toBe(415);
  });
});

interface Terminal {
  socket: WebSocket;
  output: () => string;
  closed: Promise<{ code: number; reason: string }>;
}

function attach(credential: { url: string; token: string }): Promise<Terminal> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(credential.url, [
      "shells.term.v1",
      `shells.token.${credential.token}`,
    ]);
    let output = "";
    const closed = new Promise<{ code: number; reason: string }>((done) =>
      socket.on("close", (code, reason) => done({ code, reason: reason.toString() })),
    );
    socket.on("message", (data, isBinary) => {
      output += isBinary
        ? Buffer.from(data as Buffer).toString("utf8")
        : `\n[control ${Buffer.from(data as Buffer).toString("utf8")}]\n`;
    });
    socket.on("open", () => resolve({ socket, output: () => output, closed }));
    socket.on("error", reject);
  });
}

async function mint(): Promise<{ id: string; token: string; url: string; expiresAt: string }> {
  const res = await api(`/api/v1/shells/${shellId}/term`, { method: "POST" });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; token: string; url: string; expiresAt: string };
}

describe("terminal credentials and the PTY WebSocket", () => {
  it("attaches once within the TTL: tty, resize and stty size, Ctrl-C, exit status", async () => {
    const credential = await mint();
    expect(credential.token).toMatch(/^sht_/);
    expect(Date.parse(credential.expiresAt) - Date.now()).toBeGreaterThan(4 * 60 * 1000);
    expect(credential.url.startsWith("ws://127.0.0.1:")).toBe(true);
    const term = await attach(credential);
    term.socket.send(Buffer.from("tty\r"), { binary: true });
    await expect.poll(() => term.output(), { timeout: 5000 }).toMatch(/\/dev\/pts\/\d+/);
    term.socket.send(JSON.stringify({ type: "resize", cols: 120, rows: 40 }));
    term.socket.send(Buffer.from("stty size\r"), { binary: true });
    await expect.poll(() => term.output(), { timeout: 5000 }).toMatch(/40 120/);
    term.socket.send(Buffer.from([3]), { binary: true });
    await expect.poll(() => term.output(), { timeout: 5000 }).toMatch(/\^C/);
    term.socket.send(Buffer.from("exit\r"), { binary: true });
    await expect.poll(() => term.output(), { timeout: 5000 }).toMatch(/"type":"exit","exitCode":0/);
    expect((await term.closed).code).toBe(1000);

    const again = await attach(credential);
    expect((await again.closed).code).toBe(4401);

    // The history counts what crossed the terminal (typed bytes, not resize messages), never its content.
    const ends = async () =>
      (
        (await (await api(`/api/v1/activity?shell=${shellId}&action=shell.term.end`)).json()) as {
          items: { details: Record<string, unknown> }[];
        }
      ).items;
    await expect.poll(async () => (await ends()).length, { timeout: 5000 }).toBe(1);
    const [ended] = await ends();
    expect(ended?.details).toMatchObject({ exitCode: 0, inputBytes: 20 });
    expect(ended?.details["outputBytes"]).toBeGreaterThan(10);
    expect(JSON.stringify(ended)).not.toContain("stty");
  });

  it("refuses an expired credential and ends a live terminal when its credential expires", async () => {
    const stale = await mint();
    const db = new Database(join(server.dataDir, "shells.db"));
    db.prepare("UPDATE term_credentials SET expires_at = ? WHERE id = ?").run(
      new Date(Date.now() - 1000).toISOString(),
      stale.id,
    );
    const refused = await attach(stale);
    expect((await refused.closed).code).toBe(4401);

    const short = await mint();
    db.prepare("UPDATE term_credentials SET expires_at = ? WHERE id = ?").run(
      new Date(Date.now() + 1500).toISOString(),
      short.id,
    );
    db.close();
    const term = await attach(short);
    const { code } = await term.closed;
    expect(code).toBe(4001);
    expect(term.output()).toMatch(/expired/);
  });

  it("never shows the token outside the mint response: not in activity, logs or other responses", async () => {
    const credential = await mint();
    const term = await attach(credential);
    term.socket.close();
    await term.closed;
    const activity = await (await api("/api/v1/activity?limit=500")).text();
    expect(activity).toContain(credential.id);
    expect(activity).not.toContain(credential.token);
    const logs = await (
      await api(`/api/v1/shells/${shellId}/actions/logs`, { method: "POST", body: "{}" })
    ).text();
    expect(logs).not.toContain(credential.token);
    expect(await (await api(`/api/v1/shells/${shellId}`)).text()).not.toContain(credential.token);
    const mints = JSON.parse(activity).items.filter(
      (e: { action: string }) => e.action === "shell.term.mint",
    );
    expect(mints.length).toBeGreaterThanOrEqual(1);
  });
});
