import { SimulatorBackend, type SandboxBackend } from "@shells/sandbox";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { buildApp } from "../app.js";
import { loadConfig } from "../config.js";
import { bootstrapLocalOrg } from "../iam/bootstrap.js";
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

/** Builds an app over `dataDir` (fresh when omitted) with the simulator, checking every response against the contract. */
export async function createTestApp(
  options: { dataDir?: string; backends?: SandboxBackend[]; sweepIntervalMs?: number } = {},
): Promise<TestApp> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "shells-app-"));
  const config = loadConfig(["--data-dir", dataDir, "--backend", "simulator"], {
    SHELLS_VALIDATE_RESPONSES: "1",
  });
  const store = await openSqliteStore(join(dataDir, "shells.db"));
  await bootstrapLocalOrg(store.db, dataDir);
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  const app = await buildApp(config, {
    store,
    backends: options.backends ?? [new SimulatorBackend()],
    logger: pino({ level: "silent" }),
    sweepIntervalMs: options.sweepIntervalMs ?? 0,
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
