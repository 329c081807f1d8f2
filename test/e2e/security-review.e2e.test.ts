import { openSqliteStore } from "@shells/server";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import {
  addPrincipal,
  createTestApp,
  type TestApp,
} from "../../apps/server/src/test-support/test-app.js";
import { startTestServer, type TestServer } from "./harness.js";

// Other instances of the classes the adversarial pass found, attacked through the real API: a
// credential that outlives its holder's standing, and one principal acting through another's.
const backend = process.env["SHELLS_TEST_BACKEND"] === "container" ? "container" : "simulator";

const ALL = [
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
  "shells:agent:invoke",
];
const INVOKE = "shells.agent.invoke";

let t: TestApp | undefined;
let server: TestServer | undefined;
afterEach(async () => {
  await t?.close();
  await server?.close();
  t = undefined;
  server = undefined;
});

const as = (token: string) => ({ authorization: `Bearer ${token}` });

/** Revokes every grant of the agent entitlement to `agentId`, as the org's owner. */
async function revokeEntitlement(
  call: (method: string, path: string) => Promise<{ status: number; json: () => unknown }>,
  agentId: string,
): Promise<void> {
  const grants = (await call("GET", "/api/v1/entitlements")).json() as {
    items: { id: string; principal: { id: string } }[];
  };
  const mine = grants.items.filter((g) => g.principal.id === agentId);
  expect(mine.length).toBeGreaterThan(0);
  for (const grant of mine)
    expect((await call("DELETE", `/api/v1/entitlements/${grant.id}`)).status).toBe(200);
}

describe("a granted approval runs only for a requester who may still act", () => {
  it("does not run an agent's destructive request once the agent lost its entitlement", async () => {
    const app = (t = await createTestApp());
    const me = (await app.call("GET", "/api/v1/me")).json();
    await app.call("PATCH", "/api/v1/org/policy", {
      approvalGates: { wipe_state: "approvers" },
      approvers: [me.actor.id],
    });
    const agent = await addPrincipal(app.store, {
      orgId: me.orgId,
      role: "developer",
      scopes: ALL,
      type: "agent",
      entitlements: [INVOKE],
    });
    const shell = (await app.call("POST", "/api/v1/shells", { language: "bash" })).json();
    const requested = await app.call(
      "POST",
      `/api/v1/shells/${shell.id}/actions/wipe_state`,
      {},
      as(agent.token),
    );
    expect(requested.statusCode).toBe(202);

    await revokeEntitlement(async (method, path) => {
      const res = await app.call(method, path);
      return { status: res.statusCode, json: () => res.json() };
    }, agent.id);
    const granted = await app.call(
      "POST",
      `/api/v1/approvals/${requested.json().approval.id}/grant`,
      { reason: "looks fine" },
    );
    expect(granted.statusCode).toBe(200);
    expect(granted.json().outcome).toMatch(/^entitlement_required/);
    const history = (await app.call("GET", "/api/v1/activity?order=asc&limit=500")).json()
      .items as { action: string; actor: { id: string }; outcome: string }[];
    expect(
      history.filter((e) => e.action === "shell.action.wipe_state" && e.outcome === "success"),
    ).toEqual([]);
  });
});

describe("idempotency keys belong to the principal that sent them", () => {
  it("another member presenting the same key and body gets their own action, not the first caller's response", async () => {
    const app = (t = await createTestApp());
    const me = (await app.call("GET", "/api/v1/me")).json();
    const dev = await addPrincipal(app.store, { orgId: me.orgId, role: "developer", scopes: ALL });
    const key = { "idempotency-key": "create-review-shell" };
    const body = { language: "bash", name: "review" };
    const first = await app.call("POST", "/api/v1/shells", body, { ...as(dev.token), ...key });
    expect(first.statusCode).toBe(201);
    const other = await app.call("POST", "/api/v1/shells", body, key);
    // The owner's own request ran (and collides on the name), instead of replaying the member's.
    expect(other.headers["idempotent-replayed"]).toBeUndefined();
    expect(other.json().id).not.toBe(first.json().id);
    const again = await app.call("POST", "/api/v1/shells", body, { ...as(dev.token), ...key });
    expect(again.headers["idempotent-replayed"]).toBe("true");
    expect(again.json().id).toBe(first.json().id);
  });
});

interface Terminal {
  output: () => string;
  closed: Promise<number>;
}

function attach(credential: { url: string; token: string }): Promise<Terminal> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(credential.url, [
      "shells.term.v1",
      `shells.token.${credential.token}`,
    ]);
    let output = "";
    const closed = new Promise<number>((done) => socket.on("close", (code) => done(code)));
    socket.on("message", (data) => (output += Buffer.from(data as Buffer).toString("utf8")));
    socket.on("open", () => resolve({ output: () => output, closed }));
    socket.on("error", reject);
  });
}

const closedWithin = (term: Terminal, ms: number) =>
  Promise.race([term.closed, new Promise<string>((done) => setTimeout(() => done("open"), ms))]);

describe("a terminal lives only while its minter may open one", () => {
  it("ends an agent's terminals when its entitlement is revoked, and a member's when demoted to viewer", async () => {
    const live = (server = await startTestServer({ backend }));
    const call = async (method: string, path: string, token = live.token, body?: unknown) => {
      const res = await fetch(`${live.url}${path}`, {
        method,
        headers: {
          ...as(token),
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const text = await res.text();
      return { status: res.status, json: () => JSON.parse(text) as unknown };
    };
    const me = (await call("GET", "/api/v1/me")).json() as { orgId: string };
    const store = await openSqliteStore(join(live.dataDir, "shells.db"));
    const agent = await addPrincipal(store, {
      orgId: me.orgId,
      role: "developer",
      scopes: ALL,
      type: "agent",
      entitlements: [INVOKE],
    });
    const dev = await addPrincipal(store, { orgId: me.orgId, role: "developer", scopes: ALL });
    await store.close();
    const shell = (
      await call("POST", "/api/v1/shells", live.token, { language: "bash" })
    ).json() as {
      id: string;
    };
    type Credential = { url: string; token: string };
    const mint = async (token: string) => {
      const res = await call("POST", `/api/v1/shells/${shell.id}/term`, token);
      expect(res.status).toBe(201);
      return res.json() as Credential;
    };

    const agentTerm = await attach(await mint(agent.token));
    const agentUnused = await mint(agent.token);
    await revokeEntitlement((method, path) => call(method, path), agent.id);
    expect(await closedWithin(agentTerm, 3000)).toBe(4003);
    const refused = await attach(agentUnused);
    expect(await closedWithin(refused, 3000)).toBe(4401);
    expect(refused.output()).toMatch(/entitlement/);

    const devTerm = await attach(await mint(dev.token));
    const devUnused = await mint(dev.token);
    expect(
      (await call("PATCH", `/api/v1/members/${dev.id}`, live.token, { role: "viewer" })).status,
    ).toBe(200);
    expect(await closedWithin(devTerm, 3000)).toBe(4003);
    expect(await closedWithin(await attach(devUnused), 3000)).toBe(4401);
  });
});

describe("a stream lives only while its caller may open one", () => {
  it("ends a streamed exec and a run stream within seconds of the key's revocation", async () => {
    const live = (server = await startTestServer({ backend }));
    const me = (await (
      await fetch(`${live.url}/api/v1/me`, { headers: as(live.token) })
    ).json()) as {
      orgId: string;
    };
    const store = await openSqliteStore(join(live.dataDir, "shells.db"));
    const dev = await addPrincipal(store, { orgId: me.orgId, role: "developer", scopes: ALL });
    await store.close();
    const post = (path: string, body: unknown, token = dev.token, accept = "application/json") =>
      fetch(`${live.url}${path}`, {
        method: "POST",
        headers: { ...as(token), "content-type": "application/json", accept },
        body: JSON.stringify(body),
      });
    const shell = (await (await post("/api/v1/shells", { language: "bash" })).json()) as {
      id: string;
    };
    const run = (await (
      await post("/api/v1/runs", { language: "bash", command: ["sh", "-c", "sleep 30"] })
    ).json()) as { id: string };

    const execStream = await post(
      `/api/v1/shells/${shell.id}/exec`,
      { command: ["sh", "-c", "echo started; sleep 30; echo finished"] },
      dev.token,
      "text/event-stream",
    );
    const runStream = await fetch(`${live.url}/api/v1/runs/${run.id}/stream`, {
      headers: { ...as(dev.token), accept: "text/event-stream" },
    });
    expect([execStream.status, runStream.status]).toEqual([200, 200]);
    const started = Date.now();
    const revoked = await fetch(`${live.url}/api/v1/keys/${dev.keyId}`, {
      method: "DELETE",
      headers: as(live.token),
    });
    expect(revoked.status).toBe(200);
    const [execText, runText] = await Promise.all([execStream.text(), runStream.text()]);
    // Both streams closed long before their commands' 30 s, each with a final error frame.
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(execText).toMatch(/event: error[\s\S]*revoked/);
    expect(execText).not.toContain("finished");
    expect(runText).toMatch(/event: error[\s\S]*revoked/);
  }, 60_000);
});
