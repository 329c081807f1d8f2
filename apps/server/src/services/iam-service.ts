import {
  ROLE_SCOPES,
  roleAtLeast,
  type Agent,
  type ApiKey,
  type EntitlementGrant,
  type Member,
  type Project,
  type Role,
  type RouteBody,
  type Scope,
} from "@shells/contract";
import type { Kysely, Selectable } from "kysely";
import { AppError } from "../errors.js";
import { mintApiKey } from "../iam/tokens.js";
import { activeHolderRole, actorOf, type Caller } from "../iam/principal.js";
import { newId, nowIso } from "../ids.js";
import type {
  AgentTable,
  ApiKeyTable,
  Database,
  EntitlementTable,
  UserTable,
} from "../store/schema.js";
import type { ActivityService } from "./activity-service.js";
import type { PolicyService } from "./policy-service.js";
import { isUniqueViolation } from "../store/unique-violation.js";

const toMember = (row: Selectable<UserTable>): Member => ({
  id: row.id,
  email: row.email,
  role: row.role,
  source: row.source,
  createdAt: row.created_at,
  disabledAt: row.disabled_at,
});

const toAgent = (row: Selectable<AgentTable>): Agent => ({
  id: row.id,
  name: row.name,
  role: row.role,
  createdAt: row.created_at,
  disabledAt: row.disabled_at,
});

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
});

const toGrant = (row: Selectable<EntitlementTable>): EntitlementGrant => ({
  id: row.id,
  entitlement: row.entitlement as EntitlementGrant["entitlement"],
  principal: { type: row.principal_type, id: row.principal_id },
  grantedBy: row.granted_by,
  createdAt: row.created_at,
});

/**
 * Members, agents, API keys, entitlements and projects of one org. Every query is scoped to the
 * caller's org; a row of another org is `not_found`, the same as a missing one.
 */
export class IamService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
    private readonly policies: PolicyService,
  ) {}

  // --- members -------------------------------------------------------------------------------

  async listMembers(caller: Caller): Promise<Member[]> {
    const rows = await this.db
      .selectFrom("users")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .orderBy("created_at")
      .execute();
    return rows.map(toMember);
  }

  async createMember(caller: Caller, body: RouteBody<"createMember">): Promise<Member> {
    if (body.role === "owner" && caller.role !== "owner") {
      throw new AppError("forbidden", "Only owners can add owners.", { requiredRole: "owner" });
    }
    const row: Selectable<UserTable> = {
      id: newId("usr"),
      org_id: caller.orgId,
      email: body.email.toLowerCase(),
      role: body.role,
      created_at: nowIso(),
      source: "local",
      oidc_subject: null,
      disabled_at: null,
    };
    try {
      await this.db.insertInto("users").values(row).execute();
    } catch (error) {
      if (isUniqueViolation(error))
        throw new AppError("name_taken", `${row.email} is already a member.`, { email: row.email });
      throw error;
    }
    await this.#record(
      caller,
      "iam.member.create",
      { type: "user", id: row.id },
      { email: row.email, role: row.role },
    );
    return toMember(row);
  }

  async updateMember(
    caller: Caller,
    memberId: string,
    body: RouteBody<"updateMember">,
  ): Promise<Member> {
    const member = await this.#member(caller, memberId);
    const touchesOwner = member.role === "owner" || body.role === "owner";
    if (touchesOwner && caller.role !== "owner") {
      throw new AppError("forbidden", "Only owners can change an owner or make one.", {
        requiredRole: "owner",
      });
    }
    const demotesOwner =
      member.role === "owner" && ((body.role && body.role !== "owner") || body.disabled === true);
    if (demotesOwner) await this.#keepAnOwner(caller.orgId, member.id);
    const disabledAt =
      body.disabled === undefined
        ? member.disabled_at
        : body.disabled
          ? (member.disabled_at ?? nowIso())
          : null;
    await this.db
      .updateTable("users")
      .set({ role: body.role ?? member.role, disabled_at: disabledAt })
      .where("org_id", "=", caller.orgId)
      .where("id", "=", member.id)
      .execute();
    if (body.disabled) await this.policies.dropApprover(caller.orgId, member.id);
    await this.#record(
      caller,
      "iam.member.update",
      { type: "user", id: member.id },
      { ...body, previousRole: member.role },
    );
    return toMember(await this.#member(caller, member.id));
  }

  async removeMember(caller: Caller, memberId: string): Promise<Member> {
    const member = await this.#member(caller, memberId);
    if (member.role === "owner") {
      if (caller.role !== "owner")
        throw new AppError("forbidden", "Only owners can remove an owner.", {
          requiredRole: "owner",
        });
      await this.#keepAnOwner(caller.orgId, member.id);
    }
    const now = nowIso();
    await this.db.transaction().execute(async (trx) => {
      await trx
        .updateTable("users")
        .set({ disabled_at: member.disabled_at ?? now })
        .where("org_id", "=", caller.orgId)
        .where("id", "=", member.id)
        .execute();
      await trx
        .updateTable("api_keys")
        .set({ revoked_at: now })
        .where("org_id", "=", caller.orgId)
        .where("principal_type", "=", "user")
        .where("principal_id", "=", member.id)
        .where("revoked_at", "is", null)
        .execute();
    });
    await this.policies.dropApprover(caller.orgId, member.id);
    await this.#record(
      caller,
      "iam.member.remove",
      { type: "user", id: member.id },
      { email: member.email },
    );
    return toMember(await this.#member(caller, member.id));
  }

  // --- agents --------------------------------------------------------------------------------

  async listAgents(caller: Caller): Promise<Agent[]> {
    const rows = await this.db
      .selectFrom("agents")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .orderBy("created_at")
      .execute();
    return rows.map(toAgent);
  }

  async createAgent(caller: Caller, body: RouteBody<"createAgent">): Promise<Agent> {
    if (!roleAtLeast(caller.role, body.role)) {
      throw new AppError(
        "forbidden",
        `You cannot create an agent with a role above your own (${caller.role}).`,
      );
    }
    const row: Selectable<AgentTable> = {
      id: newId("agt"),
      org_id: caller.orgId,
      name: body.name,
      role: body.role,
      created_at: nowIso(),
      disabled_at: null,
      created_by_type: caller.actor.type,
      created_by_id: caller.actor.id,
    };
    try {
      await this.db.insertInto("agents").values(row).execute();
    } catch (error) {
      if (isUniqueViolation(error))
        throw new AppError("name_taken", `An agent named ${body.name} already exists.`, {
          name: body.name,
        });
      throw error;
    }
    await this.#record(
      caller,
      "iam.agent.create",
      { type: "agent", id: row.id },
      { name: row.name, role: row.role },
    );
    return toAgent(row);
  }

  async deleteAgent(caller: Caller, agentId: string): Promise<Agent> {
    const agent = await this.db
      .selectFrom("agents")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("id", "=", agentId)
      .executeTakeFirst();
    if (!agent)
      throw new AppError("not_found", `No agent ${agentId}.`, { resource: "agent", id: agentId });
    const now = nowIso();
    await this.db.transaction().execute(async (trx) => {
      await trx
        .updateTable("agents")
        .set({ disabled_at: agent.disabled_at ?? now })
        .where("id", "=", agent.id)
        .execute();
      await trx
        .updateTable("api_keys")
        .set({ revoked_at: now })
        .where("org_id", "=", caller.orgId)
        .where("principal_type", "=", "agent")
        .where("principal_id", "=", agent.id)
        .where("revoked_at", "is", null)
        .execute();
      await trx
        .deleteFrom("entitlements")
        .where("org_id", "=", caller.orgId)
        .where("principal_type", "=", "agent")
        .where("principal_id", "=", agent.id)
        .execute();
    });
    await this.#record(
      caller,
      "iam.agent.delete",
      { type: "agent", id: agent.id },
      { name: agent.name },
    );
    return toAgent({ ...agent, disabled_at: agent.disabled_at ?? now });
  }

  // --- API keys ------------------------------------------------------------------------------

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
        await this.#record(
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
    const holderRole = await this.#holderRole(caller.orgId, principal);
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
      created_by_type: caller.actor.type,
      created_by_id: caller.actor.id,
    };
    await this.db.insertInto("api_keys").values(row).execute();
    await this.#record(
      caller,
      "iam.key.create",
      { type: "api_key", id: row.id },
      { name: row.name, principal, scopes: body.scopes },
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
    await this.#record(
      caller,
      "iam.key.revoke",
      { type: "api_key", id: key.id },
      { name: key.name },
    );
    return toKey({ ...key, revoked_at: revokedAt });
  }

  // --- entitlements --------------------------------------------------------------------------

  async listEntitlements(caller: Caller): Promise<EntitlementGrant[]> {
    const rows = await this.db
      .selectFrom("entitlements")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .orderBy("created_at")
      .execute();
    return rows.map(toGrant);
  }

  async grantEntitlement(
    caller: Caller,
    body: RouteBody<"grantEntitlement">,
  ): Promise<EntitlementGrant> {
    await this.#holderRole(caller.orgId, body.principal);
    const existing = await this.db
      .selectFrom("entitlements")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("entitlement", "=", body.entitlement)
      .where("principal_type", "=", body.principal.type)
      .where("principal_id", "=", body.principal.id)
      .executeTakeFirst();
    if (existing) return toGrant(existing);
    const row: Selectable<EntitlementTable> = {
      id: newId("ent"),
      org_id: caller.orgId,
      entitlement: body.entitlement,
      principal_type: body.principal.type,
      principal_id: body.principal.id,
      granted_by: caller.actor.id,
      created_at: nowIso(),
    };
    await this.db.insertInto("entitlements").values(row).execute();
    await this.#record(
      caller,
      "iam.entitlement.grant",
      { type: body.principal.type, id: body.principal.id },
      { entitlement: body.entitlement, grantId: row.id },
    );
    return toGrant(row);
  }

  async revokeEntitlement(caller: Caller, grantId: string): Promise<EntitlementGrant> {
    const row = await this.db
      .selectFrom("entitlements")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("id", "=", grantId)
      .executeTakeFirst();
    if (!row)
      throw new AppError("not_found", `No entitlement grant ${grantId}.`, {
        resource: "entitlement",
        id: grantId,
      });
    await this.db.deleteFrom("entitlements").where("id", "=", row.id).execute();
    await this.#record(
      caller,
      "iam.entitlement.revoke",
      { type: row.principal_type, id: row.principal_id },
      { entitlement: row.entitlement, grantId: row.id },
    );
    return toGrant(row);
  }

  // --- projects ------------------------------------------------------------------------------

  async listProjects(caller: Caller): Promise<Project[]> {
    const rows = await this.db
      .selectFrom("projects")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .orderBy("created_at")
      .execute();
    return rows.map((r) => ({ id: r.id, name: r.name, createdAt: r.created_at }));
  }

  async createProject(caller: Caller, body: RouteBody<"createProject">): Promise<Project> {
    const row = { id: newId("prj"), org_id: caller.orgId, name: body.name, created_at: nowIso() };
    try {
      await this.db.insertInto("projects").values(row).execute();
    } catch (error) {
      if (isUniqueViolation(error))
        throw new AppError("name_taken", `A project named ${body.name} already exists.`, {
          name: body.name,
        });
      throw error;
    }
    await this.#record(
      caller,
      "iam.project.create",
      { type: "project", id: row.id },
      { name: row.name },
    );
    return { id: row.id, name: row.name, createdAt: row.created_at };
  }

  // --- internals -----------------------------------------------------------------------------

  async #member(caller: Caller, memberId: string): Promise<Selectable<UserTable>> {
    const row = await this.db
      .selectFrom("users")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("id", "=", memberId)
      .executeTakeFirst();
    if (!row)
      throw new AppError("not_found", `No member ${memberId}.`, {
        resource: "member",
        id: memberId,
      });
    return row;
  }

  async #holderRole(
    orgId: string,
    principal: { type: "user" | "agent"; id: string },
  ): Promise<Role> {
    const role = await activeHolderRole(this.db, orgId, principal);
    if (!role) {
      throw new AppError("not_found", `No active ${principal.type} ${principal.id}.`, {
        resource: principal.type,
        id: principal.id,
      });
    }
    return role;
  }

  async #keepAnOwner(orgId: string, leavingId: string): Promise<void> {
    const others = await this.db
      .selectFrom("users")
      .select("id")
      .where("org_id", "=", orgId)
      .where("role", "=", "owner")
      .where("disabled_at", "is", null)
      .where("id", "!=", leavingId)
      .limit(1)
      .executeTakeFirst();
    if (!others) throw new AppError("last_owner", "The org must keep at least one active owner.");
  }

  async #record(
    caller: Caller,
    action: string,
    target: { type: string; id: string },
    details: Record<string, unknown>,
    outcome: "success" | "denied" = "success",
  ) {
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action,
      target,
      outcome,
      details,
    });
  }
}
