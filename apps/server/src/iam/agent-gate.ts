import {
  AGENT_TOOL_ARGUMENTS,
  ROUTES,
  type AgentTool,
  type OperationId,
  type RouteBody,
} from "@shells/contract";
import type { z } from "zod";
import { AppError } from "../errors.js";
import { isPendingApproval } from "../orchestrator/approval-gate.js";
import type { FileService } from "../orchestrator/file-service.js";
import type { InterpreterService } from "../orchestrator/interpreter-service.js";
import type { RunService } from "../orchestrator/run-service.js";
import type { ShellService } from "../orchestrator/shell-service.js";
import type { TermService } from "../orchestrator/term-service.js";
import { parseInput } from "../routes/validate-input.js";
import type { ActivityService } from "../services/activity-service.js";
import { AGENT_ENTITLEMENT, requirePermission, type Permission } from "./authorize.js";
import { actorOf, type Caller } from "./principal.js";

type Args<T extends AgentTool> = z.output<(typeof AGENT_TOOL_ARGUMENTS)[T]>;

/**
 * The REST operation each tool mirrors. A tool needs exactly that route's permission — its scope
 * and its minimum role, read from the route table so the two doors cannot drift apart.
 * `shells_files` mirrors its strictest operation (`writeFile`), since one grant covers list, read
 * and write; `shells_action` with `delete` needs what `deleteShell` needs, which is the same.
 */
const TOOL_OPERATION: Record<AgentTool, OperationId> = {
  shells_list: "listShells",
  shells_create: "createShell",
  shells_action: "actOnShell",
  shells_exec: "execInShell",
  shells_term: "mintTermCredential",
  shells_interpreter: "runInterpreter",
  shells_run: "createRun",
  shells_files: "writeFile",
  shells_fork: "forkShell",
};

/** The permission a tool needs: its REST route's scope and minimum role, plus the gate's entitlement. */
export function toolPermission(
  tool: AgentTool,
): Permission & { scope: NonNullable<Permission["scope"]> } {
  const route = ROUTES[TOOL_OPERATION[tool]];
  if (!route.scope) throw new Error(`the route behind ${tool} must be scoped`);
  return {
    scope: route.scope,
    minRole: "minRole" in route ? route.minRole : undefined,
    entitlement: AGENT_ENTITLEMENT,
  };
}

/** Services behind the tools that are not lifecycle operations. */
export interface AgentGateServices {
  terms: TermService;
  interpreters: InterpreterService;
  runs: RunService;
  files: FileService;
  /** Base URL for terminal attach URLs. */
  baseUrl: () => string;
}

/** Longest a `shells_run` call waits for its run before answering with the run as it stands. */
const RUN_WAIT_MS = 15 * 60 * 1000;

/**
 * `POST /api/agent/invoke` and every `/mcp` tool call: the tool door. A call needs the
 * `shells.agent.invoke` entitlement AND the permission of the REST operation the tool mirrors —
 * entitlement plus permission, never either alone, for users and agents alike — then its arguments
 * pass the same validation as the REST body, and it runs the same service code as the REST route.
 * Every decision, allowed or denied, is an `agent.invoke` activity event with the reason.
 */
export class AgentGate {
  constructor(
    private readonly shells: ShellService,
    private readonly activity: ActivityService,
    private readonly services: AgentGateServices,
  ) {}

  async invoke(
    caller: Caller,
    body: RouteBody<"agentInvoke">,
  ): Promise<{ tool: AgentTool; result: unknown }> {
    const { tool } = body;
    const decide = (outcome: "success" | "denied" | "failure", details: Record<string, unknown>) =>
      this.activity.record({
        orgId: caller.orgId,
        actor: actorOf(caller),
        action: "agent.invoke",
        target:
          typeof body.arguments.shell === "string"
            ? { type: "shell", id: body.arguments.shell }
            : null,
        outcome,
        details: { tool, ...details },
      });
    const permission = toolPermission(tool);
    try {
      await requirePermission(this.activity, caller, permission, `agent:${tool}`);
    } catch (error) {
      const missingRole = error instanceof AppError && error.details?.["requiredRole"];
      const reason =
        error instanceof AppError && error.code === "entitlement_required"
          ? `missing entitlement ${AGENT_ENTITLEMENT}`
          : missingRole
            ? `missing role ${permission.minRole ?? ""}`
            : `missing permission ${permission.scope}`;
      await decide("denied", { reason });
      throw error;
    }
    const args = parseInput(AGENT_TOOL_ARGUMENTS[tool], body.arguments, "arguments");
    try {
      const result = await this.#run(caller, tool, args);
      const pending = isPendingApproval(result) ? { pendingApproval: result.approval.id } : {};
      await decide("success", {
        reason: `entitlement ${AGENT_ENTITLEMENT} and permission ${permission.scope}`,
        ...pending,
      });
      return { tool, result };
    } catch (error) {
      await decide("failure", { error: error instanceof AppError ? error.code : "internal" });
      throw error;
    }
  }

  async #run(caller: Caller, tool: AgentTool, args: unknown): Promise<unknown> {
    switch (tool) {
      case "shells_list":
        return this.shells.list(caller, args as Args<"shells_list">);
      case "shells_create":
        return this.shells.requestCreate(caller, args as Args<"shells_create">);
      case "shells_exec": {
        const { shell, ...request } = args as Args<"shells_exec">;
        return this.shells.exec(caller, shell, request);
      }
      case "shells_term": {
        const { shell } = args as Args<"shells_term">;
        return this.services.terms.mint(caller, shell, this.services.baseUrl());
      }
      case "shells_interpreter": {
        const { shell, ...turn } = args as Args<"shells_interpreter">;
        return this.services.interpreters.turn(caller, shell, turn);
      }
      case "shells_run": {
        const run = await this.services.runs.create(caller, args as Args<"shells_run">);
        // A run of a template that asks for review answers its pending approval.
        if (run.status === "pending_approval") return run;
        return this.services.runs.waitFor(caller, run.id, RUN_WAIT_MS);
      }
      case "shells_files": {
        const { shell, op, path, content, encoding } = args as Args<"shells_files">;
        if (op === "list") return { items: await this.services.files.list(caller, shell, path) };
        if (op === "read") {
          const bytes = Buffer.from(await this.services.files.read(caller, shell, path));
          const text = bytes.toString("utf8");
          const asText = encoding === "utf8" && Buffer.from(text, "utf8").equals(bytes);
          return {
            path,
            sizeBytes: bytes.length,
            encoding: asText ? "utf8" : "base64",
            content: asText ? text : bytes.toString("base64"),
          };
        }
        if (content === undefined) {
          const issue = {
            path: "arguments.content",
            message: "write needs content",
            code: "invalid_type",
          };
          throw new AppError(
            "validation_failed",
            "Invalid arguments: shells_files write needs `content`.",
            {
              issues: [issue],
            },
          );
        }
        const data =
          encoding === "base64" ? Buffer.from(content, "base64") : Buffer.from(content, "utf8");
        return this.services.files.write(caller, shell, { path }, data);
      }
      case "shells_fork": {
        const { shell, ...fork } = args as Args<"shells_fork">;
        return this.shells.fork(caller, shell, fork);
      }
      case "shells_action": {
        const { shell, capability, ...options } = args as Args<"shells_action">;
        if (capability === "delete") return this.shells.delete(caller, shell, options.confirm);
        return this.shells.act(caller, shell, capability, options);
      }
    }
  }
}
