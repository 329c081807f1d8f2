import { loadConfig, startServer, type RunningServer } from "@shells/server";
import type { FastifyBaseLogger as Logger } from "fastify";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A control plane listening on loopback for an end-to-end test. */
export interface TestServer {
  url: string;
  /** The bootstrap owner key. */
  token: string;
  dataDir: string;
  server: RunningServer;
  close(): Promise<void>;
}

/**
 * Starts a real server on 127.0.0.1 (random port) over a fresh data dir. The simulator backend is
 * the default here because most end-to-end tests exercise the layers above the backend; tests of
 * real sandboxes pass `backend: "container"`.
 */
export async function startTestServer(
  options: {
    backend?: "simulator" | "container";
    dataDir?: string;
    logger?: Logger;
    /** Extra environment of the server's config (`SHELLS_*` settings). */
    env?: Record<string, string>;
  } = {},
): Promise<TestServer> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "shells-e2e-"));
  const config = loadConfig(
    [
      "--port",
      "0",
      "--host",
      "127.0.0.1",
      "--data-dir",
      dataDir,
      "--backend",
      options.backend ?? "simulator",
      "--log-level",
      "warn",
    ],
    {
      SHELLS_VALIDATE_RESPONSES: "1",
      // Container tests share one cache of base images so the suite builds each image once.
      SHELLS_IMAGES_DIR: process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images",
      ...options.env,
    },
  );
  const server = await startServer(config, options.logger ? { logger: options.logger } : {});
  const token = readFileSync(join(dataDir, "admin-token"), "utf8").trim();
  return {
    url: server.url,
    token,
    dataDir,
    server,
    close: async () => {
      // Sandboxes outlive a server by design (a restart re-adopts them); a test server's must not
      // outlive its test, whatever state or approval policy the test left its shells in.
      for (const backend of server.backends) {
        for (const sandbox of await backend.list()) await backend.destroy(sandbox.shellId);
      }
      await server.close();
      if (!options.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
