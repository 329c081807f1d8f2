/**
 * The security boundary, in the order a request meets it:
 *
 * 1. authenticate — `iam/authenticate.ts`: credential → caller (API key, bearer JWT, console
 *    session; secret tokens are minted and matched in `iam/tokens.ts`), holder's role read now.
 * 2. authorize — here: `requirePermission`, called by every scoped route (`routes/register-routes.ts`)
 *    and by the agent gate for each tool: scope, minimum role, and for agents the entitlement.
 * 3. tenant filter — every store query takes `caller.orgId`; another org's row is `not_found`.
 * 4. agent gate — `iam/agent-gate.ts`: the tool door (`/api/agent/invoke`, `/mcp`), each tool held
 *    to the permission of the REST route it mirrors.
 * 5. approval gate — `orchestrator/approval-gate.ts`: destructive actions wait for an approver;
 *    who may approve is `iam/separation-of-duties.ts`.
 */
import { roleAtLeast, type Entitlement, type Role, type Scope } from "@shells/contract";
import { AppError } from "../errors.js";
import type { ActivityService } from "../services/activity-service.js";
import { actorOf, type Caller } from "./principal.js";

/** The entitlement that lets a principal act through the tool door — and an agent act at all. */
export const AGENT_ENTITLEMENT = "shells.agent.invoke" satisfies Entitlement;

/** What an operation needs from its caller. */
export interface Permission {
  scope: Scope;
  minRole?: Role | undefined;
  /** An entitlement every caller needs, agents and users alike (the tool door asks for one). */
  entitlement?: Entitlement | undefined;
}

/**
 * Operations an agent's credential may perform without the `shells.agent.invoke` entitlement:
 * `whoami`, so an agent can see who it is and that it lacks the grant. `agentInvoke` is not an
 * exception: its tool check (the agent gate) asks for the entitlement of every caller and records
 * the decision as the gate's own `agent.invoke` event, so the route itself defers to it.
 */
const UNENTITLED_AGENT_OPERATIONS: ReadonlySet<string> = new Set(["whoami", "agentInvoke"]);

/** The entitlement `caller` needs for `operation`, if any. */
function requiredEntitlement(
  caller: Caller,
  permission: Permission,
  operation: string,
): Entitlement | undefined {
  if (permission.entitlement) return permission.entitlement;
  // An agent is a non-human principal acting on the org's behalf: every door it can reach (REST,
  // the tool door, MCP) asks for the same grant, so an agent without it has no quieter way in.
  if (caller.actor.type === "agent" && !UNENTITLED_AGENT_OPERATIONS.has(operation))
    return AGENT_ENTITLEMENT;
  return undefined;
}

/**
 * Refuses a caller that lacks the entitlement, the scope or the role an operation needs, and records
 * the refusal (`auth.denied`, naming the operation). Every scoped route in the route table, and
 * every tool behind the agent gate, passes through here before any work is done.
 */
export async function requirePermission(
  activity: ActivityService,
  caller: Caller,
  permission: Permission,
  operation: string,
): Promise<void> {
  const entitlement = requiredEntitlement(caller, permission, operation);
  const missingEntitlement =
    entitlement !== undefined && !caller.entitlements.includes(entitlement);
  const missingScope = !caller.scopes.includes(permission.scope);
  const missingRole =
    permission.minRole !== undefined && !roleAtLeast(caller.role, permission.minRole);
  if (!missingEntitlement && !missingScope && !missingRole) return;
  const details = missingEntitlement
    ? { entitlement }
    : missingScope
      ? { missingScope: permission.scope }
      : { requiredRole: permission.minRole, role: caller.role };
  await activity.record({
    orgId: caller.orgId,
    actor: actorOf(caller),
    action: "auth.denied",
    target: null,
    outcome: "denied",
    details: { operation, ...details },
  });
  if (missingEntitlement) {
    throw new AppError(
      "entitlement_required",
      caller.actor.type === "agent"
        ? `An agent needs the ${entitlement} entitlement for ${operation}; ask an org admin to grant ${entitlement}.`
        : `The agent gate needs the ${entitlement} entitlement; ask an org admin to grant ${entitlement}.`,
      details,
    );
  }
  throw new AppError(
    "forbidden",
    missingScope
      ? `This operation needs the scope ${permission.scope}.`
      : `This operation needs the ${permission.minRole ?? ""} role; you are ${caller.role}.`,
    details,
  );
}
