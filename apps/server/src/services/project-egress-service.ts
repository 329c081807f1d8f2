import type { EgressRules, ProjectEgress, ProjectEgressUpdate } from "@shells/contract";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
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
 */
export class ProjectEgressService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
  ) {}

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

  /** Replaces a project's rules (`{}` removes them) and records the change. */
  async set(
    caller: Caller,
    projectName: string,
    body: ProjectEgressUpdate,
  ): Promise<ProjectEgress> {
    const project = await this.#project(caller.orgId, projectName);
    const before = await this.rulesOf(caller.orgId, project.id);
    const rules = normalized(body.rules);
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
      { project: project.name, from: before ?? {}, to: rules },
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
