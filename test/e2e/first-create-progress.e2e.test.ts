import ShellsClient, { ProvisioningError, type Scope } from "@l1fe/shells";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SimulatorBackend } from "@shells/sandbox";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/**
 * A first create of a language whose image is not built: the simulator models a build of five
 * steps over a second and a half, so no real image build is ever covered by a test timeout.
 */
const BUILD_MS = 1500;

function newServer(
  simulator = new SimulatorBackend({ imageBuildMs: BUILD_MS }),
): Promise<TestServer> {
  return startTestServer({ backends: [simulator] });
}

beforeAll(() => {
  // The CLI and the MCP server run as users run them: the compiled binaries.
  execFileSync(
    process.execPath,
    [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/cli", "apps/mcp"],
    { cwd: repoRoot, stdio: "inherit" },
  );
});

describe("a first create of a language whose image is not built", () => {
  let server: TestServer;
  let client: ShellsClient;
  const simulator = new SimulatorBackend({ imageBuildMs: BUILD_MS });

  beforeAll(async () => {
    server = await newServer(simulator);
    client = new ShellsClient({ baseUrl: server.url, token: server.token });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("answers provisioning at once, reports the build's steps, then runs", async () => {
    const created = await client.create({ language: "python" });
    expect(created.status).toBe("provisioning");
    expect(created.statusReason).toMatch(/python image/);

    const seen: string[] = [];
    const running = await client.waitUntilRunning(created.id, {
      onProgress: (reason) => seen.push(reason),
      intervalMs: 50,
    });
    expect(running.status).toBe("running");
    expect(seen.some((reason) => /step \d\/5 \(\d+%\)/.test(reason))).toBe(true);
    const exec = await client.exec(running.id, { command: ["echo", "ready"] });
    expect(exec.stdout).toBe("ready\n");
  });

  it("shares one build between two first creates and keeps a create of a built language synchronous", async () => {
    const [a, b] = await Promise.all([
      client.create({ language: "node" }),
      client.create({ language: "node" }),
    ]);
    expect([a.status, b.status]).toEqual(["provisioning", "provisioning"]);
    await Promise.all([
      client.waitUntilRunning(a.id, { intervalMs: 50 }),
      client.waitUntilRunning(b.id, { intervalMs: 50 }),
    ]);
    expect(simulator.imageBuilds.get("node")).toBe(1);
    const again = await client.create({ language: "node" });
    expect(again.status).toBe("running");
  });

  it("prints a progress line from shells create, and answers at once with --no-wait", async () => {
    const env = { ...process.env, SHELLS_URL: server.url, SHELLS_API_TOKEN: server.token };
    const noWait = await runCli(["create", "-l", "go", "--no-wait", "--json"], env);
    expect(noWait.exitCode).toBe(0);
    expect(JSON.parse(noWait.stdout).status).toBe("provisioning");

    const run = await runCli(["create", "-l", "rust", "--json"], env);
    expect(run.exitCode).toBe(0);
    expect(run.stderr).toMatch(/provisioning .*: building the rust image: step \d\/5/);
    expect(JSON.parse(run.stdout).status).toBe("running");
  });

  it("sends MCP progress notifications to a client that asked, and answers the running shell", async () => {
    const owner = client;
    const agent = await owner.agents.create({ name: "progress-agent" });
    const scopes: Scope[] = [
      "shells:agent:invoke",
      "shells:instances:read",
      "shells:instances:create",
      "shells:instances:control",
    ];
    const { token } = await owner.keys.create({
      name: "mcp",
      scopes,
      principal: { type: "agent", id: agent.id },
    });
    await owner.entitlements.grant({
      entitlement: "shells.agent.invoke",
      principal: { type: "agent", id: agent.id },
    });
    const mcp = new Client({ name: "shells-e2e", version: "0.0.0" });
    await mcp.connect(
      new StdioClientTransport({
        command: process.execPath,
        args: [join(repoRoot, "apps/mcp/bin/shells-mcp.js")],
        env: { PATH: process.env["PATH"] ?? "", SHELLS_URL: server.url, SHELLS_API_TOKEN: token },
        stderr: "ignore",
      }),
    );
    try {
      const progress: string[] = [];
      const result = await mcp.callTool(
        { name: "shells_create", arguments: { language: "bash" } },
        undefined,
        { onprogress: (event) => progress.push(event.message ?? ""), resetTimeoutOnProgress: true },
      );
      expect(result.isError).toBeFalsy();
      expect((result.structuredContent as { status: string }).status).toBe("running");
      expect(progress.some((message) => /building the bash image/.test(message))).toBe(true);
    } finally {
      await mcp.close();
    }
  });

  it("sends the same progress over the server's own /mcp endpoint (streamable HTTP)", async () => {
    // A server of its own: its simulator has built no image yet.
    const fresh = await newServer();
    const owner = new ShellsClient({ baseUrl: fresh.url, token: fresh.token });
    const agent = await owner.agents.create({ name: "http-progress-agent" });
    const { token } = await owner.keys.create({
      name: "mcp-http",
      scopes: ["shells:agent:invoke", "shells:instances:read", "shells:instances:create"],
      principal: { type: "agent", id: agent.id },
    });
    await owner.entitlements.grant({
      entitlement: "shells.agent.invoke",
      principal: { type: "agent", id: agent.id },
    });
    const mcp = new Client({ name: "shells-e2e-http", version: "0.0.0" });
    await mcp.connect(
      new StreamableHTTPClientTransport(new URL(`${fresh.url}/mcp`), {
        requestInit: { headers: { authorization: `Bearer ${token}` } },
      }),
    );
    try {
      const progress: string[] = [];
      const result = await mcp.callTool(
        { name: "shells_create", arguments: { language: "python" } },
        undefined,
        { onprogress: (event) => progress.push(event.message ?? ""), resetTimeoutOnProgress: true },
      );
      expect(result.isError).toBeFalsy();
      expect((result.structuredContent as { status: string }).status).toBe("running");
      expect(progress.some((message) => /building the python image/.test(message))).toBe(true);
      // Without a progressToken the call answers at once, as JSON, with the provisioning shell.
      const quick = await mcp.callTool({ name: "shells_create", arguments: { language: "go" } });
      expect((quick.structuredContent as { status: string }).status).toBe("provisioning");
    } finally {
      await mcp.close();
      await fresh.close();
    }
  });
});

// The container backend needs root (and the host checks `shells doctor` runs).
describe.runIf(process.getuid?.() === 0)(
  "a first container shell of a language on an empty images dir",
  () => {
    let server: TestServer;
    let scratch: string;
    const path = process.env.PATH;

    beforeAll(async () => {
      // The image builder is a stand-in `mmdebstrap` that prints mmdebstrap's progress lines and
      // copies the cached bash image: the real backend's build path runs in seconds.
      scratch = mkdtempSync(join(tmpdir(), "shells-first-create-"));
      const cache = process.env.SHELLS_TEST_IMAGE_CACHE ?? "/var/cache/shells-test/images";
      const bash = readdirSync(join(cache, "bash")).filter((entry) => !entry.startsWith("."));
      writeFileSync(
        join(scratch, "mmdebstrap"),
        [
          "#!/bin/sh",
          'for last; do :; done; target="$last"',
          "echo 'I: downloading packages with apt...' >&2; sleep 0.5",
          "echo 'I: extracting archives...' >&2; sleep 0.5",
          `cp -a ${join(cache, "bash", bash.sort().at(-1) ?? "none", "rootfs")} "$target"`,
          "echo 'I: success' >&2",
        ].join("\n"),
        { mode: 0o755 },
      );
      process.env.PATH = `${scratch}:${path ?? ""}`;
      server = await startTestServer({
        backend: "container",
        env: { SHELLS_IMAGES_DIR: join(scratch, "images") },
      });
    });
    afterAll(async () => {
      process.env.PATH = path;
      await server?.close();
      rmSync(scratch, { recursive: true, force: true });
    });

    it("answers provisioning with the build's progress, then runs real commands", async () => {
      const client = new ShellsClient({ baseUrl: server.url, token: server.token });
      const created = await client.create({ language: "bash", runtime: "container" });
      expect(created).toMatchObject({ status: "provisioning", backend: "container" });
      const seen: string[] = [];
      const running = await client.waitUntilRunning(created.id, {
        onProgress: (reason) => seen.push(reason),
        intervalMs: 50,
      });
      expect(running.status).toBe("running");
      expect(seen.some((reason) => /\(\d+%\)$/.test(reason))).toBe(true);
      const exec = await client.exec(running.id, { command: ["sh", "-c", "echo real"] });
      expect(exec.stdout).toBe("real\n");
      await client.delete(running.id);
    });
  },
);

describe("a first create whose image build fails", () => {
  it("ends in error with the build's reason, which waitUntilRunning throws", async () => {
    const server = await newServer(
      new SimulatorBackend({
        imageBuildMs: BUILD_MS,
        imageBuildError: "the Debian mirror did not answer",
      }),
    );
    try {
      const client = new ShellsClient({ baseUrl: server.url, token: server.token });
      const created = await client.create({ language: "python" });
      expect(created.status).toBe("provisioning");
      const failure = await client
        .waitUntilRunning(created.id, { intervalMs: 50 })
        .catch((error: unknown) => error);
      expect(failure).toBeInstanceOf(ProvisioningError);
      expect((failure as ProvisioningError).code).toBe("provisioning_failed");
      expect((failure as ProvisioningError).message).toMatch(/Debian mirror did not answer/);
      expect((await client.get(created.id)).status).toBe("error");
    } finally {
      await server.close();
    }
  });
});

/** Runs the built `shells` binary with `env`. */
function runCli(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ exitCode: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(repoRoot, "apps/cli/bin/shells.js"), ...args], {
      cwd: repoRoot,
      env,
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("close", (exitCode) => resolve({ exitCode, stdout, stderr }));
    child.stdin.end();
  });
}
