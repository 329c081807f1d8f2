/**
 * The set-up the egress tests of each runtime class share: a real server with its real egress
 * proxy, an allowed upstream on loopback, and an HTTPS upstream (a test CA the proxy alone trusts)
 * behind the binding `echo`, whose secret it checks. Test names resolve through the proxy's test
 * name map: `allowed.test` (the upstream), `private.test` (10.1.2.3) and `metadata.test`
 * (169.254.169.254), plus any the test adds.
 */
import { loadConfig, startServer, type RunningServer } from "@shells/server";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "vitest";
import { makeTestCa } from "../../apps/server/src/test-support/test-ca.js";
import { call } from "./harness.js";

/** Bash that writes an HTTP request to the shell's proxy listener and prints the answer. */
export function viaProxy(requestLine: string, headers = ""): string {
  return direct("127.0.0.1", 3128, requestLine, headers);
}

/**
 * Bash that writes an HTTP request to `address:port` itself, the proxy variables aside: the bash
 * image has no HTTP client, and bash's /dev/tcp is all a request through the relay needs.
 */
export function direct(address: string, port: number, requestLine: string, headers = ""): string {
  return `exec 3<>/dev/tcp/${address}/${port} && printf '${requestLine}\\r\\n${headers}Connection: close\\r\\n\\r\\n' >&3 && timeout 30 cat <&3`;
}

export interface EgressFixture {
  server: RunningServer;
  api: { url: string; token: string };
  dataDir: string;
  /** The plain upstream's port on 127.0.0.1: it answers `upstream saw <path>`. */
  upstreamPort: number;
  /** The Authorization header of each request the binding's upstream received. */
  securedAuth: string[];
  /**
   * Two running shells: `internet` (runtime, language, resources) with an allowlist of the
   * fixture's test names plus `allow`, and a sealed one of `bound` granted the binding `echo`.
   */
  createShells(shells: {
    internet: Record<string, unknown>;
    bound: Record<string, unknown>;
    allow?: string[];
  }): Promise<{ internetShell: string; boundShell: string }>;
  /**
   * Runs a command in a shell and returns its result (the call must succeed); a string runs as a
   * bash script.
   */
  exec: (
    shellId: string,
    command: string | string[],
  ) => Promise<{ exitCode: number; stdout: string; stderr: string }>;
  /** Deletes the shells `createShells` made, then stops the server and the upstreams. */
  close(): Promise<void>;
}

export async function startEgressFixture(options: {
  /** Names the data dir. */
  name: string;
  /** The binding's secret. */
  secret: string;
  env?: Record<string, string>;
  testHosts?: Record<string, string[]>;
  /** Private ranges the org's policy opens besides 127.0.0.1/32. */
  allowCidrs?: string[];
  /** The time limit of each `exec`; 60 s unless told. */
  execTimeoutMs?: number;
}): Promise<EgressFixture> {
  const listen = async (server: Server) => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  };
  const upstream = createHttpServer((req, res) => res.end(`upstream saw ${req.url}`));
  const upstreamPort = await listen(upstream);
  const ca = makeTestCa(["127.0.0.1"]);
  const securedAuth: string[] = [];
  const secured = createHttpsServer({ cert: ca.cert, key: ca.key }, (req, res) => {
    securedAuth.push(req.headers.authorization ?? "");
    res.end(
      req.headers.authorization === `Bearer ${options.secret}` ? "authorized" : "unauthorized",
    );
  });
  const securedPort = await listen(secured);

  const dataDir = mkdtempSync(join(tmpdir(), `shells-${options.name}-`));
  const caFile = join(dataDir, "test-ca.pem");
  writeFileSync(caFile, ca.caCert);
  const loaded = loadConfig(
    ["--port", "0", "--data-dir", dataDir, "--backend", "container", "--log-level", "warn"],
    {
      SHELLS_VALIDATE_RESPONSES: "1",
      SHELLS_BINDINGS_CA_FILE: caFile,
      SHELLS_EGRESS_DECISION_WINDOW_SECONDS: "1",
      ...options.env,
    },
  );
  const server = await startServer({
    ...loaded,
    egressTestHosts: {
      "allowed.test": ["127.0.0.1"],
      "private.test": ["10.1.2.3"],
      "metadata.test": ["169.254.169.254"],
      ...options.testHosts,
    },
  });
  const api = { url: server.url, token: readFileSync(join(dataDir, "admin-token"), "utf8").trim() };
  const shellIds: string[] = [];
  const close = async () => {
    for (const id of shellIds)
      await call(api, "DELETE", `/api/v1/shells/${id}`).catch(() => undefined);
    await server.close();
    upstream.close();
    secured.close();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const policy = await call(api, "PATCH", "/api/v1/org/policy", {
      egress: { allowCidrs: ["127.0.0.1/32", ...(options.allowCidrs ?? [])] },
    });
    expect(policy.status).toBe(200);
    const binding = await call(api, "POST", "/api/v1/bindings", {
      name: "echo",
      upstream: `https://127.0.0.1:${securedPort}`,
      inject: "Authorization: Bearer {secret}",
      paths: ["/v1/*"],
      methods: ["GET"],
      secret: options.secret,
    });
    expect(binding.status, JSON.stringify(binding.body)).toBe(201);
  } catch (error) {
    await close();
    throw error;
  }
  const createShells: EgressFixture["createShells"] = async ({ internet, bound, allow = [] }) => {
    const open = await call<{ id: string; network: string; status: string }>(
      api,
      "POST",
      "/api/v1/shells",
      {
        ...internet,
        egress: {
          mode: "allowlist",
          allow: ["allowed.test", ...allow, "private.test", "metadata.test"],
        },
      },
    );
    expect(open.status, JSON.stringify(open.body)).toBe(201);
    shellIds.push(open.body.id);
    expect(open.body).toMatchObject({ network: "internet", status: "running" });
    const sealed = await call<{ id: string; network: string }>(api, "POST", "/api/v1/shells", {
      ...bound,
      bindings: ["echo"],
    });
    expect(sealed.status, JSON.stringify(sealed.body)).toBe(201);
    shellIds.push(sealed.body.id);
    expect(sealed.body.network).toBe("sealed");
    return { internetShell: open.body.id, boundShell: sealed.body.id };
  };
  const exec: EgressFixture["exec"] = async (shellId, command) => {
    const res = await call<{ exitCode: number; stdout: string; stderr: string }>(
      api,
      "POST",
      `/api/v1/shells/${shellId}/exec`,
      {
        command: typeof command === "string" ? ["bash", "-c", command] : command,
        timeoutMs: options.execTimeoutMs ?? 60_000,
      },
    );
    expect(res.status).toBe(200);
    return res.body;
  };
  return { server, api, dataDir, upstreamPort, securedAuth, createShells, exec, close };
}
