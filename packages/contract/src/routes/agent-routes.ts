import type { FileContent, FileInfo } from "../files.js";
import { AgentInvokeRequest, AgentInvokeResult } from "../iam.js";
import type { Page } from "../pages.js";
import type { InterpreterResult, Run } from "../runs.js";
import type { ActionResult, ExecResult, Shell, ShellForkResult } from "../shells.js";
import type { TermCredential } from "../terminals.js";
import type { PendingApproval, RouteSpec } from "./route-spec.js";

/** The agent gate: one route that runs a tool as an agent. */
export const agentRoutes = {
  agentInvoke: {
    method: "POST",
    path: "/api/agent/invoke",
    summary: "The agent gate: run a tool as an agent.",
    description:
      "Needs the `shells.agent.invoke` entitlement AND the permission of the underlying operation (entitlement plus permission, never either alone). Runs the same service code as the REST routes; every decision is an activity event.",
    tag: "agents",
    body: AgentInvokeRequest,
    response: AgentInvokeResult,
    successStatus: 200,
    scope: "shells:agent:invoke",
    example: { body: { tool: "shells_list", arguments: {} }, needs: ["shells:instances:read"] },
  },
} as const satisfies Record<string, RouteSpec>;

/** What each agent tool answers through the gate: the same shape as the REST route it mirrors. */
export interface AgentToolResults {
  /** One page of shells, as `GET /api/v1/shells`. */
  shells_list: Page<Shell>;
  /** A create granted bindings by a template marked `reviewBindings`: a pending approval. */
  shells_create: Shell | PendingApproval;
  /** `delete` answers the deleted shell; a capability parked for an approver, a pending approval. */
  shells_action: ActionResult | Shell | PendingApproval;
  shells_exec: ExecResult;
  shells_term: TermCredential;
  shells_interpreter: InterpreterResult;
  /** The run once it ended (or as it stands after 15 minutes). */
  shells_run: Run | PendingApproval;
  /** `list`: the entries; `read`: the content; `write`: the written file. */
  shells_files: { items: FileInfo[] } | FileContent | FileInfo;
  shells_fork: ShellForkResult;
}
