import ShellsClient from "@l1fe/shells";
import { ProvisioningError } from "@l1fe/shells";
import { createShellsMcpServer } from "@shells/mcp-tools";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import type { Readable, Writable } from "node:stream";

/**
 * How long a gate call may take: an exec may run for an hour (`ExecRequest.timeoutMs`), plus a
 * margin for its answer. A client that gives up sooner cancels the call, which aborts the request.
 */
const INVOKE_TIMEOUT_MS = 3600_000 + 30_000;

/** The version `shells-mcp` reports to MCP clients. */
export const MCP_SERVER_VERSION = "0.1.0";

/** Where the stdio server reads, writes and logs. */
export interface StdioServerOptions {
  /** `SHELLS_URL` (the control plane's base URL) and `SHELLS_API_TOKEN` (an agent's API key). */
  env: Record<string, string | undefined>;
  stdin: Readable;
  stdout: Writable;
  /** Diagnostics. stdout carries only the protocol, so this is stderr. */
  stderr: Writable;
}

/**
 * Serves the Shells tools over stdio: every tool call is one `POST /api/agent/invoke` through the
 * SDK, with the API key from `SHELLS_API_TOKEN` (the agent's own, holding the
 * `shells.agent.invoke` entitlement). Throws the SDK's `ConfigurationError` when `SHELLS_URL` or
 * `SHELLS_API_TOKEN` is missing or invalid. Resolves once connected; the server closes when stdin
 * ends.
 */
export async function startStdioServer(options: StdioServerOptions): Promise<Server> {
  const shells = new ShellsClient({
    baseUrl: options.env["SHELLS_URL"],
    token: options.env["SHELLS_API_TOKEN"],
    timeoutMs: INVOKE_TIMEOUT_MS,
  });
  const log = (message: string) => options.stderr.write(`shells-mcp: ${message}\n`);
  const server = createShellsMcpServer(
    async (tool, args, signal) => (await shells.invoke(tool, args, { signal })).result,
    { name: "shells-mcp", title: "Shells", version: MCP_SERVER_VERSION },
    {
      waitForShell: (shellId, onProgress, signal) =>
        shells.waitUntilRunning(shellId, { onProgress, signal }).catch((error: unknown) => {
          // A shell that ended in `error` is the answer, with its reason; not a tool failure.
          if (error instanceof ProvisioningError) return error.shell;
          throw error;
        }),
      onUnexpectedError: (error, tool) =>
        log(
          `${tool} failed unexpectedly: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
        ),
    },
  );
  server.onerror = (error) => log(`protocol error: ${error.message}`);
  const transport = new StdioServerTransport(options.stdin, options.stdout);
  options.stdin.on("end", () => void server.close());
  await server.connect(transport);
  log(`serving the Shells tools of ${shells.baseUrl} over stdio`);
  return server;
}
