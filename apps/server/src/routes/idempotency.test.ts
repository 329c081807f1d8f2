import { afterEach, describe, expect, it } from "vitest";
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
