import { AgentTool } from "@shells/contract";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema,
  ErrorCode as McpErrorCode,
  ListToolsRequestSchema,
  McpError,
  type CallToolResult,
  type Implementation,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import { UNEXPECTED_FAILURE, renderToolError, toToolFailure } from "./tool-errors.js";
import { renderToolResult, toolDefinitions } from "./tool-table.js";

/**
 * Runs one tool through the agent gate and resolves to the tool's result (the gate's `result`).
 * Failures reject with a value carrying `{ code, message, details }`: the SDK's `ShellsError` over
 * HTTP, the server's `AppError` in process. `signal` fires when the MCP client cancels the call.
 */
export type InvokeTool = (
  tool: AgentTool,
  args: Record<string, unknown>,
  signal: AbortSignal,
) => Promise<unknown>;

/** Options of {@link createShellsMcpServer}. */
export interface ShellsMcpServerOptions {
  /**
   * Waits for a `provisioning` shell (a first create of a language builds its image, about a
   * minute) to settle, calling `onProgress` with each new status reason, and resolves to the
   * shell. Given, a `shells_create` whose client asked for progress (a `progressToken`) answers
   * once the shell runs, sending `notifications/progress` meanwhile so the client does not time
   * out; without a token the call answers the `provisioning` shell at once.
   */
  waitForShell?: (
    shellId: string,
    onProgress: (statusReason: string) => void,
    signal: AbortSignal,
  ) => Promise<unknown>;
  /**
   * Called with a failure that carries no stable code (a bug, not a refusal). The model only sees
   * `internal`; this is where the error itself is logged.
   */
  onUnexpectedError?: (error: unknown, tool: AgentTool) => void;
}

/** What the server tells a model about itself when it connects. */
const INSTRUCTIONS = [
  "Shells runs code in isolated sandboxes ('shells') governed by your organization.",
  "Typical flow: shells_create → shells_exec (repeat) → shells_action (snapshot, logs, …) → shells_action delete when done.",
  "Every call goes through the agent gate: it needs the shells.agent.invoke entitlement plus the permission of the operation, and is recorded in the org's activity log.",
  "Destructive capabilities (stop, wipe_state, reinstall_os, delete) may be gated by the org: ask the user before confirming one, and never retry a pending approval.",
].join("\n");

let definitions: Tool[] | undefined;

function isProvisioning(result: unknown): result is { id: string; status: "provisioning" } {
  return (
    typeof result === "object" &&
    result !== null &&
    (result as { status?: unknown }).status === "provisioning" &&
    typeof (result as { id?: unknown }).id === "string"
  );
}

/**
 * Builds an MCP server that serves the Shells tools through `invoke`. Connect it to a transport:
 * stdio in `shells-mcp`, streamable HTTP at the control plane's `/mcp`.
 *
 * It is the SDK's low-level `Server`, not `McpServer`: the tools' input schemas are generated from
 * the contract and the arguments are validated once, by the gate, so a bad argument gets the same
 * `validation_failed` (and the same activity record) through every door; `McpServer` would
 * validate (and answer) first. A result or failure becomes a tool result — `structuredContent` plus
 * a text a model reads, failures with `isError` and the stable code. An unknown tool name is a
 * protocol error (-32602), as MCP asks.
 */
export function createShellsMcpServer(
  invoke: InvokeTool,
  info: Implementation,
  options: ShellsMcpServerOptions = {},
): Server {
  const server = new Server(info, { capabilities: { tools: {} }, instructions: INSTRUCTIONS });
  server.setRequestHandler(ListToolsRequestSchema, () => {
    definitions ??= toolDefinitions();
    return { tools: definitions };
  });
  server.setRequestHandler(
    CallToolRequestSchema,
    async (request, extra): Promise<CallToolResult> => {
      const tool = AgentTool.safeParse(request.params.name);
      if (!tool.success) {
        throw new McpError(
          McpErrorCode.InvalidParams,
          `Unknown tool ${JSON.stringify(request.params.name)}; tools/list names the tools.`,
        );
      }
      let result: unknown;
      try {
        result = await invoke(tool.data, request.params.arguments ?? {}, extra.signal);
        const progressToken = request.params._meta?.progressToken;
        if (
          tool.data === "shells_create" &&
          options.waitForShell &&
          progressToken !== undefined &&
          isProvisioning(result)
        ) {
          let step = 0;
          result = await options.waitForShell(
            result.id,
            (statusReason) => {
              step += 1;
              void extra
                .sendNotification({
                  method: "notifications/progress",
                  params: { progressToken, progress: step, message: statusReason },
                })
                .catch(() => undefined);
            },
            extra.signal,
          );
        }
      } catch (error) {
        const failure = toToolFailure(error);
        if (failure === UNEXPECTED_FAILURE) options.onUnexpectedError?.(error, tool.data);
        return renderToolError(failure);
      }
      const rendered = renderToolResult(tool.data, result);
      return {
        content: [{ type: "text", text: rendered.text }],
        structuredContent: rendered.structuredContent,
      };
    },
  );
  return server;
}
