import { AGENT_TOOL_ARGUMENTS, type AgentTool, type RouteBody, type Scope } from "@shells/contract";
import type { z } from "zod";
import { AppError } from "../errors.js";
import { requirePermission } from "../iam/authorize.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { isPendingApproval } from "../orchestrator/approval-gate.js";
import type { FileService } from "../orchestrator/file-service.js";
import type { InterpreterService } from "../orchestrator/interpreter-service.js";
import type { RunService } from "../orchestrator/run-service.js";
import type { ShellService } from "../orchestrator/shell-service.js";
import type { TermService } from "../orchestrator/term-service.js";

type Args<T extends AgentTool> = z.output<(typeof AGENT_TOOL_ARGUMENTS)[T]>;
import type { ActivityService } from "./activity-service.js";

/** The entitlement the gate requires, on top of each tool's own permission. */
export const AGENT_ENTITLEMENT = "shells.agent.invoke";

/** The permission each tool needs: exactly the scope of the REST route it mirrors. */
const TOOL_SCOPE: Record<AgentTool, Scope> = {
  shells_list: "shells:instances:read",
  shells_create: "shells:instances:create",
  shells_action: "shells:instances:control",
  shells_exec: "shells:instances:control",
  shells_term: "shells:instances:control",
  shells_interpreter: "shells:instances:control",
  shells_run: "shells:instances:create",
  shells_files: "shells:instances:control",
};

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
 * `POST /api/agent/invoke`: the one door for agents. A call needs the `shells.agent.invoke`
 * entitlement AND the permission of the operation it asks for — entitlement plus permission,
 * never either alone — and then runs the same service code as the REST route. Every decision,
 * allowed or denied, is an activity event with the reason.
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
    if (!caller.entitlements.includes(AGENT_ENTITLEMENT)) {
      await decide("denied", { reason: `missing entitlement ${AGENT_ENTITLEMENT}` });
      throw new AppError(
        "entitlement_required",
        `The agent gate needs the ${AGENT_ENTITLEMENT} entitlement; ask an org admin to grant it.`,
        {
          entitlement: AGENT_ENTITLEMENT,
        },
      );
    }
    try {
      await requirePermission(this.activity, caller, { scope: TOOL_SCOPE[tool] }, `agent:${tool}`);
    } catch (error) {
      await decide("denied", { reason: `missing permission ${TOOL_SCOPE[tool]}` });
      throw error;
    }
    const args = parseArguments(tool, body.arguments);
    try {
      const result = await this.#run(caller, tool, args);
      const pending = isPendingApproval(result) ? { pendingApproval: result.approval.id } : {};
      await decide("success", {
        reason: `entitlement ${AGENT_ENTITLEMENT} and permission ${TOOL_SCOPE[tool]}`,
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
        return this.shells.list(
          caller,
          args as z.output<(typeof AGENT_TOOL_ARGUMENTS)["shells_list"]>,
        );
      case "shells_create":
        return this.shells.create(
          caller,
          args as z.output<(typeof AGENT_TOOL_ARGUMENTS)["shells_create"]>,
        );
      case "shells_exec": {
        const { shell, ...request } = args as z.output<
          (typeof AGENT_TOOL_ARGUMENTS)["shells_exec"]
        >;
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
        if (content === undefined)
          throw new AppError("validation_failed", "shells_files write needs `content`.");
        const data =
          encoding === "base64" ? Buffer.from(content, "base64") : Buffer.from(content, "utf8");
        return this.services.files.write(caller, shell, { path }, data);
      }
      case "shells_action": {
        const { shell, capability, ...options } = args as z.output<
          (typeof AGENT_TOOL_ARGUMENTS)["shells_action"]
        >;
        if (capability === "delete") return this.shells.delete(caller, shell, options.confirm);
        return this.shells.act(caller, shell, capability, options);
      }
    }
  }
}

function parseArguments(tool: AgentTool, raw: Record<string, unknown>): unknown {
  const parsed = AGENT_TOOL_ARGUMENTS[tool].safeParse(raw);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map(
    (i) => `${["arguments", ...i.path.map(String)].join(".")}: ${i.message}`,
  );
  throw new AppError("validation_failed", `Invalid arguments for ${tool}: ${problems.join("; ")}`, {
    issues: problems,
  });
}
