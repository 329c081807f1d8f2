import { ActivityQuery, verifyActivityChain, type ActivityEvent } from "@shells/contract";
import { SimulatorBackend } from "@shells/sandbox";
import type { FastifyInstance } from "fastify";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../app.js";
import { loadConfig } from "../config.js";
import { mintApiKey } from "../iam/tokens.js";
import { bootstrapLocalOrg } from "../iam/bootstrap.js";
import { ActivityService, SYSTEM_ORG } from "../services/activity-service.js";
import { openSqliteStore, type Store } from "../store/database.js";
import { addPrincipal } from "../test-support/test-app.js";

interface Harness {
  app: FastifyInstance;
  store: Store;
  token: string;
  dataDir: string;
}

let h: Harness | undefined;
afterEach(async () => {
  if (!h) return;
  await h.app.close();
  await h.store.close();
  rmSync(h.dataDir, { recursive: true, force: true });
  h = undefined;
});

/** An app over a fresh store with the given refused-authentication limit and window. */
async function start(env: Record<string, string>): Promise<Harness> {
  const dataDir = mkdtempSync(join(tmpdir(), "shells-auth-limit-"));
  const config = loadConfig(["--data-dir", dataDir, "--backend", "simulator"], {
    SHELLS_VALIDATE_RESPONSES: "1",
    ...env,
  });
  const store = await openSqliteStore(join(dataDir, "shells.db"));
  await bootstrapLocalOrg(store.db, dataDir);
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  const app = await buildApp(config, {
    store,
    backends: [new SimulatorBackend()],
    logger: pino({ level: "silent" }),
    sweepIntervalMs: 0,
  });
  await app.ready();
  return { app, store, token, dataDir };
}

async function chain(store: Store, orgId: string): Promise<ActivityEvent[]> {
  const activity = new ActivityService(store.db);
  const page = await activity.list(orgId, ActivityQuery.parse({ order: "asc", limit: 500 }));
  return page.items;
}

async function ownerOrg(store: Store): Promise<string> {
  return (await store.db.selectFrom("orgs").select("id").executeTakeFirstOrThrow()).id;
}

const failedAuth = (events: ActivityEvent[]) => events.filter((e) => e.action === "auth.failed");
const countOf = (events: ActivityEvent[]) =>
  events.reduce((sum, e) => sum + Number(e.details.count), 0);

describe("refused authentication", () => {
  it("2,000 bad-token requests write a bounded number of activity rows whose counts add up, then get 429 with Retry-After, while the owner is served", async () => {
    h = await start({ SHELLS_AUTH_FAILURE_LIMIT: "50", SHELLS_AUTH_FAILURE_WINDOW_SECONDS: "60" });
    // A known key id with a wrong secret: attributable to the owner's org, so it lands in its chain.
    const forged = h.token.slice(0, 17) + "A".repeat(43);
    const statuses = new Map<number, number>();
    let retryAfter: string | string[] | undefined;
    let rateLimitedCode: unknown;
    for (let i = 0; i < 2000; i++) {
      const res = await h.app.inject({
        method: "GET",
        url: "/api/v1/shells",
        headers: { authorization: `Bearer ${forged}` },
      });
      statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
      if (res.statusCode === 429) {
        retryAfter = res.headers["retry-after"];
        rateLimitedCode = res.json().error.code;
      }
    }
    expect(statuses.get(401)).toBe(50);
    expect(statuses.get(429)).toBe(1950);
    expect(rateLimitedCode).toBe("rate_limited");
    expect(Number(retryAfter)).toBeGreaterThan(0);

    // An authenticated caller from the same address is not throttled.
    const owner = await h.app.inject({
      method: "GET",
      url: "/api/v1/shells",
      headers: { authorization: `Bearer ${h.token}` },
    });
    expect(owner.statusCode).toBe(200);

    // While the window is open only its first refusal is written.
    const during = failedAuth(await chain(h.store, await ownerOrg(h.store)));
    expect(during).toHaveLength(1);
    expect(during[0]!.details).toMatchObject({ reason: "wrong secret for this API key", count: 1 });

    // When the server closes, the repeats are one more event with their count.
    const orgId = await ownerOrg(h.store);
    await h.app.close();
    const events = await chain(h.store, orgId);
    const refused = failedAuth(events);
    expect(refused.length).toBeLessThanOrEqual(3);
    expect(countOf(refused)).toBe(2000);
    expect(JSON.stringify(events)).not.toContain(forged);
    expect((await verifyActivityChain(events)).ok).toBe(true);
  }, 60_000);

  it("writes a window's count when the window closes, in the system chain for unknown keys", async () => {
    h = await start({ SHELLS_AUTH_FAILURE_LIMIT: "1000", SHELLS_AUTH_FAILURE_WINDOW_SECONDS: "1" });
    for (let i = 0; i < 300; i++) {
      const res = await h.app.inject({
        method: "GET",
        url: "/api/v1/shells",
        headers: { authorization: `Bearer ${mintApiKey().token}` },
      });
      expect(res.statusCode).toBe(401);
    }
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const events = await chain(h.store, SYSTEM_ORG);
    const refused = failedAuth(events);
    expect(refused).toHaveLength(2);
    expect(refused.map((e) => e.details.count)).toEqual([1, 299]);
    expect((await verifyActivityChain(events)).ok).toBe(true);
  });
});

describe("per-key request limit", () => {
  it("answers a key past its budget 429 rate_limited with Retry-After, while another key is served, and serves it again once the window passes", async () => {
    h = await start({ SHELLS_RATE_LIMIT_PER_KEY: "20", SHELLS_RATE_LIMIT_WINDOW_SECONDS: "2" });
    const other = await addPrincipal(h.store, {
      orgId: await ownerOrg(h.store),
      role: "developer",
      scopes: ["shells:instances:read"],
    });
    const get = (token: string) =>
      h!.app.inject({
        method: "GET",
        url: "/api/v1/shells",
        headers: { authorization: `Bearer ${token}` },
      });
    const remaining: number[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await get(h.token);
      expect(res.statusCode).toBe(200);
      expect(res.headers["x-ratelimit-limit"]).toBe("20");
      remaining.push(Number(res.headers["x-ratelimit-remaining"]));
    }
    expect(remaining.at(0)).toBe(19);
    expect(remaining.at(-1)).toBe(0);
    const refused = await get(h.token);
    expect(refused.statusCode).toBe(429);
    expect(refused.json().error.code).toBe("rate_limited");
    expect(refused.json().error.details.retryAfterMs).toBeGreaterThan(0);
    expect(Number(refused.headers["retry-after"])).toBeGreaterThanOrEqual(1);
    expect((await get(other.token)).statusCode).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 2100));
    expect((await get(h.token)).statusCode).toBe(200);
  });

  it("is off with a limit of 0", async () => {
    h = await start({ SHELLS_RATE_LIMIT_PER_KEY: "0" });
    const res = await h.app.inject({
      method: "GET",
      url: "/api/v1/shells",
      headers: { authorization: `Bearer ${h.token}` },
    });
    expect(res.statusCode).toBe(200);
    expect(res.headers["x-ratelimit-limit"]).toBeUndefined();
  });
});
