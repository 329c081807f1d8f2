import { roleAtLeast, type Role, type Scope } from "@shells/contract";
import { AppError } from "../errors.js";
import type { ActivityService } from "../services/activity-service.js";
import { actorOf, type Caller } from "./principal.js";

/** What an operation needs from its caller. */
export interface Permission {
  scope: Scope;
  minRole?: Role | undefined;
}

/**
 * Refuses a caller that lacks the scope or the role an operation needs, and records the refusal.
 * Every scoped route in the route table, and every tool behind the agent gate, passes through here
 * before any work is done.
 */
export async function requirePermission(
  activity: ActivityService,
  caller: Caller,
  permission: Permission,
  operation: string,
): Promise<void> {
  const missingScope = !caller.scopes.includes(permission.scope);
  const missingRole =
    permission.minRole !== undefined && !roleAtLeast(caller.role, permission.minRole);
  if (!missingScope && !missingRole) return;
  const details = missingScope
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
  throw new AppError(
    "forbidden",
    missingScope
      ? `This operation needs the scope ${permission.scope}.`
      : `This operation needs the ${permission.minRole ?? ""} role; you are ${caller.role}.`,
    details,
  );
}
