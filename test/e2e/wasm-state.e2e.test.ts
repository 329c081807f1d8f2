import ShellsClient, { ValidationError, type Shell } from "@l1fe/shells";
import { WasmBackend } from "@shells/backend-wasm";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./harness.js";

// Real wasm shells through the SDK and MCP: their state (snapshots, restore, wipe, reinstall, the
// disk quota) and the org's isolation floor, on the built server with the real backends.
const available =
  (await new WasmBackend({ stateDir: "/nonexistent" }).availability())[0]?.available === true;

describe.skipIf(!available)(
  "wasm shells' state and the isolation floor, through SDK and MCP",
  () => {
    let server: TestServer;
    let shells: ShellsClient;
    let shell: Shell;
    const mcpClients: Client[] = [];
    const python = async (id: string, code: string) =>
      shells.exec(id, { command: ["python3", "-c", code] });

    beforeAll(async () => {
      server = await startTestServer({ backend: "container" });
      const wasm = server.server.backends.find((b) => b.name === "wasm") as WasmBackend;
      // Loading Pyodide takes seconds of CPU: the pools fill here, outside any test's timeout.
      await wasm.warm(undefined, ["python", "node"]);
      shells = new ShellsClient({ baseUrl: server.url, token: server.token });
      shell = await shells.create({
        language: "python",
        runtime: "wasm",
        resources: { diskMb: 16 },
      });
      await new Promise((resolve) => setTimeout(resolve, 500));
      await wasm.warm(undefined, ["python"]);
    }, 180_000);
    afterAll(async () => {
      for (const client of mcpClients) await client.close();
      await server?.close();
    });

    it("keeps state across execs, and snapshot → change → restore brings the content back", async () => {
      expect(shell).toMatchObject({ runtime: "wasm", status: "running" });
      await python(shell.id, "open('doc.txt','w').write('v1')");
      expect((await python(shell.id, "print(open('doc.txt').read())")).stdout).toBe("v1\n");
      await shells.action(shell.id, "snapshot", { name: "before" });
      await python(shell.id, "open('doc.txt','w').write('v2'); open('extra.txt','w').write('x')");
      const listed = await shells.snapshots(shell.id);
      expect(listed.map((s) => s.name)).toEqual(["before"]);
      expect(listed[0]?.sizeBytes).toBeGreaterThan(0);
      await shells.action(shell.id, "restore", { snapshot: "before" });
      expect(
        (
          await python(
            shell.id,
            "import os; print(open('doc.txt').read(), os.path.exists('extra.txt'))",
          )
        ).stdout,
      ).toBe("v1 False\n");
    }, 60_000);

    it("reinstall_os keeps /workspace and gives a fresh interpreter; wipe_state removes the files", async () => {
      await python(shell.id, "open('/tmp/scratch','w').write('x')");
      await shells.action(shell.id, "reinstall_os");
      expect(
        (
          await python(
            shell.id,
            "import os; print(open('doc.txt').read(), os.path.exists('/tmp/scratch'))",
          )
        ).stdout,
      ).toBe("v1 False\n");
      await shells.action(shell.id, "wipe_state");
      expect((await python(shell.id, "import os; print(os.listdir('/workspace'))")).stdout).toBe(
        "[]\n",
      );
    }, 60_000);

    it("fails writes past diskMb with ENOSPC and kill reason disk, a file upload with quota_exceeded", async () => {
      const full = await python(shell.id, "open('big','wb').write(b'x' * (20 << 20))");
      expect(full.exitCode).not.toBe(0);
      expect(full.stderr).toMatch(/No space left on device/);
      expect(full.killReason).toBe("disk");
      const upload = await fetch(
        `${server.url}/api/v1/shells/${shell.id}/files/content?path=/workspace/upload.bin`,
        {
          method: "PUT",
          headers: {
            authorization: `Bearer ${server.token}`,
            "content-type": "application/octet-stream",
          },
          body: new Uint8Array(17 << 20),
        },
      );
      expect(upload.status).toBe(409);
      expect(((await upload.json()) as { error: { code: string } }).error.code).toBe(
        "quota_exceeded",
      );
      await python(shell.id, "import os; os.remove('big')");
      expect((await python(shell.id, "open('ok','wb').write(b'y' * (8 << 20))")).exitCode).toBe(0);
    }, 60_000);

    it("shows the guest no host file, none of the server's environment and no other shell's files", async () => {
      const other = await shells.create({ language: "python", runtime: "wasm" });
      await python(other.id, "open('/workspace/other-secret.txt','w').write('theirs')");
      const probe = await python(
        shell.id,
        [
          "import os, glob",
          "for p in ['/etc/passwd', '/proc/1/environ', '/root']:",
          "    print(p, os.path.exists(p))",
          "print(sorted(k for k in os.environ if k not in ('HOME', 'PATH')))",
          "print(glob.glob('/**/other-secret.txt', recursive=True))",
        ].join("\n"),
      );
      expect(probe.stdout).toBe("/etc/passwd False\n/proc/1/environ False\n/root False\n[]\n[]\n");
      // Nor through a link to the other shell's host path, by exec or by the files API: the link
      // resolves in the shell's own view, where that path does not exist.
      const hostPath = `${server.dataDir}/wasm/shells/${other.id}/workspace/other-secret.txt`;
      const linked = await python(
        shell.id,
        `import os\nos.symlink(${JSON.stringify(hostPath)}, 'link')\ntry: print(open('link').read())\nexcept OSError: print('unreachable')`,
      );
      expect(linked.stdout).toBe("unreachable\n");
      await expect(shells.files.read(shell.id, "/workspace/link")).rejects.toMatchObject({
        status: 404,
      });
    }, 60_000);

    it("floor wasm admits wasm shells; a floor above wasm refuses them with below_isolation_floor", async () => {
      expect((await shells.policy.get()).isolationFloor).toBe("wasm");
      await shells.policy.update({ isolationFloor: "container" });
      try {
        const refused = await shells
          .create({ language: "node", runtime: "wasm" })
          .catch((error: unknown) => error);
        expect(refused).toBeInstanceOf(ValidationError);
        expect(refused).toMatchObject({
          code: "below_isolation_floor",
          details: { runtime: "wasm", isolationFloor: "container" },
        });
        const mcp = await mcpClient();
        const viaMcp = (await mcp.callTool({
          name: "shells_create",
          arguments: { language: "node", runtime: "wasm" },
        })) as CallToolResult;
        expect(viaMcp.isError).toBe(true);
        expect((viaMcp.structuredContent as { error?: { code?: string } }).error?.code).toBe(
          "below_isolation_floor",
        );
      } finally {
        await shells.policy.update({ isolationFloor: "wasm" });
      }
      const admitted = await shells.create({ language: "node", runtime: "wasm" });
      expect(admitted).toMatchObject({ runtime: "wasm", status: "running" });
    }, 60_000);

    it("an agent creates a wasm shell over MCP and runs node in it", async () => {
      const mcp = await mcpClient();
      const created = (await mcp.callTool({
        name: "shells_create",
        arguments: { language: "node", runtime: "wasm" },
      })) as CallToolResult;
      expect(created.isError ?? false).toBe(false);
      const made = created.structuredContent as Shell;
      expect(made).toMatchObject({ runtime: "wasm", language: "node", status: "running" });
      const ran = (await mcp.callTool({
        name: "shells_exec",
        arguments: { shell: made.id, command: ["node", "-e", "console.log(6 * 7)"] },
      })) as CallToolResult;
      expect(ran.isError ?? false).toBe(false);
      expect(ran.structuredContent).toMatchObject({ exitCode: 0, stdout: "42\n" });
    }, 60_000);

    /** An MCP client over streamable HTTP holding the key of an agent entitled to invoke tools. */
    async function mcpClient(): Promise<Client> {
      const agent = await shells.agents.create({ name: `wasm-agent-${mcpClients.length}` });
      const { token } = await shells.keys.create({
        name: "mcp",
        scopes: [
          "shells:agent:invoke",
          "shells:instances:read",
          "shells:instances:create",
          "shells:instances:control",
        ],
        principal: { type: "agent", id: agent.id },
      });
      await shells.entitlements.grant({
        entitlement: "shells.agent.invoke",
        principal: { type: "agent", id: agent.id },
      });
      const client = new Client({ name: "shells-e2e", version: "0.0.0" });
      await client.connect(
        new StreamableHTTPClientTransport(new URL(`${server.url}/mcp`), {
          requestInit: { headers: { authorization: `Bearer ${token}` } },
        }),
      );
      mcpClients.push(client);
      return client;
    }
  },
);
