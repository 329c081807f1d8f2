import type { Shell } from "@shells/contract";
import pino from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openSqliteStore, type Store } from "../store/database.js";
import { claimKey, findKey } from "../store/idempotency-store.js";
import { IdempotencyService } from "./idempotency-service.js";

let store: Store;
beforeEach(async () => {
  store = await openSqliteStore(":memory:");
});
afterEach(async () => {
  await store.close();
});

const logger = pino({ level: "silent" });
const shell = (id: string) => ({ id, status: "running" }) as Shell;

/** A key another process claimed for `operation`, its lease running out `leaseMs` from now. */
async function claimedElsewhere(key: string, operation: string, leaseMs: number) {
  const other = new IdempotencyService({ db: store.db, logger, bootId: "boot-other" });
  await claimKey(store.db, {
    orgId: "org-1",
    key,
    requestHash: "h",
    operation,
    requestId: "req-first",
    owner: other.bootId,
    leaseExpiresAt: new Date(Date.now() + leaseMs).toISOString(),
    createdAt: new Date().toISOString(),
  });
  return other;
}

describe("resolving the pending keys of other processes", () => {
  it("leaves a live replica's key alone and takes one whose lease ran out", async () => {
    await claimedElsewhere("live", "deleteShell", 60_000);
    await claimedElsewhere("dead", "deleteShell", -1);
    const me = new IdempotencyService({ db: store.db, logger });
    const counts = await me.recover({ othersMayBeAlive: true, describeShell: async () => null });
    expect(counts).toEqual({ answered: 0, interrupted: 0, released: 1 });
    expect(await findKey(store.db, "org-1", "live")).toMatchObject({ state: "pending" });
    expect(await findKey(store.db, "org-1", "dead")).toBeUndefined();
  });

  it("takes every other process's key when no other process can be using the store", async () => {
    await claimedElsewhere("live-lease", "deleteShell", 60_000);
    const me = new IdempotencyService({ db: store.db, logger });
    await me.recover({ othersMayBeAlive: false, describeShell: async () => null });
    expect(await findKey(store.db, "org-1", "live-lease")).toBeUndefined();
  });

  it("answers a cut fork that made a shell with request_interrupted naming it, and a cut create with its shell", async () => {
    const forker = await claimedElsewhere("fork", "forkShell", -1);
    await forker.runKeyed("org-1", "fork", async () => {
      await forker.noteShell("sh-made");
      await forker.noteShell("sh-never-made");
    });
    const creator = await claimedElsewhere("create", "createShell", -1);
    await creator.runKeyed("org-1", "create", () => creator.noteShell("sh-made"));
    const me = new IdempotencyService({ db: store.db, logger });
    const counts = await me.recover({
      othersMayBeAlive: true,
      describeShell: async (_org, id) => (id === "sh-made" ? shell(id) : null),
    });
    expect(counts).toEqual({ answered: 1, interrupted: 1, released: 0 });
    const fork = await findKey(store.db, "org-1", "fork");
    expect(fork).toMatchObject({ state: "done", status_code: 409 });
    expect(JSON.parse(fork!.response!)).toEqual({
      error: expect.objectContaining({
        code: "request_interrupted",
        details: { shells: ["sh-made"] },
        requestId: "req-first",
      }),
    });
    const create = await findKey(store.db, "org-1", "create");
    expect(create).toMatchObject({ state: "done", status_code: 201 });
    expect(JSON.parse(create!.response!)).toEqual(shell("sh-made"));
  });

  it("keeps its own keys alive by renewing their lease", async () => {
    const me = new IdempotencyService({ db: store.db, logger });
    await claimKey(store.db, {
      orgId: "org-1",
      key: "mine",
      requestHash: "h",
      operation: "deleteShell",
      requestId: "req-1",
      owner: me.bootId,
      leaseExpiresAt: new Date(Date.now() - 1).toISOString(),
      createdAt: new Date().toISOString(),
    });
    await me.heartbeat(async () => null);
    const other = new IdempotencyService({ db: store.db, logger });
    await other.recover({ othersMayBeAlive: true, describeShell: async () => null });
    expect(await findKey(store.db, "org-1", "mine")).toMatchObject({
      state: "pending",
      owner: me.bootId,
    });
  });
});
