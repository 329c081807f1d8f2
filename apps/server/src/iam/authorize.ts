import type { Scope } from "@shells/contract";
import { AppError } from "../errors.js";
import type { ActivityService } from "../services/activity-service.js";
import type { Caller } from "./authenticate.js";

/**
 * Refuses a caller that lacks the scope an operation needs, and records the refusal. Every route
 * with a scope in the route table passes through here before its handler runs.
 */
export async function requireScope(
  activity: ActivityService,
  caller: Caller,
  scope: Scope,
  operation: string,
): Promise<void> {
  if (caller.scopes.includes(scope)) return;
  await activity.record({
    orgId: caller.orgId,
    actor: {
      type: caller.actor.type,
      id: caller.actor.id,
      ...(caller.keyId ? { keyId: caller.keyId } : {}),
    },
    action: "auth.denied",
    target: null,
    outcome: "denied",
    details: { operation, missingScope: scope },
  });
  throw new AppError("forbidden", `This operation needs the scope ${scope}.`, {
    missingScope: scope,
  });
}
