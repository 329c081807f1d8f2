import {
  roleAtLeast,
  type EgressRules,
  type PendingApproval,
  type ProjectEgress,
  type ProjectEgressUpdate,
} from "@shells/contract";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import { projectEgressDiff } from "../orchestrator/approval-diff.js";
import type { ApprovalGate, GateClearance } from "../orchestrator/approval-gate.js";
import { nowIso } from "../ids.js";
import type { Database } from "../store/schema.js";
import { findProject } from "../store/shells-store.js";
import type { ActivityService } from "./activity-service.js";

/** The rules with each list's repeats dropped (first occurrence kept) and lists left out omitted. */
function normalized(rules: EgressRules): EgressRules {
  const out: Record<string, unknown[]> = {};
  for (const [key, list] of Object.entries(rules))
    if (list !== undefined) out[key] = [...new Set<unknown>(list)];
  return out;
}

/**
 * A project's egress rules: a level of the egress policy between the org's policy and the
 * templates and shells of the project (see `egress/policy.ts` for how the levels combine). Admins
 * set them; every member reads them; each change is recorded with the old and new rules. The
 * egress proxies read them at every connection, so a change applies to running shells at once.
 * A change that widens them passes the org's `project_egress_change` gate; a granted one is
 * applied as its requester, who must still be an admin.
 */
export class ProjectEgressService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
    private readonly gate: ApprovalGate,
  ) {
    gate.performWith(["project_egress_change"], async (requester, approval, clearance) => {
      if (!roleAtLeast(requester.role, "admin"))
        throw new AppError("forbidden", "The requester is no longer an admin of the org.");
      const asked = JSON.parse(approval.request) as { project: string; rules: EgressRules };
      await this.set(requester, asked.project, { rules: asked.rules }, clearance);
    });
  }

  /** The rules of one of the org's projects, by id, for its shells' proxies (null: none). */
  async rulesOf(orgId: string, projectId: string): Promise<EgressRules | null> {
    const row = await this.db
      .selectFrom("project_egress_rules")
      .select("rules")
      .where("org_id", "=", orgId)
      .where("project_id", "=", projectId)
      .executeTakeFirst();
    return row ? (JSON.parse(row.rules) as EgressRules) : null;
  }

  /** A project's rules as the API answers them (empty for a project that has none). */
  async get(caller: Caller, projectName: string): Promise<ProjectEgress> {
    const project = await this.#project(caller.orgId, projectName);
    const row = await this.db
      .selectFrom("project_egress_rules")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("project_id", "=", project.id)
      .executeTakeFirst();
    if (!row) return { project: project.name, rules: {}, updatedAt: null, updatedBy: null };
    return {
      project: project.name,
      rules: JSON.parse(row.rules) as EgressRules,
      updatedAt: row.updated_at,
      updatedBy: { type: row.updated_by_type, id: row.updated_by_id },
    };
  }

  /**
   * Replaces a project's rules (`{}` removes them) and records the change; a widening waits for
   * the org's gate (the answer is then the pending approval, with the diff as its context).
   */
  async set(
    caller: Caller,
    projectName: string,
    body: ProjectEgressUpdate,
    clearance?: GateClearance,
  ): Promise<ProjectEgress | PendingApproval> {
    const project = await this.#project(caller.orgId, projectName);
    const before = await this.rulesOf(caller.orgId, project.id);
    const rules = normalized(body.rules);
    const diff = projectEgressDiff(before, rules);
    let cleared = clearance;
    if (!cleared && diff.widens.length > 0) {
      const target = { type: "project", id: project.id };
      const decision = await this.gate
        .check(
          caller,
          project,
          "project_egress_change",
          body.confirm,
          { project: project.name, rules },
          { summary: `widen the egress rules of project ${project.name}`, diff },
        )
        .catch(async (error: unknown) => {
          await this.activity.recordFor(
            caller,
            "project.egress.update",
            target,
            { project: project.name, reason: error instanceof Error ? error.message : "refused" },
            "denied",
          );
          throw error;
        });
      if ("pending" in decision) return decision.pending;
      cleared = decision.clearance;
    }
    const now = nowIso();
    if (Object.keys(rules).length === 0) {
      await this.db
        .deleteFrom("project_egress_rules")
        .where("org_id", "=", caller.orgId)
        .where("project_id", "=", project.id)
        .execute();
    } else {
      const values = {
        rules: JSON.stringify(rules),
        updated_at: now,
        updated_by_type: caller.actor.type,
        updated_by_id: caller.actor.id,
      };
      await this.db
        .insertInto("project_egress_rules")
        .values({ project_id: project.id, org_id: caller.orgId, ...values })
        .onConflict((oc) => oc.column("project_id").doUpdateSet(values))
        .execute();
    }
    await this.activity.recordFor(
      caller,
      "project.egress.update",
      { type: "project", id: project.id },
      { project: project.name, from: before ?? {}, to: rules, widens: diff.widens, ...cleared },
    );
    return Object.keys(rules).length === 0
      ? { project: project.name, rules: {}, updatedAt: null, updatedBy: null }
      : { project: project.name, rules, updatedAt: now, updatedBy: caller.actor };
  }

  async #project(orgId: string, name: string): Promise<{ id: string; name: string }> {
    const project = await findProject(this.db, orgId, name);
    if (!project) throw new AppError("project_not_found", `No project named ${name} in this org.`);
    return project;
  }
}
