import type { SandboxBackend } from "@shells/sandbox";
import type { FastifyInstance } from "fastify";
import type { FastifyBaseLogger as Logger } from "fastify";
import { buildApp } from "./app.js";
import { createBackends } from "./backends.js";
import type { ServerConfig } from "./config.js";
import { bootstrapLocalOrg } from "./iam/bootstrap.js";
import { createLogger } from "./logger.js";
import { openStore, redactDatabaseUrl } from "./store/database.js";
import { startTracing } from "./tracing/tracing.js";
import { join } from "node:path";
import { existsSync } from "node:fs";

/** A listening control plane. */
export interface RunningServer {
  app: FastifyInstance;
  url: string;
  /** Path of the admin token file, when the local profile keeps one. */
  adminTokenPath: string | null;
  /** The sandbox backends the server runs shells on. */
  backends: readonly SandboxBackend[];
  close(): Promise<void>;
}

/**
 * Opens the store (migrating it), bootstraps the local org on first start, builds the app over the
 * configured backends and listens. The hosted profile never bootstraps and refuses to start
 * without OIDC.
 */
export async function startServer(
  config: ServerConfig,
  options: {
    logger?: Logger;
    /** Backends to offer instead of those the configuration names (tests of slow first creates). */
    backends?: SandboxBackend[];
  } = {},
): Promise<RunningServer> {
  const logger = options.logger ?? createLogger(config.logLevel);
  // A hosted server has no bootstrap key, so without OIDC nobody could ever sign in: refuse to
  // start rather than serve an API no one can use (or be tempted to open up).
  if (config.profile === "hosted" && !config.oidc) {
    throw new Error(
      "the hosted profile needs OIDC: set SHELLS_OIDC_ISSUER, SHELLS_OIDC_CLIENT_ID and SHELLS_OIDC_ROLE_MAP (and SHELLS_OIDC_CLIENT_SECRET for a confidential client), or run with --profile local",
    );
  }
  if (config.profile === "hosted" && !config.publicUrl)
    logger.warn(
      "SHELLS_PUBLIC_URL is not set: the OIDC redirect URI is derived from the listen address and the session cookie is not Secure",
    );
  const store = await openStore(config, {
    onPoolError: (error) =>
      logger.warn({ err: error }, "a store connection failed; it is replaced"),
  });
  let adminTokenPath: string | null = null;
  if (config.profile === "local") {
    const boot = await bootstrapLocalOrg(store.db, config.dataDir);
    adminTokenPath = boot?.tokenPath ?? join(config.dataDir, "admin-token");
    if (boot)
      logger.info(
        { tokenPath: boot.tokenPath },
        `first start: created org "default" and wrote an owner API key to ${boot.tokenPath} (mode 0600)`,
      );
    else if (existsSync(adminTokenPath))
      logger.info({ tokenPath: adminTokenPath }, `owner API key is in ${adminTokenPath}`);
  }
  const backends = options.backends ?? (await createBackends(config, logger));
  // Before the app: its request and backend spans go to this provider.
  const tracing = startTracing(config);
  if (tracing) logger.info({ otlpEndpoint: config.otlpEndpoint }, "tracing exports to OTLP/HTTP");
  const app = await buildApp(config, { store, backends, logger });
  const address = await app.listen({ port: config.port, host: config.host });
  const url = address.replace("[::1]", "[::1]");
  logger.info(
    {
      url,
      backend: config.backend,
      dataDir: config.dataDir,
      store: config.databaseUrl ? redactDatabaseUrl(config.databaseUrl) : "sqlite",
    },
    `Shells is serving on ${url} (API reference at ${url}/docs)`,
  );
  // The app's own close hooks (draining runs, writing pending activity) still need the backends and
  // the store, so those close after it.
  const close = async () => {
    await app.close();
    for (const backend of backends) await backend.close();
    await store.close();
    // Last: the spans of closing are exported too.
    await tracing?.shutdown();
  };
  return { app, url, adminTokenPath, backends, close };
}
