import { ROUTES, verifyActivityChain, type ActivityEvent, type Shell } from "@shells/contract";
import { SimulatorBackend } from "@shells/sandbox";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { addPrincipal, createTestApp, type TestApp } from "./test-support/test-app.js";
import { describeEachStore } from "./test-support/test-stores.js";
import { mintApiKey } from "./iam/tokens.js";
import { statSync } from "node:fs";

let t: TestApp;
afterEach(async () => {
  await t?.close();
});

async function createShell(body: Record<string, unknown> = { language: "bash" }): Promise<Shell> {
  const res = await t.call("POST", "/api/v1/shells", body);
  expect(res.statusCode, res.body).toBe(201);
  return res.json();
}

async function allActivity(app: TestApp): Promise<ActivityEvent[]> {
  const events: ActivityEvent[] = [];
  let cursor: string | null = null;
  do {
    const res = await app.call(
      "GET",
      `/api/v1/activity?order=asc&limit=100${cursor ? `&cursor=${cursor}` : ""}`,
    );
    const page = res.json<{ items: ActivityEvent[]; nextCursor: string | null }>();
    events.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return events;
}

describeEachStore((store) => {
  describe("public routes", () => {
    it("serve health, readiness with runtime classes, the OpenAPI document and the docs page without a key", async () => {
      t = await createTestApp({ openStore: store.open });
      const health = await t.app.inject("/healthz");
      expect(health.json()).toEqual({ status: "ok" });
      const ready = await t.app.inject("/readyz");
      expect(ready.statusCode).toBe(200);
      expect(ready.json().runtimes.map((r: { runtime: string }) => r.runtime)).toEqual([
        "wasm",
        "container",
        "microvm",
      ]);
      const openapi = (await t.app.inject("/openapi.json")).json();
      expect(openapi.openapi).toBe("3.1.0");
      expect(Object.keys(openapi.paths)).toContain("/api/v1/shells/{id}/actions/{capability}");
      const docs = await t.app.inject("/docs");
      expect(docs.headers["content-type"]).toMatch(/text\/html/);
      expect(docs.body).toContain("/api/v1/shells/{id}/exec");
    });

    it("answers unknown API paths, missing files and non-page requests with a JSON 404, never the console's page", async () => {
      t = await createTestApp({ openStore: store.open });
      const cases: [string, string, Record<string, string>][] = [
        ["GET", "/api/v1/nope", { accept: "text/html" }],
        ["GET", "/api/nope.json", {}],
        ["GET", "/nope.json", { accept: "text/html" }],
        ["GET", "/metrics/x", { accept: "text/html" }],
        ["POST", "/nope", {}],
        ["GET", "/v1/shells", { accept: "application/json" }],
        ["GET", "/v1/shells", {}],
      ];
      for (const [method, url, headers] of cases) {
        const res = await t.app.inject({ method: method as "GET", url, headers });
        expect(res.statusCode, `${method} ${url}`).toBe(404);
        expect(res.headers["content-type"], `${method} ${url}`).toMatch(/^application\/json/);
        expect(res.json().error.code, `${method} ${url}`).toBe("route_not_found");
      }
      // A browser navigating to one of the console's own pages still gets the console.
      const page = await t.app.inject({
        method: "GET",
        url: "/shells/sh-123",
        headers: { accept: "text/html,application/xhtml+xml,*/*;q=0.8" },
      });
      expect(page.statusCode).toBe(200);
      expect(page.headers["content-type"]).toMatch(/^text\/html/);
    });

    it("bootstrap writes the owner key with mode 0600", async () => {
      t = await createTestApp({ openStore: store.open });
      expect(statSync(join(t.dataDir, "admin-token")).mode & 0o777).toBe(0o600);
      expect(t.token).toMatch(/^shk_[0-9a-z]{12}_[A-Za-z0-9_-]{43}$/);
    });
  });

  describe("authentication", () => {
    it("refuses every scoped route without a key, with a wrong key, and with a well-formed unknown key", async () => {
      const scoped = Object.values(ROUTES).filter((r) => r.scope !== null);
      // Four refusals per route, all from one source: keep them under the auth-failure rate limit,
      // which this test is not about.
      t = await createTestApp({
        openStore: store.open,
        env: { SHELLS_AUTH_FAILURE_LIMIT: String(scoped.length * 4 + 10) },
      });
      for (const route of scoped) {
        const url = route.path.replace(":id", "sh-nope").replace(":capability", "logs");
        for (const authorization of [
          undefined,
          "Bearer nonsense",
          `Bearer ${mintApiKey().token}`,
          `Basic ${t.token}`,
        ]) {
          const res = await t.app.inject({
            method: route.method,
            url,
            headers: authorization ? { authorization } : {},
          });
          expect(res.statusCode, `${route.method} ${url} with ${authorization}`).toBe(401);
          expect(res.json().error.code).toBe("unauthenticated");
          expect(res.headers["www-authenticate"]).toBe('Bearer realm="shells"');
        }
      }
    });

    it("records a failed attempt with a known key id but a wrong secret in that key's org", async () => {
      t = await createTestApp({ openStore: store.open });
      const forged = t.token.slice(0, 17) + "A".repeat(43);
      const res = await t.app.inject({
        method: "GET",
        url: "/api/v1/shells",
        headers: { authorization: `Bearer ${forged}` },
      });
      expect(res.statusCode).toBe(401);
      const events = await allActivity(t);
      const failure = events.find((e) => e.action === "auth.failed");
      expect(failure).toMatchObject({
        outcome: "denied",
        details: { reason: "wrong secret for this API key" },
      });
      expect(JSON.stringify(events)).not.toContain(forged);
    });
  });

  describe("shells API", () => {
    it("creates, lists, gets, execs, runs every capability and deletes, recording each step", async () => {
      t = await createTestApp({ openStore: store.open });
      const shell = await createShell({
        language: "python",
        name: "demo",
        env: { API_TOKEN: "s3cret-value" },
      });
      expect(shell).toMatchObject({
        name: "demo",
        status: "running",
        runtime: "container",
        network: "sealed",
        envKeys: ["API_TOKEN"],
      });
      expect(JSON.stringify(shell)).not.toContain("s3cret-value");

      expect((await t.call("GET", "/api/v1/shells")).json().items.map((s: Shell) => s.id)).toEqual([
        shell.id,
      ]);
      expect((await t.call("GET", `/api/v1/shells/demo`)).json().id).toBe(shell.id);

      const exec = await t.call("POST", `/api/v1/shells/${shell.id}/exec`, {
        command: ["sh", "-c", "echo out; echo err >&2; exit 7"],
      });
      expect(exec.statusCode).toBe(200);
      expect(exec.json()).toMatchObject({ exitCode: 7, stdout: "out\n", stderr: "err\n" });

      const act = (capability: string, body?: unknown) =>
        t.call("POST", `/api/v1/shells/${shell.id}/actions/${capability}`, body);
      expect((await act("snapshot", { name: "first" })).json().snapshot.name).toBe("first");
      expect((await act("restart")).json().shell.status).toBe("running");
      expect((await act("restore")).json().snapshot.name).toBe("first");
      expect((await act("reinstall_os")).json().shell.imageVersion).toBe("simulated-1");
      expect((await act("wipe_state")).json().message).toBe(
        "filesystem state destroyed, sandbox intact",
      );
      expect((await act("stop")).json().shell.status).toBe("stopped");
      expect((await act("start")).json().shell.status).toBe("running");
      const logs = (await act("logs", { tail: 50 })).json();
      expect(logs.logs.map((l: { message: string }) => l.message).join("\n")).toMatch(/exit 7/);
      expect(
        (await t.call("GET", `/api/v1/shells/${shell.id}/snapshots`)).json().items,
      ).toHaveLength(1);

      const deleted = await t.call("DELETE", `/api/v1/shells/${shell.id}`);
      expect(deleted.json().status).toBe("deleted");
      expect((await t.call("GET", "/api/v1/shells")).json().items).toEqual([]);
      expect((await t.call("GET", "/api/v1/shells?status=deleted")).json().items).toHaveLength(1);

      const actions = (await allActivity(t))
        .filter((e) => e.target?.id === shell.id)
        .map((e) => e.action);
      expect(actions).toEqual([
        "shell.create",
        "shell.exec",
        "shell.action.snapshot",
        "shell.action.restart",
        "shell.action.restore",
        "shell.action.reinstall_os",
        "shell.action.wipe_state",
        "shell.action.stop",
        "shell.action.start",
        "shell.action.logs",
        "shell.delete",
      ]);
      const events = await allActivity(t);
      expect(await verifyActivityChain(events)).toMatchObject({ ok: true, checked: events.length });
      expect(JSON.stringify(events)).not.toContain("s3cret-value");
    });

    it("answers 409 invalid_state for a capability not legal in the current state", async () => {
      t = await createTestApp({ openStore: store.open });
      const shell = await createShell();
      const start = await t.call("POST", `/api/v1/shells/${shell.id}/actions/start`);
      expect(start.statusCode).toBe(409);
      expect(start.json().error).toMatchObject({
        code: "invalid_state",
        details: { status: "running", legalIn: ["stopped"] },
      });
      await t.call("POST", `/api/v1/shells/${shell.id}/actions/stop`);
      const exec = await t.call("POST", `/api/v1/shells/${shell.id}/exec`, { command: ["true"] });
      expect(exec.statusCode).toBe(409);
      expect(exec.json().error.code).toBe("invalid_state");
      await t.call("DELETE", `/api/v1/shells/${shell.id}`);
      const afterDelete = await t.call("POST", `/api/v1/shells/${shell.id}/actions/restart`);
      expect(afterDelete.statusCode).toBe(409);
    });

    it("paginates and filters the list", async () => {
      t = await createTestApp({ openStore: store.open });
      for (let i = 0; i < 5; i += 1)
        await createShell({
          language: i % 2 ? "node" : "go",
          runtime: i < 2 ? "wasm" : "container",
        });
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { items: Shell[]; nextCursor: string | null } = (
          await t.call("GET", `/api/v1/shells?limit=2${cursor ? `&cursor=${cursor}` : ""}`)
        ).json();
        expect(page.items.length).toBeLessThanOrEqual(2);
        seen.push(...page.items.map((s: Shell) => s.id));
        cursor = page.nextCursor;
      } while (cursor);
      expect(new Set(seen).size).toBe(5);
      expect((await t.call("GET", "/api/v1/shells?language=node")).json().items).toHaveLength(2);
      expect(
        (await t.call("GET", "/api/v1/shells?runtime=wasm&language=go")).json().items,
      ).toHaveLength(1);
      const bad = await t.call("GET", "/api/v1/shells?cursor=not-a-cursor");
      expect(bad.statusCode).toBe(400);
      expect(bad.json().error.code).toBe("invalid_cursor");
    });

    it("replays an Idempotency-Key instead of creating a second shell, and refuses its reuse for another body", async () => {
      t = await createTestApp({ openStore: store.open });
      const headers = { "idempotency-key": "create-once" };
      const first = await t.call("POST", "/api/v1/shells", { language: "bash" }, headers);
      const second = await t.call("POST", "/api/v1/shells", { language: "bash" }, headers);
      expect(first.statusCode).toBe(201);
      expect(second.statusCode).toBe(201);
      expect(second.headers["idempotent-replayed"]).toBe("true");
      expect(second.json().id).toBe(first.json().id);
      expect((await t.call("GET", "/api/v1/shells")).json().items).toHaveLength(1);
      const reused = await t.call("POST", "/api/v1/shells", { language: "go" }, headers);
      expect(reused.statusCode).toBe(422);
      expect(reused.json().error.code).toBe("idempotency_key_reused");
    });

    it("refuses a runtime class no backend on this host can run, naming what is missing", async () => {
      t = await createTestApp({
        openStore: store.open,
        backends: [new SimulatorBackend({ runtimes: ["container"] })],
      });
      const res = await t.call("POST", "/api/v1/shells", { language: "rust", runtime: "microvm" });
      expect(res.statusCode).toBe(422);
      expect(res.json().error).toMatchObject({
        code: "runtime_unavailable",
        details: { runtime: "microvm", missing: "no microvm backend is installed on this server" },
      });
      expect((await t.call("GET", "/api/v1/shells")).json().items).toEqual([]);
    });

    it("refuses the internet network mode until the egress proxy exists", async () => {
      t = await createTestApp({ openStore: store.open });
      const res = await t.call("POST", "/api/v1/shells", { language: "bash", network: "internet" });
      expect(res.statusCode).toBe(422);
      expect(res.json().error.code).toBe("network_mode_unavailable");
    });

    it("refuses a duplicate live name and frees the name on delete", async () => {
      t = await createTestApp({ openStore: store.open });
      const shell = await createShell({ language: "bash", name: "twin" });
      const dup = await t.call("POST", "/api/v1/shells", { language: "bash", name: "twin" });
      expect(dup.statusCode).toBe(409);
      expect(dup.json().error.code).toBe("name_taken");
      await t.call("DELETE", `/api/v1/shells/${shell.id}`);
      expect(
        (await t.call("POST", "/api/v1/shells", { language: "bash", name: "twin" })).statusCode,
      ).toBe(201);
    });

    it("stops shells whose TTL has passed, recording the system as the actor", async () => {
      t = await createTestApp({ openStore: store.open, sweepIntervalMs: 50 });
      const shell = await createShell({ language: "bash", ttlSeconds: 10 });
      const keeper = await createShell({ language: "bash", ttlSeconds: 3600 });
      await t.store.db
        .updateTable("shells")
        .set({ expires_at: new Date(Date.now() - 1000).toISOString() })
        .where("id", "=", shell.id)
        .execute();
      await expect
        .poll(async () => (await t.call("GET", `/api/v1/shells/${shell.id}`)).json().status, {
          timeout: 5000,
        })
        .toBe("stopped");
      expect((await t.call("GET", `/api/v1/shells/${shell.id}`)).json().statusReason).toBe(
        "ttl expired",
      );
      expect((await t.call("GET", `/api/v1/shells/${keeper.id}`)).json().status).toBe("running");
      const stop = (await allActivity(t)).find(
        (e) => e.action === "shell.action.stop" && e.target?.id === shell.id,
      );
      expect(stop?.actor).toEqual({ type: "system", id: "control-plane" });
    });
  });

  describe("bad input", () => {
    it("answers malformed JSON, unknown fields, wrong types, oversize bodies and unknown ids with stable 4xx codes", async () => {
      t = await createTestApp({ openStore: store.open });
      const shell = await createShell();
      const cases: [string, string, unknown, Record<string, string>, number, string][] = [
        ["POST", "/api/v1/shells", '{"language":', {}, 400, "malformed_request"],
        ["POST", "/api/v1/shells", { language: "bash", extra: true }, {}, 400, "validation_failed"],
        ["POST", "/api/v1/shells", { language: 42 }, {}, 400, "validation_failed"],
        ["POST", "/api/v1/shells", { language: "cobol" }, {}, 400, "validation_failed"],
        ["POST", "/api/v1/shells", "[]", {}, 400, "validation_failed"],
        [
          "POST",
          "/api/v1/shells",
          "x",
          { "content-type": "text/plain" },
          415,
          "unsupported_media_type",
        ],
        [
          "POST",
          `/api/v1/shells/${shell.id}/exec`,
          { command: ["echo", "x".repeat(1024 * 1024 + 10)] },
          {},
          413,
          "payload_too_large",
        ],
        ["POST", `/api/v1/shells/${shell.id}/exec`, { command: [] }, {}, 400, "validation_failed"],
        [
          "POST",
          `/api/v1/shells/${shell.id}/exec`,
          { command: "echo hi" },
          {},
          400,
          "validation_failed",
        ],
        [
          "POST",
          `/api/v1/shells/${shell.id}/exec`,
          { command: ["true"], timeoutMs: -1 },
          {},
          400,
          "validation_failed",
        ],
        [
          "POST",
          `/api/v1/shells/${shell.id}/actions/explode`,
          undefined,
          {},
          400,
          "validation_failed",
        ],
        ["GET", "/api/v1/shells/sh-doesnotexist", undefined, {}, 404, "shell_not_found"],
        [
          "POST",
          "/api/v1/shells/sh-doesnotexist/exec",
          { command: ["true"] },
          {},
          404,
          "shell_not_found",
        ],
        ["DELETE", "/api/v1/shells/sh-doesnotexist", undefined, {}, 404, "shell_not_found"],
        ["GET", "/api/v1/shells?limit=0", undefined, {}, 400, "validation_failed"],
        ["GET", "/api/v1/shells?unknown=1", undefined, {}, 400, "validation_failed"],
        ["GET", "/api/v1/nothing-here", undefined, {}, 404, "route_not_found"],
        [
          "POST",
          `/api/v1/shells/${shell.id}/actions/restore`,
          { snapshot: "nope" },
          {},
          404,
          "snapshot_not_found",
        ],
        [
          "POST",
          "/api/v1/shells",
          { language: "bash" },
          { "idempotency-key": "" },
          400,
          "validation_failed",
        ],
      ];
      for (const [method, url, body, headers, status, code] of cases) {
        const res = await t.call(method, url, body, headers);
        expect(res.statusCode, `${method} ${url} ${String(body).slice(0, 40)}`).toBe(status);
        expect(res.json().error.code).toBe(code);
        expect(res.json().error.requestId).toMatch(/^req-/);
      }
    });
  });

  describe("tenancy", () => {
    it("makes another org's shell indistinguishable from a missing one", async () => {
      t = await createTestApp({ openStore: store.open });
      const shell = await createShell({ language: "bash", name: "private" });
      const other = await addPrincipal(t.store, {
        orgId: "org-other",
        role: "owner",
        scopes: ["shells:instances:read", "shells:instances:create", "shells:instances:control"],
      });
      const as = (method: string, url: string, body?: unknown) =>
        t.call(method, url, body, { authorization: `Bearer ${other.token}` });
      for (const [method, url, body] of [
        ["GET", `/api/v1/shells/${shell.id}`],
        ["GET", `/api/v1/shells/private`],
        ["POST", `/api/v1/shells/${shell.id}/exec`, { command: ["true"] }],
        ["POST", `/api/v1/shells/${shell.id}/actions/stop`],
        ["GET", `/api/v1/shells/${shell.id}/snapshots`],
        ["DELETE", `/api/v1/shells/${shell.id}`],
      ] as [string, string, unknown?][]) {
        const foreign = await as(method, url, body);
        const missing = await as(
          method,
          url.replace(shell.id, "sh-0000000000").replace("private", "nobody"),
          body,
        );
        expect(foreign.statusCode).toBe(404);
        expect(foreign.json().error.code).toBe(missing.json().error.code);
      }
      expect((await as("GET", "/api/v1/shells")).json().items).toEqual([]);
      expect((await as("GET", "/api/v1/activity")).json().items).toEqual([]);
      expect((await t.call("GET", `/api/v1/shells/${shell.id}`)).json().status).toBe("running");
    });

    it("refuses a key without the needed scope with 403 and records the refusal", async () => {
      t = await createTestApp({ openStore: store.open });
      const org = await t.store.db.selectFrom("orgs").select("id").executeTakeFirstOrThrow();
      const reader = await addPrincipal(t.store, {
        orgId: org.id,
        role: "developer",
        scopes: ["shells:instances:read"],
        id: "usr-reader",
      });
      const res = await t.call(
        "POST",
        "/api/v1/shells",
        { language: "bash" },
        { authorization: `Bearer ${reader.token}` },
      );
      expect(res.statusCode).toBe(403);
      expect(res.json().error).toMatchObject({
        code: "forbidden",
        details: { missingScope: "shells:instances:create" },
      });
      expect((await t.call("GET", "/api/v1/shells")).json().items).toEqual([]);
      expect(
        (await allActivity(t)).some(
          (e) => e.action === "auth.denied" && e.actor.id === "usr-reader",
        ),
      ).toBe(true);
    });
  });

  describe("durability", () => {
    it("keeps shells and activity across a restart; a shell whose simulated sandbox died is marked error and restart re-provisions it", async () => {
      t = await createTestApp({ openStore: store.open });
      const shell = await createShell({ language: "bash", name: "durable" });
      const dataDir = t.dataDir;
      await t.close({ remove: false });
      t = await createTestApp({ openStore: store.open, dataDir });
      const after = (await t.call("GET", "/api/v1/shells/durable")).json();
      expect(after).toMatchObject({ id: shell.id, status: "error" });
      expect(after.statusReason).toMatch(/host_restart/);
      const restarted = await t.call("POST", `/api/v1/shells/${shell.id}/actions/restart`);
      expect(restarted.json().shell.status).toBe("running");
      expect(
        (
          await t.call("POST", `/api/v1/shells/${shell.id}/exec`, { command: ["echo", "back"] })
        ).json().stdout,
      ).toBe("back\n");
      const events = await allActivity(t);
      expect(events.map((e) => e.action)).toEqual(
        expect.arrayContaining([
          "shell.create",
          "shell.reconcile",
          "shell.action.restart",
          "shell.exec",
        ]),
      );
      expect((await verifyActivityChain(events)).ok).toBe(true);
    });

    it("settles a shell whose image build a restart cut off as error, and restart provisions it", async () => {
      // A build that would take a minute: the control plane stops while the shell provisions.
      t = await createTestApp({
        openStore: store.open,
        backends: [new SimulatorBackend({ imageBuildMs: 60_000 })],
      });
      const created = (await t.call("POST", "/api/v1/shells", { language: "python" })).json();
      expect(created.status).toBe("provisioning");
      const dataDir = t.dataDir;
      await t.close({ remove: false });
      t = await createTestApp({ openStore: store.open, dataDir });
      const after = (await t.call("GET", `/api/v1/shells/${created.id}`)).json();
      expect(after.status).toBe("error");
      expect(after.statusReason).toMatch(/cut off by a restart.*restart the shell/);
      const restarted = await t.call("POST", `/api/v1/shells/${created.id}/actions/restart`);
      expect(restarted.json().shell.status).toBe("running");
    });

    it("detects an edited activity row and names that event", async () => {
      t = await createTestApp({ openStore: store.open });
      const shell = await createShell();
      await t.call("POST", `/api/v1/shells/${shell.id}/exec`, { command: ["echo", "a"] });
      await t.call("POST", `/api/v1/shells/${shell.id}/actions/snapshot`);
      const events = await allActivity(t);
      const victim = events[1]!;
      await t.store.db
        .updateTable("activity")
        .set({ action: "shell.exec.innocent" })
        .where("id", "=", victim.id)
        .execute();
      const result = await verifyActivityChain(await allActivity(t));
      expect(result).toMatchObject({ ok: false, eventId: victim.id, seq: victim.seq });
    });
  });

  describe("execution logs", () => {
    it("keep exec output excerpts, redacted at the source: issued credentials and secret-named env values never appear", async () => {
      t = await createTestApp({ openStore: store.open });
      const shell = await createShell({
        language: "bash",
        env: { API_TOKEN: "tok-very-secret-123", GREETING: "hello" },
      });
      await t.call("POST", `/api/v1/shells/${shell.id}/exec`, {
        command: ["sh", "-c", `echo "$GREETING $API_TOKEN ${t.token}"; echo "oops $API_TOKEN" >&2`],
      });
      const logs = (await t.call("POST", `/api/v1/shells/${shell.id}/actions/logs`, {})).json()
        .logs as { message: string }[];
      const execLine = logs.find((l) => l.message.includes("stdout:"))!.message;
      expect(execLine).toContain("stdout: hello [redacted] [redacted]");
      expect(execLine).toContain("stderr: oops [redacted]");
      const everything = JSON.stringify(logs) + JSON.stringify(await allActivity(t));
      expect(everything).not.toContain("tok-very-secret-123");
      expect(everything).not.toContain(t.token);
    });
  });

  describe("names and ids", () => {
    it("refuses a name shaped like a shell id, and an id always finds its own shell", async () => {
      t = await createTestApp({ openStore: store.open });
      const victim = await createShell({ language: "bash" });
      const lookalike = await t.call("POST", "/api/v1/shells", {
        language: "bash",
        name: victim.id,
      });
      expect(lookalike.statusCode).toBe(400);
      expect(lookalike.json().error.code).toBe("validation_failed");
      expect((await t.call("GET", `/api/v1/shells/${victim.id}`)).json().id).toBe(victim.id);
    });
  });
});
