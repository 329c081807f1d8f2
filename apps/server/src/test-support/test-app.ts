import { SimulatorBackend, type SandboxBackend } from "@shells/sandbox";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { buildApp } from "../app.js";
import { loadConfig } from "../config.js";
import { bootstrapLocalOrg } from "../iam/bootstrap.js";
import { mintApiKey } from "../iam/tokens.js";
import { newId } from "../ids.js";
import { openSqliteStore, type Store } from "../store/database.js";

/** An app over a fresh SQLite file, driven with `inject()`. */
export interface TestApp {
  app: FastifyInstance;
  store: Store;
  dataDir: string;
  token: string;
  /** `inject` with the owner key and JSON body. */
  call(
    method: string,
    url: string,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<LightMyRequestResponse>;
  /** Closes the app and store; keeps the data dir (for restart tests) unless `remove`. */
  close(options?: { remove?: boolean }): Promise<void>;
}

/**
 * Builds an app over `dataDir` (fresh when omitted) with the simulator, checking every response
 * against the contract. `openStore` chooses the store (any implementation of `Store`, migrated);
 * by default a SQLite file in the data dir.
 */
export async function createTestApp(
  options: {
    dataDir?: string;
    backends?: SandboxBackend[];
    sweepIntervalMs?: number;
    /** How often the webhook outbox is sent; 0 (the default here) leaves deliveries queued. */
    webhookPollIntervalMs?: number;
    /** Metering checkpoints and cap sweeps, ms (default 0: none; state changes are still metered). */
    meteringIntervalMs?: number;
    openStore?: (dataDir: string) => Promise<Store>;
    /** Settings as environment variables (`SHELLS_METRICS_TOKEN`, …). */
    env?: Record<string, string>;
    /** The clock the retention sweep reads (default: the wall clock). */
    clock?: () => Date;
    /** Names the egress proxies resolve from this map instead of DNS (`name → addresses`). */
    egressTestHosts?: Record<string, string[]>;
  } = {},
): Promise<TestApp> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "shells-app-"));
  const config = loadConfig(["--data-dir", dataDir, "--backend", "simulator"], {
    SHELLS_VALIDATE_RESPONSES: "1",
    ...options.env,
  });
  if (options.egressTestHosts) config.egressTestHosts = options.egressTestHosts;
  const store = await (options.openStore ?? ((dir) => openSqliteStore(join(dir, "shells.db"))))(
    dataDir,
  );
  await bootstrapLocalOrg(store.db, dataDir);
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  const app = await buildApp(config, {
    store,
    backends: options.backends ?? [new SimulatorBackend()],
    logger: pino({ level: "silent" }),
    sweepIntervalMs: options.sweepIntervalMs ?? 0,
    webhookPollIntervalMs: options.webhookPollIntervalMs ?? 0,
    meteringIntervalMs: options.meteringIntervalMs ?? 0,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  await app.ready();
  return {
    app,
    store,
    dataDir,
    token,
    call: (method, url, body, headers = {}) =>
      app.inject({
        method: method as "GET",
        url,
        headers: {
          authorization: `Bearer ${token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
          ...headers,
        },
        ...(body === undefined
          ? {}
          : { payload: typeof body === "string" ? body : JSON.stringify(body) }),
      }),
    close: async ({ remove = true } = {}) => {
      await app.close();
      await store.close();
      if (remove) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Inserts an org (when new), a user or agent with `role` in it, and an API key; returns the key's token. */
export async function addPrincipal(
  store: Store,
  options: {
    orgId: string;
    role: "viewer" | "developer" | "admin" | "owner";
    scopes: readonly string[];
    type?: "user" | "agent";
    id?: string;
    entitlements?: string[];
  },
): Promise<{ token: string; id: string; keyId: string }> {
  const now = new Date().toISOString();
  const db = store.db;
  const org = await db
    .selectFrom("orgs")
    .select("id")
    .where("id", "=", options.orgId)
    .executeTakeFirst();
  if (!org) {
    await db
      .insertInto("orgs")
      .values({ id: options.orgId, name: options.orgId, created_at: now })
      .execute();
    await db
      .insertInto("projects")
      .values({
        id: `prj-${options.orgId}`,
        org_id: options.orgId,
        name: "default",
        created_at: now,
      })
      .execute();
  }
  const type = options.type ?? "user";
  const id = options.id ?? newId(type === "user" ? "usr" : "agt");
  if (type === "user") {
    await db
      .insertInto("users")
      .values({
        id,
        org_id: options.orgId,
        email: `${id}@example.com`,
        role: options.role,
        created_at: now,
        oidc_subject: null,
        disabled_at: null,
      })
      .execute();
  } else {
    await db
      .insertInto("agents")
      .values({
        id,
        org_id: options.orgId,
        name: id,
        role: options.role,
        created_at: now,
        disabled_at: null,
      })
      .execute();
  }
  for (const entitlement of options.entitlements ?? []) {
    await db
      .insertInto("entitlements")
      .values({
        id: newId("ent"),
        org_id: options.orgId,
        entitlement,
        principal_type: type,
        principal_id: id,
        granted_by: "test",
        created_at: now,
      })
      .execute();
  }
  const key = await addKey(store, {
    orgId: options.orgId,
    principal: { type, id },
    scopes: options.scopes,
  });
  return { token: key.token, id, keyId: key.keyId };
}

/**
 * Inserts an API key that its holder minted for themselves (as a member does after logging in to
 * the console) and returns it; the API mints keys only for the caller or an agent.
 */
export async function addKey(
  store: Store,
  options: {
    orgId: string;
    principal: { type: "user" | "agent"; id: string };
    scopes: readonly string[];
    name?: string;
  },
): Promise<{ token: string; keyId: string }> {
  const key = mintApiKey();
  await store.db
    .insertInto("api_keys")
    .values({
      id: key.keyId,
      org_id: options.orgId,
      principal_type: options.principal.type,
      principal_id: options.principal.id,
      name: options.name ?? "test",
      key_hash: key.keyHash,
      scopes: JSON.stringify(options.scopes),
      created_at: new Date().toISOString(),
      revoked_at: null,
      last_used_at: null,
      created_by_type: options.principal.type,
      created_by_id: options.principal.id,
    })
    .execute();
  return { token: key.token, keyId: key.keyId };
}
