import {
  canonicalSha256,
  type RouteBody,
  type Template,
  type TemplateDefinition,
  type TemplateDiff,
  type TemplateVersion,
} from "@shells/contract";
import type { Kysely, Selectable } from "kysely";
import { sha256 } from "../audit/sha256.js";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import { newId, nowIso } from "../ids.js";
import type { Database, TemplateTable, TemplateVersionTable } from "../store/schema.js";
import { findProject } from "../store/shells-store.js";
import { isUniqueViolation, UNIQUE_CONSTRAINTS } from "../store/unique-violation.js";
import { checkDefinition, diffDefinitions } from "../templates/template-policy.js";
import type { ActivityService } from "./activity-service.js";

/** A version chosen for a shell or run: its `name@version`, definition and hash. */
export interface ResolvedTemplate {
  ref: string;
  definition: TemplateDefinition;
  sha256: string;
}

function toVersion(name: string, row: Selectable<TemplateVersionTable>): TemplateVersion {
  return {
    template: name,
    version: row.version,
    definition: JSON.parse(row.definition) as TemplateDefinition,
    sha256: row.sha256,
    createdBy: { type: row.created_by_type, id: row.created_by_id },
    createdAt: row.created_at,
  };
}

const byOf = (caller: Caller) => ({
  created_by_type: caller.actor.type === "agent" ? ("agent" as const) : ("user" as const),
  created_by_id: caller.actor.id,
});

/**
 * The org's templates and their versions. A version is written once and never updated: a change
 * is a new version. Every query takes the caller's org, so another org's template is simply not
 * found. Creating a template or a version is recorded in the activity history with the
 * definition's hash.
 */
export class TemplateService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly activity: ActivityService,
  ) {}

  /** The org's templates, by name. */
  async list(caller: Caller): Promise<Template[]> {
    const rows = await this.#rows(caller.orgId).orderBy("templates.name").execute();
    return rows.map((row) => this.#toTemplate(row));
  }

  /** One template with its latest version. */
  async get(
    caller: Caller,
    name: string,
  ): Promise<{ template: Template; latest: TemplateVersion }> {
    const row = await this.#find(caller.orgId, name);
    return {
      template: this.#toTemplate(row),
      latest: await this.#version(row, row.latest_version),
    };
  }

  /** Creates a template and its version 1 (org-wide, or for one existing project). */
  async create(caller: Caller, body: RouteBody<"createTemplate">): Promise<TemplateVersion> {
    checkDefinition(body.definition);
    let projectId: string | null = null;
    if (body.project) {
      const project = await findProject(this.db, caller.orgId, body.project);
      if (!project)
        throw new AppError("project_not_found", `No project named ${body.project} in this org.`);
      projectId = project.id;
    }
    const now = nowIso();
    const row: Selectable<TemplateTable> = {
      id: newId("tpl", 10),
      org_id: caller.orgId,
      project_id: projectId,
      name: body.name,
      latest_version: 1,
      ...byOf(caller),
      created_at: now,
      updated_at: now,
    };
    const version = this.#versionRow(caller, row.id, 1, body.definition, now);
    try {
      await this.db.transaction().execute(async (trx) => {
        await trx.insertInto("templates").values(row).execute();
        await trx.insertInto("template_versions").values(version).execute();
      });
    } catch (error) {
      if (isUniqueViolation(error, UNIQUE_CONSTRAINTS.templateName))
        throw new AppError("name_taken", `A template named ${body.name} already exists.`, {
          name: body.name,
        });
      throw error;
    }
    await this.#record(caller, "template.create", row, version);
    return toVersion(row.name, version);
  }

  /** Adds the next version; earlier versions stay as they are. */
  async addVersion(
    caller: Caller,
    name: string,
    body: RouteBody<"createTemplateVersion">,
  ): Promise<TemplateVersion> {
    checkDefinition(body.definition);
    const row = await this.#find(caller.orgId, name);
    const now = nowIso();
    // The version number is taken by incrementing the row inside the transaction: the update
    // holds the row until commit, so concurrent writers (on any server) get consecutive numbers.
    const version = await this.db.transaction().execute(async (trx) => {
      const { latest_version: next } = await trx
        .updateTable("templates")
        .set((eb) => ({ latest_version: eb("latest_version", "+", 1), updated_at: now }))
        .where("id", "=", row.id)
        .returning("latest_version")
        .executeTakeFirstOrThrow();
      const versionRow = this.#versionRow(caller, row.id, next, body.definition, now);
      await trx.insertInto("template_versions").values(versionRow).execute();
      return versionRow;
    });
    await this.#record(caller, "template.version", row, version);
    return toVersion(row.name, version);
  }

  /** Every version of a template, oldest first. */
  async versions(caller: Caller, name: string): Promise<TemplateVersion[]> {
    const row = await this.#find(caller.orgId, name);
    const rows = await this.db
      .selectFrom("template_versions")
      .selectAll()
      .where("template_id", "=", row.id)
      .orderBy("version")
      .execute();
    return rows.map((v) => toVersion(row.name, v));
  }

  /** One version of a template. */
  async version(caller: Caller, name: string, version: number): Promise<TemplateVersion> {
    return this.#version(await this.#find(caller.orgId, name), version);
  }

  /** The fields that differ from version `from` to version `to`. */
  async diff(caller: Caller, name: string, from: number, to: number): Promise<TemplateDiff> {
    const row = await this.#find(caller.orgId, name);
    const [a, b] = [await this.#version(row, from), await this.#version(row, to)];
    return { template: row.name, from, to, changes: diffDefinitions(a.definition, b.definition) };
  }

  /**
   * The version a shell or run of `projectName` uses for `ref` (`name` or `name@version`). A
   * template scoped to another project is not found, like one of another org.
   */
  async resolve(caller: Caller, ref: string, projectName: string): Promise<ResolvedTemplate> {
    const [name = "", asked] = ref.split("@");
    const row = await this.#find(caller.orgId, name);
    if (row.project_id !== null) {
      const project = await findProject(this.db, caller.orgId, projectName);
      if (project?.id !== row.project_id)
        throw new AppError("template_not_found", `No template ${name} in project ${projectName}.`, {
          template: name,
        });
    }
    const version = await this.#version(row, asked ? Number(asked) : row.latest_version);
    return {
      ref: `${row.name}@${version.version}`,
      definition: version.definition,
      sha256: version.sha256,
    };
  }

  /** The definition of `name@version` in an org (a shell's recorded template), or null. */
  async definitionAt(orgId: string, ref: string): Promise<TemplateDefinition | null> {
    const [name = "", version] = ref.split("@");
    const row = await this.#rows(orgId).where("templates.name", "=", name).executeTakeFirst();
    if (!row || version === undefined) return null;
    return (await this.#version(row, Number(version)).catch(() => null))?.definition ?? null;
  }

  #versionRow(
    caller: Caller,
    templateId: string,
    version: number,
    definition: TemplateDefinition,
    now: string,
  ): Selectable<TemplateVersionTable> {
    return {
      template_id: templateId,
      version,
      definition: JSON.stringify(definition),
      sha256: canonicalSha256(sha256, definition),
      ...byOf(caller),
      created_at: now,
    };
  }

  async #record(
    caller: Caller,
    action: string,
    row: Selectable<TemplateTable>,
    version: Selectable<TemplateVersionTable>,
  ): Promise<void> {
    const definition = JSON.parse(version.definition) as TemplateDefinition;
    await this.activity.recordFor(
      caller,
      action,
      { type: "template", id: row.id },
      {
        name: row.name,
        version: version.version,
        sha256: version.sha256,
        locks: definition.locks ?? [],
        reviewBeforeRun: definition.reviewBeforeRun ?? false,
      },
    );
  }

  #rows(orgId: string) {
    return this.db
      .selectFrom("templates")
      .leftJoin("projects", "projects.id", "templates.project_id")
      .selectAll("templates")
      .select("projects.name as project_name")
      .where("templates.org_id", "=", orgId);
  }

  #toTemplate(row: Selectable<TemplateTable> & { project_name: string | null }): Template {
    return {
      id: row.id,
      name: row.name,
      project: row.project_name,
      latestVersion: row.latest_version,
      createdBy: { type: row.created_by_type, id: row.created_by_id },
      createdAt: row.created_at,
      updatedAt: row.updated_at,
    };
  }

  async #find(orgId: string, name: string) {
    const row = await this.#rows(orgId).where("templates.name", "=", name).executeTakeFirst();
    if (!row)
      throw new AppError("template_not_found", `No template named ${name}.`, { template: name });
    return row;
  }

  async #version(row: Selectable<TemplateTable>, version: number): Promise<TemplateVersion> {
    const found = await this.db
      .selectFrom("template_versions")
      .selectAll()
      .where("template_id", "=", row.id)
      .where("version", "=", version)
      .executeTakeFirst();
    if (!found)
      throw new AppError("template_not_found", `Template ${row.name} has no version ${version}.`, {
        template: row.name,
        version,
      });
    return toVersion(row.name, found);
  }
}
