import {
  ROLE_SCOPES,
  roleAtLeast,
  type ApiKey,
  type Role,
  type RouteBody,
  type Scope,
} from "@shells/contract";
import type { Kysely, Selectable } from "kysely";
import { AppError } from "../errors.js";
import { mintApiKey } from "../iam/tokens.js";
import { activeHolderRole, type Caller } from "../iam/principal.js";
import { nowIso } from "../ids.js";
import type { ApiKeyTable, Database } from "../store/schema.js";
import type { ActivityService } from "./activity-service.js";

const toKey = (row: Selectable<ApiKeyTable>): ApiKey => ({
  id: row.id,
  name: row.name,
  principal: { type: row.principal_type, id: row.principal_id },
  scopes: JSON.parse(row.scopes) as Scope[],
  createdBy:
    row.created_by_type && row.created_by_id
      ? { type: row.created_by_type, id: row.created_by_id }
      : null,
  createdAt: row.created_at,
  lastUsedAt: row.last_used_at,
  revokedAt: row.revoked_at,
  expiresAt: row.expires_at,
});

/**
 * The role of an active user or agent of the org that may hold a key or an entitlement; a
 * disabled, missing or other org's principal is `not_found`.
 */
export async function requireActiveHolder(
  db: Kysely<Database>,
  orgId: string,
  principal: { type: "user" | "agent"; id: string },
): Promise<Role> {
  const role = await activeHolderRole(db, orgId, principal);
  if (!role) {
    throw new AppError("not_found", `No active ${principal.type} ${principal.id}.`, {
      resource: principal.type,
      id: principal.id,
    });
  }
  return role;
}

/**
 * API keys of one org: listing, minting and revoking. Every query is scoped to the caller's org; a
 * key of another org is `not_found`, the same as a missing one. Below admin, a caller sees and
 * revokes only their own keys.
 */
export class KeyService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
  ) {}

  async listKeys(caller: Caller): Promise<ApiKey[]> {
    let q = this.db.selectFrom("api_keys").selectAll().where("org_id", "=", caller.orgId);
    if (!roleAtLeast(caller.role, "admin")) {
      q = q
        .where("principal_type", "=", caller.actor.type)
        .where("principal_id", "=", caller.actor.id);
    }
    return (await q.orderBy("created_at").execute()).map(toKey);
  }

  /**
   * Issues a key. A key acts as its holder, so nobody mints one that acts as another person: a key
   * is for the caller, or minted by a human admin for an agent (a non-human principal the org
   * controls; who minted it is recorded and counts as controlling the agent for separation of
   * duties). Nobody mints more than they hold: the scopes must be within the caller's own effective
   * scopes and within the holder's role.
   */
  async createKey(
    caller: Caller,
    body: RouteBody<"createKey">,
  ): Promise<{ key: ApiKey; token: string }> {
    const principal = body.principal ?? caller.actor;
    const forSelf = principal.type === caller.actor.type && principal.id === caller.actor.id;
    if (!forSelf) {
      const refusal =
        principal.type === "user"
          ? "A key acts as its holder: nobody mints one for another member; they mint their own."
          : caller.actor.type !== "user"
            ? "Only a person mints keys for an agent."
            : !roleAtLeast(caller.role, "admin")
              ? "Keys for an agent need the admin role."
              : null;
      if (refusal) {
        await this.activity.recordFor(
          caller,
          "iam.key.create",
          { type: principal.type, id: principal.id },
          { name: body.name, principal, reason: refusal },
          "denied",
        );
        throw new AppError("forbidden", refusal, {
          principal,
          ...(principal.type === "agent" && caller.actor.type === "user"
            ? { requiredRole: "admin" }
            : {}),
        });
      }
    }
    if (body.expiresAt !== undefined && Date.parse(body.expiresAt) <= Date.now()) {
      throw new AppError("validation_failed", "A key's expiry must be in the future.", {
        expiresAt: body.expiresAt,
      });
    }
    const holderRole = await requireActiveHolder(this.db, caller.orgId, principal);
    const beyondCaller = body.scopes.filter((s) => !caller.scopes.includes(s));
    if (beyondCaller.length > 0) {
      throw new AppError(
        "forbidden",
        `You cannot grant scopes you do not hold: ${beyondCaller.join(", ")}.`,
        { scopes: beyondCaller },
      );
    }
    const beyondRole = body.scopes.filter((s) => !ROLE_SCOPES[holderRole].includes(s));
    if (beyondRole.length > 0) {
      throw new AppError(
        "validation_failed",
        `A ${holderRole} cannot hold: ${beyondRole.join(", ")}.`,
        { scopes: beyondRole },
      );
    }
    const minted = mintApiKey();
    const row: Selectable<ApiKeyTable> = {
      id: minted.keyId,
      org_id: caller.orgId,
      principal_type: principal.type,
      principal_id: principal.id,
      name: body.name,
      key_hash: minted.keyHash,
      scopes: JSON.stringify([...new Set(body.scopes)]),
      created_at: nowIso(),
      revoked_at: null,
      last_used_at: null,
      expires_at: body.expiresAt === undefined ? null : new Date(body.expiresAt).toISOString(),
      created_by_type: caller.actor.type,
      created_by_id: caller.actor.id,
    };
    await this.db.insertInto("api_keys").values(row).execute();
    await this.activity.recordFor(
      caller,
      "iam.key.create",
      { type: "api_key", id: row.id },
      { name: row.name, principal, scopes: body.scopes, expiresAt: row.expires_at },
    );
    return { key: toKey(row), token: minted.token };
  }

  async revokeKey(caller: Caller, keyId: string): Promise<ApiKey> {
    let q = this.db
      .selectFrom("api_keys")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("id", "=", keyId);
    if (!roleAtLeast(caller.role, "admin")) {
      q = q
        .where("principal_type", "=", caller.actor.type)
        .where("principal_id", "=", caller.actor.id);
    }
    const key = await q.executeTakeFirst();
    if (!key)
      throw new AppError("not_found", `No API key ${keyId}.`, { resource: "api_key", id: keyId });
    const revokedAt = key.revoked_at ?? nowIso();
    await this.db
      .updateTable("api_keys")
      .set({ revoked_at: revokedAt })
      .where("id", "=", key.id)
      .execute();
    await this.activity.recordFor(
      caller,
      "iam.key.revoke",
      { type: "api_key", id: key.id },
      { name: key.name },
    );
    return toKey({ ...key, revoked_at: revokedAt });
  }
}
