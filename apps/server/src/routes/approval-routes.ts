import type { ApprovalGate } from "../orchestrator/approval-gate.js";
import type { ShellService } from "../orchestrator/shell-service.js";
import type { Handlers } from "./register-routes.js";

/** Approvals: list, inspect, grant (which runs the held action) and deny. */
export function approvalHandlers(
  gate: ApprovalGate,
  shells: ShellService,
): Pick<Handlers, "listApprovals" | "getApproval" | "grantApproval" | "denyApproval"> {
  return {
    listApprovals: async ({ caller, query }) => ({ items: await gate.list(caller, query.state) }),
    getApproval: async ({ caller, params }) => gate.get(caller, params.id),
    grantApproval: async ({ caller, params, body }) =>
      shells.grantApproval(caller, params.id, body.reason),
    denyApproval: async ({ caller, params, body }) => {
      await gate.decide(caller, params.id, "denied", body.reason);
      return gate.get(caller, params.id);
    },
  };
}
