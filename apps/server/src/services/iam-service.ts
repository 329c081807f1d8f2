import {
  roleAtLeast,
  type Agent,
  type EntitlementGrant,
  type Member,
  type Project,
  type RouteBody,
} from "@shells/contract";
import type { Kysely, Selectable } from "kysely";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import { newId, nowIso } from "../ids.js";
import type { AgentTable, Database, EntitlementTable, UserTable } from "../store/schema.js";
import type { ActivityService } from "./activity-service.js";
import { requireActiveHolder } from "./key-service.js";
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

const toGrant = (row: Selectable<EntitlementTable>): EntitlementGrant => ({
  id: row.id,
  entitlement: row.entitlement as EntitlementGrant["entitlement"],
  principal: { type: row.principal_type, id: row.principal_id },
  grantedBy: row.granted_by,
  createdAt: row.created_at,
});

/**
 * Members, agents, entitlements and projects of one org (API keys live in `KeyService`). Every
 * query is scoped to the caller's org; a row of another org is `not_found`, the same as a missing
 * one.
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
    await this.activity.recordFor(
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
    await this.activity.recordFor(
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
    await this.activity.recordFor(
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
    await this.activity.recordFor(
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
    await this.activity.recordFor(
      caller,
      "iam.agent.delete",
      { type: "agent", id: agent.id },
      { name: agent.name },
    );
    return toAgent({ ...agent, disabled_at: agent.disabled_at ?? now });
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
    await requireActiveHolder(this.db, caller.orgId, body.principal);
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
    await this.activity.recordFor(
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
    await this.activity.recordFor(
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
    await this.activity.recordFor(
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
}
