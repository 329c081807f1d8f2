import ShellsClient from "@l1fe/shells";
import { createLogger, openSqliteStore } from "@shells/server";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { addPrincipal } from "../../apps/server/src/test-support/test-app.js";
import { startTestServer, type TestServer } from "./harness.js";

// Terminal credentials attacked as an offboarded holder, a log reader and a flooding client would,
// through the real API and a real shell (container sandboxes with SHELLS_TEST_BACKEND=container).
const backend = process.env["SHELLS_TEST_BACKEND"] === "container" ? "container" : "simulator";
const NEEDS_CONTAINER =
  "needs a real pty that stops taking input (the simulator accepts everything): set SHELLS_TEST_BACKEND=container";

const CONTROL_SCOPES = [
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
] as const;

let server: TestServer;
let owner: ShellsClient;
let orgId: string;
let shellId: string;
/** Every line the server logged, at debug level. */
const logLines: string[] = [];

beforeAll(async () => {
  const logger = createLogger("debug", { write: (line: string) => void logLines.push(line) });
  server = await startTestServer({ backend, logger });
  owner = new ShellsClient({ baseUrl: server.url, token: server.token });
  orgId = (await owner.whoami()).orgId;
  shellId = (await owner.create({ language: "bash" })).id;
});
afterAll(async () => {
  await server?.close();
});

interface Credential {
  id: string;
  token: string;
  url: string;
  expiresAt: string;
}

interface Terminal {
  socket: WebSocket;
  output: () => string;
  closed: Promise<{ code: number; reason: string; at: number }>;
}

/** Mints a terminal credential on the test shell with `token` (an API key). */
async function mint(token: string): Promise<Credential> {
  const res = await fetch(`${server.url}/api/v1/shells/${shellId}/term`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
  });
  expect(res.status).toBe(201);
  return (await res.json()) as Credential;
}

/** Opens a terminal WebSocket offering `protocols`; resolves once it is open. */
function open(url: string, protocols: string[]): Promise<Terminal> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, protocols);
    let output = "";
    const closed = new Promise<{ code: number; reason: string; at: number }>((done) =>
      socket.on("close", (code, reason) =>
        done({ code, reason: reason.toString(), at: Date.now() }),
      ),
    );
    socket.on("message", (data, isBinary) => {
      const text = Buffer.from(data as Buffer).toString("utf8");
      output += isBinary ? text : `\n[control ${text}]\n`;
    });
    socket.on("open", () => resolve({ socket, output: () => output, closed }));
    socket.on("error", reject);
  });
}

/** Attaches the way clients do: the token as a subprotocol next to `shells.term.v1`. */
const attach = (credential: Credential) =>
  open(credential.url, ["shells.term.v1", `shells.token.${credential.token}`]);

/** Attaches and waits until the login shell answers a command. */
async function attachLive(credential: Credential): Promise<Terminal> {
  const term = await attach(credential);
  term.socket.send(Buffer.from("tty\r"), { binary: true });
  await expect.poll(() => term.output(), { timeout: 15_000 }).toMatch(/\/dev\/pts\/\d+/);
  return term;
}

/** How `term` closed, failing when it is still open after `ms`. */
function closedWithin(term: Terminal, ms: number): Promise<{ code: number; at: number }> {
  return Promise.race([
    term.closed,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`the terminal is still open after ${ms} ms`)), ms),
    ),
  ]);
}

async function activity(): Promise<string> {
  const res = await fetch(`${server.url}/api/v1/activity?limit=500`, {
    headers: { authorization: `Bearer ${server.token}` },
  });
  return res.text();
}

describe("terminal credentials end with their holder", () => {
  it("revoking the minting key closes the live terminal within 2 s and refuses its unused credentials", async () => {
    const { key, token } = await owner.keys.create({
      name: "term-revoke",
      scopes: [...CONTROL_SCOPES],
    });
    const live = await mint(token);
    const unused = await mint(token);
    const term = await attachLive(live);

    const revokedAt = Date.now();
    await owner.keys.revoke(key.id);
    const closed = await closedWithin(term, 5000);
    expect(closed.code).toBe(4003);
    expect(closed.at - revokedAt).toBeLessThan(2000);
    expect(term.output()).toMatch(/"type":"revoked".*API key behind it was revoked/);

    const refused = await attach(unused);
    expect((await refused.closed).code).toBe(4401);
    expect(refused.output()).toMatch(/API key behind it was revoked/);

    const history = await activity();
    expect(history).toMatch(
      new RegExp(
        `"action":"shell\\.term\\.end".*?"credentialId":"${live.id}".*?"endedBy":"revoked"`,
      ),
    );
  });

  it("removing the member closes their live terminal within 2 s and refuses their unused credentials", async () => {
    const store = await openSqliteStore(join(server.dataDir, "shells.db"));
    const member = await addPrincipal(store, {
      orgId,
      role: "developer",
      scopes: [...CONTROL_SCOPES],
    }).finally(() => store.close());
    const live = await mint(member.token);
    const unused = await mint(member.token);
    const term = await attachLive(live);

    const removedAt = Date.now();
    await owner.members.remove(member.id);
    const closed = await closedWithin(term, 5000);
    expect(closed.code).toBe(4003);
    expect(closed.at - removedAt).toBeLessThan(2000);

    const refused = await attach(unused);
    expect((await refused.closed).code).toBe(4401);
  });

  it("disabling the member ends their terminal even though their key is not revoked", async () => {
    const store = await openSqliteStore(join(server.dataDir, "shells.db"));
    const member = await addPrincipal(store, {
      orgId,
      role: "developer",
      scopes: [...CONTROL_SCOPES],
    }).finally(() => store.close());
    const live = await mint(member.token);
    const unused = await mint(member.token);
    const term = await attachLive(live);

    const disabledAt = Date.now();
    await owner.members.update(member.id, { disabled: true });
    const closed = await closedWithin(term, 5000);
    expect(closed.code).toBe(4003);
    expect(closed.at - disabledAt).toBeLessThan(2000);
    expect(term.output()).toMatch(/its user was removed or disabled/);

    const refused = await attach(unused);
    expect((await refused.closed).code).toBe(4401);
    expect(refused.output()).toMatch(/its user was removed or disabled/);
  });
});

describe("terminal tokens stay out of URLs, logs and history", () => {
  it("gives a URL without the token, attaches with the token as a subprotocol, and never selects or logs it", async () => {
    const credential = await mint(server.token);
    expect(credential.token).toMatch(/^sht_/);
    expect(credential.url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/api\/v1\/term\/attach$/);
    expect(credential.url).not.toContain(credential.token);

    const term = await attachLive(credential);
    // The server selects the terminal protocol only: the token is never echoed back.
    expect(term.socket.protocol).toBe("shells.term.v1");
    term.socket.send(Buffer.from("exit\r"), { binary: true });
    expect((await term.closed).code).toBe(1000);

    const logs = logLines.join("");
    expect(logs).toMatch(/term\/attach/);
    expect(logs).not.toContain(credential.token);
    expect(logs).not.toContain(credential.token.slice(-43));
    const history = await activity();
    expect(history).toContain(credential.id);
    expect(history).not.toContain(credential.token.slice(-43));
  });

  it("refuses a token in the URL with a clear error and burns it", async () => {
    const credential = await mint(server.token);
    const inUrl = await open(`${credential.url}?token=${credential.token}`, []);
    expect((await inUrl.closed).code).toBe(4401);
    expect(inUrl.output()).toMatch(/sent in the URL.*shells\.token\.<token>/);
    // Whoever read it from a log cannot use it the right way either.
    const reused = await attach(credential);
    expect((await reused.closed).code).toBe(4401);
    expect(reused.output()).toMatch(/already used/);
    expect(logLines.join("")).not.toContain(credential.token.slice(-43));
  });

  it("refuses an attach that offers no token", async () => {
    const credential = await mint(server.token);
    const bare = await open(credential.url, ["shells.term.v1"]);
    expect((await bare.closed).code).toBe(4401);
    expect(bare.output()).toMatch(/offer the WebSocket subprotocols shells\.term\.v1/);
  });
});

describe("terminal input is bounded", () => {
  it.skipIf(backend !== "container")(
    `a process that never reads its terminal cannot grow the control plane with input (${NEEDS_CONTAINER})`,
    async () => {
      const term = await attachLive(await mint(server.token));
      // Raw mode and a sleeper: the terminal's input queue fills and the pty stops taking input.
      term.socket.send(Buffer.from("stty raw -echo; sleep 300\r"), { binary: true });
      await expect.poll(() => term.output(), { timeout: 10_000 }).toMatch(/sleep 300/);
      await new Promise((resolve) => setTimeout(resolve, 500));

      const frame = Buffer.alloc(1024 * 1024, 0x61);
      const baseline = process.memoryUsage().rss;
      let peak = baseline;
      let sent = 0;
      let stalledSince = 0;
      // Up to 200 MB in 1 MB frames, as fast as the socket takes them; a sender that has been
      // held back for 3 s has met the server's backpressure.
      while (sent < 200 * frame.length) {
        peak = Math.max(peak, process.memoryUsage().rss);
        if (term.socket.bufferedAmount > 2 * frame.length) {
          stalledSince ||= Date.now();
          if (Date.now() - stalledSince > 3000) break;
          await new Promise((resolve) => setTimeout(resolve, 20));
          continue;
        }
        stalledSince = 0;
        term.socket.send(frame);
        sent += frame.length;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
      peak = Math.max(peak, process.memoryUsage().rss);
      expect(peak - baseline, `grew with ${sent} bytes sent`).toBeLessThan(64 * 1024 * 1024);

      // The control plane still answers promptly.
      const started = Date.now();
      const res = await fetch(`${server.url}/api/v1/shells/${shellId}`, {
        headers: { authorization: `Bearer ${server.token}` },
      });
      expect(res.status).toBe(200);
      expect(Date.now() - started).toBeLessThan(2000);
      term.socket.terminate();
    },
    60_000,
  );
});
