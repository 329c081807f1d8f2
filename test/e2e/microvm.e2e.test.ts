/**
 * The microvm runtime class through a real server, as the product page shows it: the seed's SDK
 * snippet (a rust shell) and its MCP flow (a sealed go shell) run verbatim, then the walls are
 * probed from inside a real guest.
 *
 * Slow part: each shell is a QEMU guest restored from a saved VM state (~0.2–1 s under emulation,
 * more on a loaded host); a restore (snapshot back) cold-boots one (~3–5 s). The templates they
 * restore (rust and go, 512 MiB) are made by the test global setup, outside any test timeout.
 */
import ShellsClient, { type Scope, type Shell } from "@l1fe/shells";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { execFileSync } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { missingTools } from "../../packages/backend-microvm/src/internal/test-support.js";
import { startTestServer, type TestServer } from "./harness.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const mcpBin = join(repoRoot, "apps/mcp/bin/shells-mcp.js");
const AGENT_SCOPES: Scope[] = [
  "shells:agent:invoke",
  "shells:instances:read",
  "shells:instances:create",
  "shells:instances:control",
];
/** How each shell's isolation reads on its record, in `/readyz` and in `shells doctor`. */
const ISOLATION = /^microvm \((emulated|kvm)\)$/;

describe.skipIf(missingTools.length > 0)("microvm shells through the server", () => {
  let server: TestServer;
  let shells: ShellsClient;
  /** The rust shell of the SDK snippet; the walls are probed from inside it. */
  let shell: Shell;

  beforeAll(async () => {
    server = await startTestServer({ backend: "container" });
    shells = new ShellsClient({ baseUrl: server.url, token: server.token });
  }, 120_000);
  afterAll(async () => {
    await server?.close();
  }, 120_000);

  it("offers the class on a default server, saying whether it is emulated", async () => {
    const runtimes = await shells.runtimes();
    expect(runtimes.find((r) => r.runtime === "microvm")).toMatchObject({
      available: true,
      backend: "microvm",
      reason: expect.stringMatching(ISOLATION),
    });
    const ready = (await (await fetch(`${server.url}/readyz`)).json()) as {
      runtimes: { runtime: string; reason: string }[];
    };
    expect(ready.runtimes.find((r) => r.runtime === "microvm")?.reason).toMatch(ISOLATION);
  });

  it("runs the SDK snippet verbatim: create, snapshot, mint a terminal, wipe state", async () => {
    // create → act → mint — fully typed
    shell = await shells.create({ language: "rust", runtime: "microvm" });
    await shells.action(shell.id, "snapshot");
    const term = await shells.term(shell.id);
    await shells.action(shell.id, "wipe_state");

    expect(shell).toMatchObject({
      status: "running",
      runtime: "microvm",
      backend: "microvm",
      isolation: expect.stringMatching(ISOLATION),
    });
    expect(term.token).toEqual(expect.any(String));
    const result = await shells.exec(shell.id, { command: ["rustc", "--version"] });
    expect(result).toMatchObject({ exitCode: 0, stdout: expect.stringMatching(/^rustc \d+\./) });
    expect((await shells.snapshots(shell.id)).map((s) => s.name)).toHaveLength(1);
  }, 180_000);

  it("restores a snapshot of a microvm's disk", async () => {
    await shells.exec(shell.id, { command: ["sh", "-c", "echo v1 > /workspace/doc.txt"] });
    await shells.action(shell.id, "snapshot", { name: "before" });
    await shells.exec(shell.id, { command: ["sh", "-c", "echo v2 > /workspace/doc.txt"] });
    await shells.action(shell.id, "restore", { snapshot: "before" });
    const read = await shells.exec(shell.id, { command: ["cat", "/workspace/doc.txt"] });
    expect(read).toMatchObject({ exitCode: 0, stdout: "v1\n" });
  }, 180_000);

  it("runs a different kernel from the host's", async () => {
    const result = await shells.exec(shell.id, { command: ["uname", "-r"] });
    expect(result.exitCode).toBe(0);
    expect(result.stdout.trim()).toMatch(/cloud-amd64$/);
    expect(result.stdout.trim()).not.toBe(release());
  });

  it("does not see the host's files", async () => {
    const marker = `/tmp/shells-microvm-e2e-${process.pid}`;
    writeFileSync(marker, "host");
    try {
      const result = await shells.exec(shell.id, {
        command: [
          "sh",
          "-c",
          'for p in "$@"; do test -e "$p" && echo "visible $p"; done; echo checked',
          "sh",
          marker,
          join(server.dataDir, "shells.db"),
          join(repoRoot, "package.json"),
        ],
      });
      expect(result).toMatchObject({ exitCode: 0, stdout: "checked\n" });
    } finally {
      rmSync(marker, { force: true });
    }
  });

  it("reaches neither the host's loopback, the control plane nor the metadata address when sealed", async () => {
    const port = new URL(server.url).port;
    const result = await shells.exec(shell.id, {
      command: [
        "bash",
        "-c",
        // Each target in its own subshell: a refused or unreachable connect prints "closed".
        'ls /sys/class/net; for t in "$@"; do (exec 3<>"/dev/tcp/${t%:*}/${t#*:}") 2>/dev/null && echo "open $t" || echo "closed $t"; done',
        "bash",
        `127.0.0.1:${port}`,
        `10.0.2.2:${port}`,
        "169.254.169.254:80",
      ],
      timeoutMs: 30_000,
    });
    expect(result.stdout.split("\n").filter(Boolean)).toEqual([
      "lo",
      `closed 127.0.0.1:${port}`,
      `closed 10.0.2.2:${port}`,
      "closed 169.254.169.254:80",
    ]);
  }, 60_000);

  it("ends a busy loop with wall_clock and the shell stays usable", async () => {
    const looped = await shells.exec(shell.id, {
      command: ["sh", "-c", "while :; do :; done"],
      timeoutMs: 2_000,
    });
    expect(looped.killReason).toBe("wall_clock");
    const after = await shells.exec(shell.id, { command: ["echo", "alive"] });
    expect(after).toMatchObject({ exitCode: 0, stdout: "alive\n" });
  }, 60_000);

  it("stops a fork bomb with killReason pids and the shell stays usable", async () => {
    const bomb = await shells.exec(shell.id, {
      command: ["sh", "-c", "f(){ f|f & }; f; sleep 5"],
      timeoutMs: 30_000,
    });
    expect(bomb).toMatchObject({ exitCode: 137, killReason: "pids" });
    const after = await shells.exec(shell.id, { command: ["echo", "alive"] });
    expect(after).toMatchObject({ exitCode: 0, stdout: "alive\n" });
  }, 60_000);

  it("keeps running across a control-plane restart and is re-adopted with its state", async () => {
    await shells.exec(shell.id, { command: ["sh", "-c", "echo kept > /workspace/across.txt"] });
    // A closed server leaves its guests running (QEMU is detached); the next one reconciles them.
    const dataDir = server.dataDir;
    await server.server.close();
    const restarted = await startTestServer({ backend: "container", dataDir });
    const close = () => restarted.close();
    server = {
      ...restarted,
      close: async () => {
        await close();
        rmSync(dataDir, { recursive: true, force: true });
      },
    };
    shells = new ShellsClient({ baseUrl: server.url, token: server.token });
    expect(await shells.get(shell.id)).toMatchObject({ status: "running" });
    const read = await shells.exec(shell.id, { command: ["cat", "/workspace/across.txt"] });
    expect(read).toMatchObject({ exitCode: 0, stdout: "kept\n" });
  }, 120_000);

  describe("an agent over the MCP server (stdio)", () => {
    let client: Client;
    let created: Shell;

    beforeAll(async () => {
      // The stdio server runs as users run it: the compiled binary over the compiled packages.
      execFileSync(
        process.execPath,
        [join(repoRoot, "node_modules/typescript/bin/tsc"), "-b", "apps/mcp"],
        { cwd: repoRoot, stdio: "inherit" },
      );
      const agent = await shells.agents.create({ name: "microvm-agent" });
      const { token } = await shells.keys.create({
        name: "mcp",
        scopes: AGENT_SCOPES,
        principal: { type: "agent", id: agent.id },
      });
      await shells.entitlements.grant({
        entitlement: "shells.agent.invoke",
        principal: { type: "agent", id: agent.id },
      });
      client = new Client({ name: "shells-e2e", version: "0.0.0" });
      await client.connect(
        new StdioClientTransport({
          command: process.execPath,
          args: [mcpBin],
          env: { PATH: process.env["PATH"] ?? "", SHELLS_URL: server.url, SHELLS_API_TOKEN: token },
          stderr: "ignore",
        }),
      );
    }, 120_000);
    afterAll(async () => {
      await client?.close();
    });

    const call = async (name: string, args: Record<string, unknown>) => {
      const result = (await client.callTool({ name, arguments: args })) as CallToolResult;
      const text = result.content.map((part) => (part.type === "text" ? part.text : "")).join("\n");
      expect(result.isError ?? false, text).toBe(false);
      return { structured: result.structuredContent, text };
    };

    it("runs the MCP flow: a sealed go microvm, then wipe_state leaves the sandbox intact", async () => {
      const create = await call("shells_create", {
        language: "go",
        runtime: "microvm",
        network: "sealed",
      });
      created = create.structured as Shell;
      expect(created).toMatchObject({
        language: "go",
        runtime: "microvm",
        network: "sealed",
        status: "running",
        isolation: expect.stringMatching(ISOLATION),
      });
      expect(create.text).toContain("is running");

      const write = await call("shells_exec", {
        shell: created.id,
        command: ["sh", "-c", "echo kept-until-wiped > /workspace/note.txt && go version"],
      });
      expect(write.structured).toMatchObject({
        exitCode: 0,
        stdout: expect.stringMatching(/^go version go/),
      });

      const wipe = await call("shells_action", { shell: created.id, capability: "wipe_state" });
      expect(wipe.structured).toMatchObject({
        capability: "wipe_state",
        message: "filesystem state destroyed, sandbox intact",
        shell: { id: created.id, status: "running" },
      });
      const gone = await call("shells_exec", {
        shell: created.id,
        command: ["test", "-e", "/workspace/note.txt"],
      });
      expect(gone.structured).toMatchObject({ exitCode: 1 });
    }, 180_000);
  });
});
