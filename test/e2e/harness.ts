import type { OrgPolicyUpdate } from "@l1fe/shells";
import { loadConfig, openSqliteStore, startServer, type RunningServer } from "@shells/server";
import type { SandboxBackend } from "@shells/sandbox";
import { spawn, type ChildProcess } from "node:child_process";
import type { FastifyBaseLogger as Logger } from "fastify";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { addKey } from "../../apps/server/src/test-support/test-app.js";

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
    /** Settings as environment variables (`SHELLS_WEBHOOK_RETRY_BASE_MS`, …). */
    env?: Record<string, string>;
    /** Backends instead of `backend`'s (a simulator modelling slow image builds). */
    backends?: SandboxBackend[];
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
      // Microvm tests share the guest kernel, base disks and templates the same way.
      SHELLS_MICROVM_CACHE_DIR:
        process.env.SHELLS_TEST_MICROVM_CACHE ?? "/var/cache/shells-test/microvm",
      ...options.env,
    },
  );
  const server = await startServer(config, {
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.backends ? { backends: options.backends } : {}),
  });
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

/** Where container tests keep the base images `test/global-setup.ts` built. */
const IMAGES = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";

/** One JSON request to a server with its owner key; answers the status and the parsed body. */
export async function call<T = Record<string, unknown>>(
  server: { url: string; token: string },
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers: {
      authorization: `Bearer ${server.token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as T };
}

/**
 * Makes a new developer member (`email`) the org's listed approver, setting `approvalGates` in the
 * same policy update, so that a gated step answers 202 and the member can decide it. The member's
 * key, able to read and control shells, is added to the server's store directly. Answers the
 * member's id with the key, ready for `call`.
 */
export async function addApprover(
  server: { url: string; token: string; dataDir: string },
  email: string,
  approvalGates?: OrgPolicyUpdate["approvalGates"],
): Promise<{ url: string; token: string; id: string }> {
  const me = (await call<{ orgId: string }>(server, "GET", "/api/v1/me")).body;
  const member = await call<{ id: string }>(server, "POST", "/api/v1/members", {
    email,
    role: "developer",
  });
  if (member.status !== 201) throw new Error(`adding ${email}: ${JSON.stringify(member.body)}`);
  const store = await openSqliteStore(join(server.dataDir, "shells.db"));
  const key = await addKey(store, {
    orgId: me.orgId,
    principal: { type: "user", id: member.body.id },
    scopes: ["shells:instances:read", "shells:instances:control"],
  });
  await store.close();
  const policy = await call(server, "PATCH", "/api/v1/org/policy", {
    approvers: [member.body.id],
    ...(approvalGates ? { approvalGates } : {}),
  });
  if (policy.status !== 200) throw new Error(`listing ${email}: ${JSON.stringify(policy.body)}`);
  return { url: server.url, token: key.token, id: member.body.id };
}

/** A TCP port free on loopback now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

/**
 * The built server (`apps/server/dist/server.js`) as a process of its own on the container
 * backend, so a test can kill it as a crash would (`kill -9`) and start it again on the same data.
 */
export function startServerProcess(
  dataDir: string,
  port: number,
  env: Record<string, string> = {},
): ChildProcess {
  return spawn(
    process.execPath,
    [
      "apps/server/dist/server.js",
      "--backend",
      "container",
      "--data-dir",
      dataDir,
      "--port",
      String(port),
      "--log-level",
      "warn",
    ],
    {
      env: { ...process.env, SHELLS_IMAGES_DIR: IMAGES, ...env },
      stdio: "ignore",
    },
  );
}

/** Waits until the server at `url` answers `/readyz`. */
export async function waitReady(url: string): Promise<void> {
  for (let i = 0; i < 200; i += 1) {
    try {
      if ((await fetch(`${url}/readyz`)).ok) return;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("server did not become ready");
}
