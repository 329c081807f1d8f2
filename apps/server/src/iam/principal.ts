import { ROLE_SCOPES, type Principal, type Role, type Scope } from "@shells/contract";
import type { Kysely } from "kysely";
import type { Database } from "../store/schema.js";

/** The authenticated caller of a request. Every store query takes its org from here. */
export type Caller = Principal;

/**
 * Builds the caller for a credential held by a user or an agent, reading the holder's role and
 * entitlements now (not when the credential was made): demoting, disabling or removing a holder
 * takes effect at their next request. Returns null when the holder is gone or disabled.
 *
 * Effective scopes are the credential's scopes within what the holder's role allows.
 */
export async function resolveCaller(
  db: Kysely<Database>,
  holder: { orgId: string; type: "user" | "agent"; id: string },
  credential: { keyId: string | null; scopes: readonly Scope[]; csrfToken?: string },
): Promise<Caller | null> {
  const role = await activeHolderRole(db, holder.orgId, holder);
  if (!role) return null;
  const allowed = ROLE_SCOPES[role];
  const entitlements = await db
    .selectFrom("entitlements")
    .select("entitlement")
    .where("org_id", "=", holder.orgId)
    .where("principal_type", "=", holder.type)
    .where("principal_id", "=", holder.id)
    .execute();
  return {
    orgId: holder.orgId,
    actor: { type: holder.type, id: holder.id },
    role,
    keyId: credential.keyId,
    scopes: credential.scopes.filter((s) => allowed.includes(s)),
    entitlements: entitlements.map((e) => e.entitlement).sort(),
    ...(credential.csrfToken ? { csrfToken: credential.csrfToken } : {}),
  };
}

/**
 * Why an API key no longer works — `revoked`, or `expired` once its expiry has passed — or null
 * while it does. Every use of a key (a request, a live terminal's standing, an approved action run
 * as its requester) asks this one question, so an expired key is refused everywhere a revoked one
 * is.
 */
export function keyLapse(
  key: { revoked_at: string | null; expires_at: string | null },
  nowMs: number = Date.now(),
): "revoked" | "expired" | null {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && Date.parse(key.expires_at) <= nowMs) return "expired";
  return null;
}

/** How a refusal says why a key stopped working: "was revoked" or "expired". */
export function lapseText(lapse: "revoked" | "expired"): string {
  return lapse === "revoked" ? "was revoked" : "expired";
}

/** The role of an org's user or agent, or null when there is none or it is disabled. */
export async function activeHolderRole(
  db: Kysely<Database>,
  orgId: string,
  holder: { type: "user" | "agent"; id: string },
): Promise<Role | null> {
  const table = holder.type === "user" ? "users" : "agents";
  const row = await db
    .selectFrom(table)
    .select(["role", "disabled_at"])
    .where("org_id", "=", orgId)
    .where("id", "=", holder.id)
    .executeTakeFirst();
  return row && !row.disabled_at ? row.role : null;
}

/** The activity-history actor of a caller. */
export function actorOf(caller: Caller): { type: "user" | "agent"; id: string; keyId?: string } {
  return {
    type: caller.actor.type,
    id: caller.actor.id,
    ...(caller.keyId ? { keyId: caller.keyId } : {}),
  };
}
