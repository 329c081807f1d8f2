import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { createShellsMcpServer } from "@shells/mcp-tools";
import type { Shell } from "@shells/contract";
import type { FastifyInstance } from "fastify";
import { setTimeout as delay } from "node:timers/promises";
import type { Caller } from "../iam/principal.js";
import { requirePermission } from "../iam/authorize.js";
import type { ActivityService } from "../services/activity-service.js";
import type { AgentGate } from "../iam/agent-gate.js";
import { errorBody } from "./error-handler.js";
import { refuseForeignOrigin, type ServerAddress } from "./origin-check.js";
import type { AuthenticateRequest } from "./request-auth.js";

/** The path the control plane serves MCP at. */
export const MCP_PATH = "/mcp";

/** What the `/mcp` endpoint is built from. */
export interface McpEndpointDeps {
  activity: ActivityService;
  /** The same request authenticator as every route (API keys, JWTs, sessions). */
  authenticate: AuthenticateRequest;
  /** The one agent gate: every tool call runs through it. */
  agentGate: AgentGate;
  /** The listen address and public URL `Host` and `Origin` are checked against. */
  config: ServerAddress;
  /** The version reported to MCP clients. */
  version: string;
  /** Reads a shell as its caller sees it: how a `shells_create` that asked for progress waits. */
  shells?: { get(caller: Caller, idOrName: string): Promise<Shell> };
}

/** How often a create that asked for progress looks at its provisioning shell. */
const PROGRESS_POLL_MS = 250;

/**
 * Whether a request body calls a tool with a `progressToken`: that call is answered as an event
 * stream (progress notifications, then the result); everything else as plain JSON.
 */
function asksForProgress(body: unknown): boolean {
  const messages: unknown[] = Array.isArray(body) ? body : [body];
  return messages.some((message) => {
    if (typeof message !== "object" || message === null) return false;
    const { method, params } = message as { method?: unknown; params?: unknown };
    if (method !== "tools/call" || typeof params !== "object" || params === null) return false;
    const meta = (params as { _meta?: unknown })._meta;
    return typeof meta === "object" && meta !== null && "progressToken" in meta;
  });
}

/**
 * Waits until a shell leaves `provisioning`, calling `onProgress` with each new status reason,
 * and answers the shell as it then stands (`running`, or `error` with its reason).
 */
async function waitForShell(
  read: () => Promise<Shell>,
  onProgress: (statusReason: string) => void,
  signal: AbortSignal,
): Promise<Shell> {
  let reported: string | null = null;
  for (;;) {
    signal.throwIfAborted();
    const shell = await read();
    if (shell.status !== "provisioning") return shell;
    if (shell.statusReason && shell.statusReason !== reported) {
      reported = shell.statusReason;
      onProgress(shell.statusReason);
    }
    await delay(PROGRESS_POLL_MS, undefined, { signal });
  }
}

/**
 * Serves the Shells MCP tools at `POST /mcp` over streamable HTTP, statelessly: each request is
 * authenticated on its own (like every route), gets a fresh MCP server bound to its caller, and is
 * answered with plain JSON — or, for a `shells_create` that sent a `progressToken`, an event stream
 * of progress notifications (a first create of a language builds its image) ending with the
 * result. Stateless because the tools need nothing from a session — no resumable streams, no
 * messages outside a request's own answer — and a session id would be a second credential
 * to bind to the caller and a reason to pin clients to one replica. So `GET` (a server-to-client
 * stream) and `DELETE` (ending a session) answer 405, which MCP clients expect.
 *
 * A tool call is the gate's `agentInvoke` operation: the credential needs the
 * `shells:agent:invoke` scope, then the gate checks the `shells.agent.invoke` entitlement and the
 * tool's own permission, and records the decision. Refusals come back as MCP tool errors.
 */
export function registerMcpEndpoint(app: FastifyInstance, deps: McpEndpointDeps): void {
  app.post(MCP_PATH, async (request, reply) => {
    refuseForeignOrigin(
      { host: request.headers.host, origin: request.headers.origin },
      deps.config,
    );
    const caller = await deps.authenticate(request, reply, MCP_PATH);
    const server = createShellsMcpServer(
      async (tool, args) => {
        await requirePermission(
          deps.activity,
          caller,
          { scope: "shells:agent:invoke" },
          "agentInvoke",
        );
        return (await deps.agentGate.invoke(caller, { tool, arguments: args })).result;
      },
      { name: "shells", title: "Shells", version: deps.version },
      {
        ...(deps.shells
          ? {
              waitForShell: (
                shellId: string,
                onProgress: (reason: string) => void,
                signal: AbortSignal,
              ) => waitForShell(() => deps.shells!.get(caller, shellId), onProgress, signal),
            }
          : {}),
        onUnexpectedError: (error, tool) =>
          request.log.error({ err: error, tool }, "MCP tool call failed unexpectedly"),
      },
    );
    // A tool call that asked for progress is answered as an event stream, so its notifications
    // reach the client while it waits; every other request as plain JSON.
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: !(deps.shells && asksForProgress(request.body)),
    });
    // From here the transport writes the response; Fastify only keeps the request id header.
    reply.hijack();
    reply.raw.setHeader("x-request-id", request.id);
    reply.raw.on("close", () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(request.raw, reply.raw, request.body);
  });
  app.route({
    method: ["GET", "DELETE"],
    url: MCP_PATH,
    handler: async (request, reply) => {
      reply.code(405).header("allow", "POST");
      return errorBody(
        "route_not_found",
        `${request.method} ${MCP_PATH}: this MCP endpoint is stateless (no sessions, no server-to-client stream); send JSON-RPC with POST.`,
        request.id,
      );
    },
  });
}
