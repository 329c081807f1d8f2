#!/usr/bin/env node
import { loadConfig } from "./config.js";
import { startServer } from "./start-server.js";

// The process entry: parse configuration once, listen, and close cleanly on SIGINT/SIGTERM.
try {
  const config = loadConfig(process.argv.slice(2));
  const server = await startServer(config);
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    server.app.log.info(
      { signal },
      "shutting down; sandboxes keep running and are re-adopted at next start",
    );
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on("SIGINT", () => shutdown("SIGINT"));
  process.on("SIGTERM", () => shutdown("SIGTERM"));
} catch (error) {
  console.error(`shells server: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
