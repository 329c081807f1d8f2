import type { ApprovalGate } from "../orchestrator/approval-gate.js";
import type { RunService } from "../orchestrator/run-service.js";
import type { ShellService } from "../orchestrator/shell-service.js";
import type { Handlers } from "./register-routes.js";

/** Approvals: list, inspect, grant (which runs the held action), deny, and withdraw. */
export function approvalHandlers(
  gate: ApprovalGate,
  shells: ShellService,
  runs: RunService,
): Pick<
  Handlers,
  "listApprovals" | "getApproval" | "grantApproval" | "denyApproval" | "withdrawApproval"
> {
  return {
    listApprovals: async ({ caller, query }) => ({ items: await gate.list(caller, query.state) }),
    getApproval: async ({ caller, params }) => gate.get(caller, params.id),
    grantApproval: async ({ caller, params, body }) =>
      shells.grantApproval(caller, params.id, body.reason),
    denyApproval: async ({ caller, params, body }) => {
      await gate.decide(caller, params.id, "denied", body.reason);
      return gate.get(caller, params.id);
    },
    withdrawApproval: async ({ caller, params, body }) => {
      const row = await gate.withdraw(caller, params.id, body.reason);
      // A run waiting for review ends `cancelled` now (reading it settles it).
      if (row.action === "run") await runs.get(caller, row.shell_id);
      return gate.get(caller, params.id);
    },
  };
}
