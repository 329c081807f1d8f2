import { afterEach, describe, expect, it } from "vitest";
import { addPrincipal, createTestApp, type TestApp } from "../test-support/test-app.js";
import { CALLER_CACHE_TTL_MS, CallerCache } from "./caller-cache.js";
import type { Caller } from "./principal.js";

let t: TestApp | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

const me = (app: TestApp, token: string) =>
  app.call("GET", "/api/v1/me", undefined, { authorization: `Bearer ${token}` });

describe("reusing a verified API key's caller", () => {
  it("still refuses a wrong secret for a key just used, and a revoked key at once on this server", async () => {
    t = await createTestApp();
    const orgId = (await t.call("GET", "/api/v1/me")).json().orgId as string;
    const dev = await addPrincipal(t.store, {
      orgId,
      role: "developer",
      scopes: ["shells:instances:read", "shells:instances:control"],
    });
    expect((await me(t, dev.token)).statusCode).toBe(200);
    const last = dev.token.at(-1) === "A" ? "B" : "A";
    const forged = `${dev.token.slice(0, -1)}${last}`;
    expect((await me(t, forged)).statusCode).toBe(401);

    const revoked = await t.call("DELETE", `/api/v1/keys/${dev.keyId}`);
    expect(revoked.statusCode, revoked.body).toBe(200);
    expect((await me(t, dev.token)).statusCode).toBe(401);
  });

  it("stops a key revoked behind this server's back (another replica) within a second", async () => {
    t = await createTestApp();
    const orgId = (await t.call("GET", "/api/v1/me")).json().orgId as string;
    const dev = await addPrincipal(t.store, {
      orgId,
      role: "developer",
      scopes: ["shells:instances:read"],
    });
    expect((await me(t, dev.token)).statusCode).toBe(200);
    const revokedAt = Date.now();
    await t.store.db
      .updateTable("api_keys")
      .set({ revoked_at: new Date().toISOString() })
      .where("id", "=", dev.keyId)
      .execute();
    await expect.poll(async () => (await me(t!, dev.token)).statusCode, { interval: 20 }).toBe(401);
    expect(Date.now() - revokedAt).toBeLessThan(1000);
    expect(CALLER_CACHE_TTL_MS).toBeLessThan(1000);
  });

  it("never serves a key from the cache past the key's own expiry", () => {
    const cache = new CallerCache();
    const caller = { orgId: "org", actor: { type: "user", id: "u" } } as unknown as Caller;
    // The key expires 100 ms after it was verified, well inside the cache's TTL.
    cache.set("token", caller, 1_000, 1_100);
    expect(cache.get("token", 1_050)).toEqual(caller);
    expect(cache.get("token", 1_100)).toBeUndefined();
    cache.set("other", caller, 1_000);
    expect(cache.get("other", 1_000 + CALLER_CACHE_TTL_MS - 1)).toEqual(caller);
  });

  it("hands out a caller no request can change for the next one", () => {
    const cache = new CallerCache();
    const caller = {
      orgId: "org",
      actor: { type: "user", id: "u" },
      role: "developer",
      keyId: "k",
      scopes: ["shells:instances:read"],
      entitlements: [],
    } as Caller;
    cache.set("token", caller, 1_000);
    const first = cache.get("token", 1_001)!;
    expect(() => {
      (first as { role: string }).role = "owner";
    }).toThrow(TypeError);
    expect(() => first.scopes.push("shells:instances:control")).toThrow(TypeError);
    // Nor does a change to the object it was verified as reach the cache.
    caller.actor.id = "someone-else";
    expect(cache.get("token", 1_002)).toMatchObject({
      role: "developer",
      actor: { id: "u" },
      scopes: ["shells:instances:read"],
    });
  });
});
