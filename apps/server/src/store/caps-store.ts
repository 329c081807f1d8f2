import type { Kysely, Selectable } from "kysely";
import { lockForTransaction } from "./dialect.js";
import type { CapAlertTable, Database, ProjectCapTable } from "./schema.js";

/**
 * Project caps and the alerts already raised for them. Functions that read one org's caps take
 * the org id and filter by it; `periodCapsAcrossOrgs` serves the enforcement sweep, which works
 * for the whole server.
 */

/** States that count as a concurrent shell (against caps and against a server's class slots). */
export const CONCURRENT_STATES: readonly string[] = ["provisioning", "running"];

/** A cap row with its project's name. */
export type CapRow = Selectable<ProjectCapTable> & { project_name: string };

/** The org's caps (one project's, when `projectId` is given), in the order they were set. */
export async function listCaps(
  db: Kysely<Database>,
  orgId: string,
  projectId?: string,
): Promise<CapRow[]> {
  let q = db
    .selectFrom("project_caps as c")
    .innerJoin("projects as p", "p.id", "c.project_id")
    .selectAll("c")
    .select("p.name as project_name")
    .where("c.org_id", "=", orgId);
  if (projectId) q = q.where("c.project_id", "=", projectId);
  return q.orderBy("c.position").orderBy("c.id").execute();
}

/** Replaces every cap of one of the org's projects with `caps`, in one transaction. */
export async function replaceProjectCaps(
  db: Kysely<Database>,
  orgId: string,
  projectId: string,
  caps: readonly Omit<ProjectCapTable, "org_id" | "project_id" | "position">[],
): Promise<void> {
  await db.transaction().execute(async (trx) => {
    // Two replacements of one project's caps (on any server) run one after the other.
    await lockForTransaction(trx, `caps:${projectId}`);
    await trx
      .deleteFrom("project_caps")
      .where("org_id", "=", orgId)
      .where("project_id", "=", projectId)
      .execute();
    if (caps.length > 0)
      await trx
        .insertInto("project_caps")
        .values(
          caps.map((cap, position) => ({ ...cap, org_id: orgId, project_id: projectId, position })),
        )
        .execute();
  });
}

/** Every org's caps that count over a period (running seconds, cost). */
export async function periodCapsAcrossOrgs(db: Kysely<Database>): Promise<CapRow[]> {
  return db
    .selectFrom("project_caps as c")
    .innerJoin("projects as p", "p.id", "c.project_id")
    .selectAll("c")
    .select("p.name as project_name")
    .where("c.period", "is not", null)
    .orderBy("c.org_id")
    .execute();
}

/**
 * Records that `level` was raised for a cap in the period starting at `periodStartMs`; true only
 * the first time, so each warning and each stop is announced once per period.
 */
export async function raiseCapAlert(
  db: Kysely<Database>,
  capId: string,
  periodStartMs: number,
  level: CapAlertTable["level"],
): Promise<boolean> {
  const result = await db
    .insertInto("cap_alerts")
    .values({
      cap_id: capId,
      period_start_ms: periodStartMs,
      level,
      created_at: new Date().toISOString(),
    })
    .onConflict((oc) => oc.doNothing())
    .executeTakeFirst();
  return (result.numInsertedOrUpdatedRows ?? 0n) > 0n;
}

/** Shells of one of the org's projects (of one class) in any of `statuses`. */
export async function projectShellsIn(
  db: Kysely<Database>,
  orgId: string,
  projectId: string,
  statuses: readonly string[],
  runtime: string | null,
): Promise<{ id: string }[]> {
  let q = db
    .selectFrom("shells")
    .select("id")
    .where("org_id", "=", orgId)
    .where("project_id", "=", projectId)
    .where("status", "in", [...statuses]);
  if (runtime) q = q.where("runtime", "=", runtime);
  return q.execute();
}
