/** The Shells control plane: build the app (no listen) or start a listening server. */
export { buildApp, SERVER_VERSION, type AppDeps } from "./app.js";
export { createBackends } from "./backends.js";
export { ServerConfig, loadConfig } from "./config.js";
export { AppError } from "./errors.js";
export { bootstrapLocalOrg, type BootstrapResult } from "./iam/bootstrap.js";
export { createLogger } from "./logger.js";
export { startServer, type RunningServer } from "./start-server.js";
export {
  openPostgresStore,
  openSqliteStore,
  openStore,
  redactDatabaseUrl,
  type Store,
} from "./store/database.js";
