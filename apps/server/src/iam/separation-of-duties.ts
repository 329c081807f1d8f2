import type { Kysely } from "kysely";
import type { Database } from "../store/schema.js";
import type { Caller } from "./principal.js";

/** A principal of an org, by kind and id. */
interface PrincipalRef {
  type: "user" | "agent";
  id: string;
}

/** The request side of an approval, as stored. */
export interface ApprovalRequest {
  org_id: string;
  requested_by_type: "user" | "agent";
  requested_by_id: string;
  requested_key_id: string | null;
}

/** Agents created or keyed through other agents are followed this deep, no further. */
const MAX_CONTROL_DEPTH = 8;

/**
 * Why `approver` may not decide `request`, or null when they may. Separation of duties means the
 * person who decides is not the person who asked — and "the person" is everyone who controls a
 * credential involved, not the principal it names:
 *
 * - agents never approve (nobody answers for them but whoever controls them);
 * - the people behind the request are the requester (a user), whoever minted the key it was made
 *   with, and, for an agent, its creator and everyone who ever minted one of its keys — each
 *   followed through agents they control;
 * - the people behind the decision are the approver and whoever minted the key they decide with;
 * - the two sets must not meet.
 *
 * This blocks granting your own request through an agent you created or keyed, or through a key
 * minted for an approver.
 */
export async function separationOfDutiesConflict(
  db: Kysely<Database>,
  request: ApprovalRequest,
  approver: Caller,
): Promise<string | null> {
  if (approver.actor.type !== "user") return "agents never decide approvals";
  const orgId = request.org_id;
  const requesters = await peopleBehind(
    db,
    orgId,
    { type: request.requested_by_type, id: request.requested_by_id },
    request.requested_key_id,
  );
  const deciders = await peopleBehind(db, orgId, approver.actor, approver.keyId);
  if (deciders.has(request.requested_by_id) && request.requested_by_type === "user")
    return "approvers cannot decide their own request";
  for (const person of deciders) {
    if (requesters.has(person))
      return request.requested_by_type === "agent"
        ? "the approver controls the agent that made the request"
        : "the approver's credential was minted by the requester, or the requester's by the approver";
  }
  return null;
}

/** The users who control an act by `principal` made with `keyId`: the principal's people and the key's minter's. */
async function peopleBehind(
  db: Kysely<Database>,
  orgId: string,
  principal: PrincipalRef,
  keyId: string | null,
): Promise<Set<string>> {
  const people = new Set<string>();
  const seen = new Set<string>();
  const visit = async (who: PrincipalRef, depth: number): Promise<void> => {
    const key = `${who.type}:${who.id}`;
    if (seen.has(key) || depth > MAX_CONTROL_DEPTH) return;
    seen.add(key);
    if (who.type === "user") {
      people.add(who.id);
      return;
    }
    for (const controller of await controllersOfAgent(db, orgId, who.id))
      await visit(controller, depth + 1);
  };
  await visit(principal, 0);
  if (keyId) {
    const key = await db
      .selectFrom("api_keys")
      .select(["created_by_type", "created_by_id"])
      .where("org_id", "=", orgId)
      .where("id", "=", keyId)
      .executeTakeFirst();
    if (key?.created_by_type && key.created_by_id)
      await visit({ type: key.created_by_type, id: key.created_by_id }, 0);
  }
  return people;
}

/** An agent's creator and everyone who minted one of its keys (revoked ones included). */
async function controllersOfAgent(
  db: Kysely<Database>,
  orgId: string,
  agentId: string,
): Promise<PrincipalRef[]> {
  const agent = await db
    .selectFrom("agents")
    .select(["created_by_type", "created_by_id"])
    .where("org_id", "=", orgId)
    .where("id", "=", agentId)
    .executeTakeFirst();
  const minters = await db
    .selectFrom("api_keys")
    .select(["created_by_type", "created_by_id"])
    .where("org_id", "=", orgId)
    .where("principal_type", "=", "agent")
    .where("principal_id", "=", agentId)
    .execute();
  return [agent, ...minters].flatMap((row) =>
    row?.created_by_type && row.created_by_id
      ? [{ type: row.created_by_type, id: row.created_by_id }]
      : [],
  );
}
