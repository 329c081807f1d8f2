import { verifyActivityChain, type ActivityEvent } from "@shells/contract";
import SQLite from "better-sqlite3";
import type { KyselyPlugin } from "kysely";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ActivityService } from "../services/activity-service.js";
import { openSqliteStore } from "../store/database.js";
import { createTestApp, type TestApp } from "../test-support/test-app.js";
import { issueMemberKey, OPERATOR_ACTOR, OperatorKeyError } from "./operator-keys.js";

let t: TestApp;

afterEach(async () => {
  await t?.close();
});

async function addMember(email: string, role: string): Promise<string> {
  const created = await t.call("POST", "/api/v1/members", { email, role });
  expect(created.statusCode, created.body).toBe(201);
  return created.json().id as string;
}

const asHolder = (token: string) => ({ authorization: `Bearer ${token}` });

/**
 * Whether `rows` answer the read of a chain's head (`seq` and `hash` of the org's last event), the
 * first read of each event's write. Told by its answer: the read is compiled once, so a plugin sees
 * its query only the first time but every result.
 */
const isChainHead = (rows: unknown[]) =>
  rows.length === 1 &&
  Object.keys(rows[0] as object)
    .sort()
    .join(",") === "hash,seq";

describe("the operator's key for a member", () => {
  it("issues a key that authenticates as the member, within their role, recorded by the operator on an intact chain", async () => {
    t = await createTestApp();
    const memberId = await addMember("Dev@Example.com", "developer");
    const issued = await issueMemberKey(t.store.db, { email: "dev@example.com" });

    const me = await t.call("GET", "/api/v1/me", undefined, asHolder(issued.token));
    expect(me.statusCode, me.body).toBe(200);
    expect(me.json()).toMatchObject({
      actor: { type: "user", id: memberId },
      role: "developer",
      keyId: issued.keyId,
    });
    expect([...me.json().scopes].sort()).toEqual([
      "shells:agent:invoke",
      "shells:instances:control",
      "shells:instances:create",
      "shells:instances:read",
    ]);
    const shell = await t.call(
      "POST",
      "/api/v1/shells",
      { language: "bash" },
      asHolder(issued.token),
    );
    expect(shell.statusCode, shell.body).toBe(201);

    const keys = (await t.call("GET", "/api/v1/keys")).json().items as {
      id: string;
      createdBy: unknown;
    }[];
    expect(keys.find((k) => k.id === issued.keyId)?.createdBy).toEqual({
      type: "user",
      id: memberId,
    });
    const events = (await t.call("GET", "/api/v1/activity?order=asc&limit=500")).json()
      .items as ActivityEvent[];
    const event = events.find((e) => e.action === "iam.key.create");
    expect(event).toMatchObject({
      actor: { type: "system", id: "operator" },
      target: { type: "api_key", id: issued.keyId },
      outcome: "success",
      details: { principal: { type: "user", id: memberId } },
    });
    expect(JSON.stringify(events)).not.toContain(issued.token);
    expect(await verifyActivityChain(events)).toMatchObject({ ok: true });
  });

  it("issues a viewer only the read scope by default and refuses a scope beyond the role", async () => {
    t = await createTestApp();
    await addMember("viewer@example.com", "viewer");
    const issued = await issueMemberKey(t.store.db, { email: "viewer@example.com" });
    expect(issued.scopes).toEqual(["shells:instances:read"]);
    const refused = issueMemberKey(t.store.db, {
      email: "viewer@example.com",
      scopes: ["shells:instances:read", "shells:instances:create"],
    });
    await expect(refused).rejects.toThrow(OperatorKeyError);
    await expect(refused).rejects.toThrow(/viewer cannot hold shells:instances:create/);
    await expect(
      issueMemberKey(t.store.db, { email: "viewer@example.com", scopes: ["shells:root"] }),
    ).rejects.toThrow(/unknown scope shells:root/);
  });

  it("refuses a disabled member, a removed member and an unknown email, leaving no key behind", async () => {
    t = await createTestApp();
    const disabled = await addMember("gone@example.com", "developer");
    const removed = await addMember("left@example.com", "developer");
    expect(
      (await t.call("PATCH", `/api/v1/members/${disabled}`, { disabled: true })).statusCode,
    ).toBe(200);
    expect((await t.call("DELETE", `/api/v1/members/${removed}`)).statusCode).toBe(200);
    await expect(issueMemberKey(t.store.db, { email: "gone@example.com" })).rejects.toThrow(
      /gone@example.com is disabled or removed/,
    );
    await expect(issueMemberKey(t.store.db, { email: "left@example.com" })).rejects.toThrow(
      /left@example.com is disabled or removed/,
    );
    await expect(issueMemberKey(t.store.db, { email: "nobody@example.com" })).rejects.toThrow(
      /no member nobody@example.com/,
    );
    const keys = await t.store.db
      .selectFrom("api_keys")
      .select("principal_id")
      .where("principal_id", "in", [disabled, removed])
      .where("revoked_at", "is", null)
      .execute();
    expect(keys).toEqual([]);
  });

  it("asks for the org by name when the store holds several, and finds the member in the named one", async () => {
    t = await createTestApp();
    await addMember("dev@example.com", "developer");
    await t.store.db
      .insertInto("orgs")
      .values({ id: "org-other", name: "other", created_at: new Date().toISOString() })
      .execute();
    await expect(issueMemberKey(t.store.db, { email: "dev@example.com" })).rejects.toThrow(
      /several orgs; name one with --org \(default, other\)/,
    );
    await expect(
      issueMemberKey(t.store.db, { email: "dev@example.com", org: "other" }),
    ).rejects.toThrow(/no member dev@example.com/);
    const issued = await issueMemberKey(t.store.db, { email: "dev@example.com", org: "default" });
    const me = await t.call("GET", "/api/v1/me", undefined, asHolder(issued.token));
    expect(me.json().orgId).toBe(issued.orgId);
  });

  it("issues the key and its event while a running server holds the write lock, where a single try is refused", async () => {
    t = await createTestApp();
    const memberId = await addMember("busy@example.com", "developer");
    const orgId = (await t.call("GET", "/api/v1/me")).json().orgId as string;
    const file = join(t.dataDir, "shells.db");
    // The command's own connection to the file, as `server issue-key` opens it beside the server.
    const operator = await openSqliteStore(file);
    // The running server's connection, in the middle of a write.
    const server = new SQLite(file);
    try {
      // A read-then-write transaction is refused at once while another one writes: SQLite does
      // not wait (busy timeout or not) to upgrade a transaction that already read.
      server.exec("BEGIN IMMEDIATE");
      const single = new ActivityService(operator.db).record({
        orgId,
        actor: OPERATOR_ACTOR,
        action: "iam.key.create",
        target: null,
        outcome: "success",
      });
      await expect(single).rejects.toMatchObject({ code: expect.stringMatching(/^SQLITE_BUSY/) });
      server.exec("COMMIT");

      // The server takes the write lock right after the event's first try has read the chain's
      // head, and commits right after the third's: the first two tries' writes are refused and
      // retried, the third goes through.
      let tries = 0;
      const serverWritesMeanwhile: KyselyPlugin = {
        transformQuery: ({ node }) => node,
        transformResult: ({ result }) => {
          if (isChainHead(result.rows)) {
            tries += 1;
            if (tries === 1) server.exec("BEGIN IMMEDIATE");
            if (tries === 3) server.exec("COMMIT");
          }
          return Promise.resolve(result);
        },
      };
      const issued = await issueMemberKey(operator.db.withPlugin(serverWritesMeanwhile), {
        email: "busy@example.com",
      });
      expect(tries).toBe(3);

      const me = await t.call("GET", "/api/v1/me", undefined, asHolder(issued.token));
      expect(me.statusCode, me.body).toBe(200);
      expect(me.json().actor).toEqual({ type: "user", id: memberId });
      const events = (await t.call("GET", "/api/v1/activity?order=asc&limit=500")).json()
        .items as ActivityEvent[];
      expect(events.filter((e) => e.action === "iam.key.create")).toEqual([
        expect.objectContaining({
          actor: { type: "system", id: "operator" },
          target: { type: "api_key", id: issued.keyId },
        }),
      ]);
      expect(await verifyActivityChain(events)).toMatchObject({ ok: true });
    } finally {
      if (server.inTransaction) server.exec("ROLLBACK");
      server.close();
      await operator.close();
    }
  });
});
