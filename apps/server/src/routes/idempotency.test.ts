import { verifyActivityChain, type Shell } from "@shells/contract";
import { afterEach, describe, expect, it } from "vitest";
import { CrashingSimulator } from "../test-support/crashing-simulator.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

describe("idempotency keys", () => {
  it("are forgotten after a day, so the table does not grow with every request ever made", async () => {
    const app = (t = await createTestApp());
    const me = (await app.call("GET", "/api/v1/me")).json();
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000).toISOString();
    await app.store.db
      .insertInto("idempotency_keys")
      .values({
        org_id: me.orgId,
        key: "user:someone:stale",
        request_hash: "x",
        state: "done",
        status_code: 201,
        response: "{}",
        created_at: twoDaysAgo,
      })
      .execute();
    const created = await app.call(
      "POST",
      "/api/v1/shells",
      { language: "bash" },
      { "idempotency-key": "fresh-key" },
    );
    expect(created.statusCode).toBe(201);
    const replay = await app.call(
      "POST",
      "/api/v1/shells",
      { language: "bash" },
      { "idempotency-key": "fresh-key" },
    );
    expect(replay.headers["idempotent-replayed"]).toBe("true");
    expect(replay.json().id).toBe(created.json().id);
    const keys = await app.store.db.selectFrom("idempotency_keys").select("key").execute();
    expect(keys.map((k) => k.key)).not.toContain("user:someone:stale");
    expect(keys).toHaveLength(1);
  });
});

describe("idempotency keys of a control plane that died", () => {
  /** The app over `dataDir` again, as a restarted process, on the same (surviving) sandboxes. */
  async function restart(app: TestApp, backend: CrashingSimulator): Promise<TestApp> {
    const dataDir = app.dataDir;
    await app.close({ remove: false });
    backend.cut = null;
    return createTestApp({ dataDir, backends: [backend] });
  }

  it("answer a create cut by the crash with the shell it made, and a retry makes no second shell", async () => {
    const backend = new CrashingSimulator();
    const app = (t = await createTestApp({ backends: [backend] }));
    backend.cut = "create";
    const key = { "idempotency-key": "create-cut" };
    void app.call("POST", "/api/v1/shells", { language: "bash" }, key);
    await backend.reached;
    const again = (t = await restart(app, backend));
    const retry = await again.call("POST", "/api/v1/shells", { language: "bash" }, key);
    expect(retry.statusCode).toBe(201);
    expect(retry.headers["idempotent-replayed"]).toBe("true");
    const shells = (await again.call("GET", "/api/v1/shells")).json().items as Shell[];
    expect(shells).toHaveLength(1);
    expect(retry.json()).toMatchObject({ id: shells[0]!.id, status: "error" });
    expect(retry.json().statusReason).toMatch(/cut off by a restart/);
    // Its half-made sandbox was reclaimed, not left running for a shell in `error`.
    expect(await backend.list()).toEqual([]);
  });

  it("release a delete cut by the crash: the next start finishes it and the retry answers the deleted shell", async () => {
    const backend = new CrashingSimulator();
    const app = (t = await createTestApp({ backends: [backend] }));
    const shell = (await app.call("POST", "/api/v1/shells", { language: "bash" })).json<Shell>();
    backend.cut = "destroy";
    const key = { "idempotency-key": "delete-cut" };
    void app.call("DELETE", `/api/v1/shells/${shell.id}`, undefined, key);
    await backend.reached;
    const again = (t = await restart(app, backend));
    expect((await again.call("GET", `/api/v1/shells/${shell.id}`)).json().status).toBe("deleted");
    expect(await backend.list()).toEqual([]);
    const retry = await again.call("DELETE", `/api/v1/shells/${shell.id}`, undefined, key);
    expect(retry.statusCode).toBe(200);
    expect(retry.json()).toMatchObject({ id: shell.id, status: "deleted" });
    const events = (await again.call("GET", "/api/v1/activity?order=asc&limit=500")).json().items;
    expect(events.find((e: { action: string }) => e.action === "shell.delete")).toMatchObject({
      actor: { type: "system" },
      details: { requestedBy: expect.any(String), finishedAfterRestart: true },
    });
    expect((await verifyActivityChain(events)).ok).toBe(true);
  });
});
