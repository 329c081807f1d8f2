import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import type { AgentTool } from "@shells/contract";
import { describe, expect, it } from "vitest";
import { createShellsMcpServer, type InvokeTool } from "./shells-mcp-server.js";

/** A connected client of a server whose tool calls go to `invoke`. */
async function connect(invoke: InvokeTool, onUnexpectedError?: (error: unknown) => void) {
  const server = createShellsMcpServer(
    invoke,
    { name: "test", version: "0.0.0" },
    {
      ...(onUnexpectedError ? { onUnexpectedError } : {}),
    },
  );
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  const client = new Client({ name: "test-client", version: "0.0.0" });
  await client.connect(clientSide);
  return client;
}

describe("createShellsMcpServer", () => {
  it("introduces itself and lists the tools", async () => {
    const client = await connect(async () => ({}));
    expect(client.getServerVersion()).toMatchObject({ name: "test" });
    expect(client.getInstructions()).toContain("agent gate");
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual([
      "shells_list",
      "shells_create",
      "shells_action",
      "shells_exec",
      "shells_term",
      "shells_interpreter",
      "shells_run",
      "shells_files",
      "shells_fork",
    ]);
  });

  it("passes the tool and its arguments to the gate unchanged and renders the result", async () => {
    const calls: [AgentTool, Record<string, unknown>][] = [];
    const client = await connect(async (tool, args) => {
      calls.push([tool, args]);
      return { exitCode: 0, stdout: "hi\n", stderr: "", durationMs: 3 };
    });
    const result = (await client.callTool({
      name: "shells_exec",
      arguments: { shell: "sh-1", command: ["echo", "hi"], unknown: 1 },
    })) as CallToolResult;
    expect(calls).toEqual([
      ["shells_exec", { shell: "sh-1", command: ["echo", "hi"], unknown: 1 }],
    ]);
    expect(result.isError).toBeUndefined();
    expect(result.structuredContent).toEqual({
      exitCode: 0,
      stdout: "hi\n",
      stderr: "",
      durationMs: 3,
    });
    expect(result.content).toEqual([
      { type: "text", text: "exit code 0 after 3 ms.\nstdout:\nhi\n\nstderr: (empty)" },
    ]);
  });

  it("answers a refusal of the gate as a tool error with its code", async () => {
    const client = await connect(async () => {
      throw Object.assign(new Error("Invalid arguments for shells_exec: arguments.unknown"), {
        code: "validation_failed",
      });
    });
    const result = (await client.callTool({
      name: "shells_exec",
      arguments: {},
    })) as CallToolResult;
    expect(result.isError).toBe(true);
    expect(result.structuredContent).toMatchObject({ error: { code: "validation_failed" } });
  });

  it("logs an unexpected failure and shows the model only that it happened", async () => {
    const logged: unknown[] = [];
    const bug = new TypeError("boom at secret place");
    const client = await connect(
      async () => {
        throw bug;
      },
      (error) => logged.push(error),
    );
    const result = (await client.callTool({
      name: "shells_list",
      arguments: {},
    })) as CallToolResult;
    expect(result.isError).toBe(true);
    expect(JSON.stringify(result)).not.toContain("secret");
    expect(logged).toEqual([bug]);
  });

  it("refuses an unknown tool as a protocol error", async () => {
    const client = await connect(async () => ({}));
    await expect(client.callTool({ name: "shells_teleport", arguments: {} })).rejects.toThrow(
      /Unknown tool "shells_teleport"/,
    );
  });
});
