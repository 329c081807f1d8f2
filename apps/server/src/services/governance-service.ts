import type { GovernanceReport, RouteQuery } from "@shells/contract";
import { sql, type Kysely } from "kysely";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import { jsonInteger } from "../store/dialect.js";
import type { Database } from "../store/schema.js";
import { findProject } from "../store/shells-store.js";
import { monthStart } from "./metering-service.js";

/** The nearest-rank percentile `p` (0–100) of sorted numbers. */
function percentile(sorted: readonly number[], p: number): number {
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? 0;
}

/**
 * Governance metrics of an org or one of its projects (a team): shells and runs active now, and
 * over a range the requests refused (by the history's action; aggregated events such as egress
 * denials count each refusal they stand for), and approvals requested, decided and how long the
 * decisions took. Read from the store as it stands; nothing is kept for it.
 */
export class GovernanceService {
  constructor(private readonly db: Kysely<Database>) {}

  /** The report the `getGovernance` route answers. */
  async report(caller: Caller, query: RouteQuery<"getGovernance">): Promise<GovernanceReport> {
    const now = Date.now();
    const toMs = query.to ? Date.parse(query.to) : now;
    const fromMs = query.from ? Date.parse(query.from) : monthStart(Math.min(toMs, now) - 1);
    if (fromMs >= toMs)
      throw new AppError("validation_failed", "from must be before to.", { field: "from" });
    const from = new Date(fromMs).toISOString();
    const to = new Date(toMs).toISOString();
    const orgId = caller.orgId;
    let projectId: string | null = null;
    if (query.project) {
      const project = await findProject(this.db, orgId, query.project);
      if (!project)
        throw new AppError("project_not_found", `No project named ${query.project} in this org.`);
      projectId = project.id;
    }

    let shellsQuery = this.db
      .selectFrom("shells")
      .select(["status", (eb) => eb.fn.countAll<number>().as("count")])
      .where("org_id", "=", orgId)
      .where("status", "!=", "deleted")
      .groupBy("status");
    if (projectId) shellsQuery = shellsQuery.where("project_id", "=", projectId);
    const shells = { provisioning: 0, running: 0, stopped: 0, error: 0 };
    for (const row of await shellsQuery.execute())
      if (row.status in shells) shells[row.status as keyof typeof shells] = Number(row.count);

    const runRows = await this.db
      .selectFrom("runs as r")
      .innerJoin("shells as s", "s.id", "r.shell_id")
      .select([
        "r.status",
        sql<number>`sum(CASE WHEN r.created_at >= ${from} AND r.created_at < ${to} THEN 1 ELSE 0 END)`.as(
          "started",
        ),
        (eb) => eb.fn.countAll<number>().as("all"),
      ])
      .where("r.org_id", "=", orgId)
      .$if(projectId !== null, (q) => q.where("s.project_id", "=", projectId as string))
      .groupBy("r.status")
      .execute();
    const runs = { active: 0, started: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const row of runRows) {
      runs.started += Number(row.started);
      if (row.status === "running") runs.active = Number(row.all);
      else if (row.status !== "pending_approval") runs[row.status] = Number(row.started);
    }

    const denialRows = await this.db
      .selectFrom("activity")
      .select([
        "action",
        sql<number>`sum(coalesce(${jsonInteger(this.db, sql`details`, "count")}, 1))`.as("count"),
      ])
      .where("org_id", "=", orgId)
      .where("outcome", "=", "denied")
      .where("time", ">=", from)
      .where("time", "<", to)
      .$if(projectId !== null, (q) =>
        q.where((eb) =>
          eb.or([
            eb.and([
              eb("target_type", "=", "shell"),
              eb(
                "target_id",
                "in",
                eb
                  .selectFrom("shells")
                  .select("id")
                  .where("project_id", "=", projectId as string),
              ),
            ]),
            eb.and([eb("target_type", "=", "project"), eb("target_id", "=", projectId as string)]),
          ]),
        ),
      )
      .groupBy("action")
      .execute();
    const byKind = denialRows
      .map((row) => ({ kind: row.action, count: Number(row.count) }))
      .sort((a, b) => b.count - a.count || a.kind.localeCompare(b.kind));

    const allApprovals = await this.db
      .selectFrom("approvals")
      .select(["action", "shell_id", "state", "created_at", "decided_at"])
      .where("org_id", "=", orgId)
      .where("created_at", ">=", from)
      .where("created_at", "<", to)
      .execute();
    const approvalRows =
      projectId === null ? allApprovals : await this.#ofProject(allApprovals, projectId);
    const approvals = {
      requested: approvalRows.length,
      pending: 0,
      granted: 0,
      denied: 0,
      expired: 0,
      withdrawn: 0,
    };
    const waits: number[] = [];
    for (const row of approvalRows) {
      approvals[row.state] += 1;
      if (row.decided_at && (row.state === "granted" || row.state === "denied"))
        waits.push((Date.parse(row.decided_at) - Date.parse(row.created_at)) / 1000);
    }
    waits.sort((a, b) => a - b);

    return {
      from,
      to,
      project: query.project ?? null,
      shells,
      runs,
      denials: { total: byKind.reduce((sum, k) => sum + k.count, 0), byKind },
      approvals: {
        ...approvals,
        timeToDecisionSeconds:
          waits.length === 0
            ? null
            : { p50: percentile(waits, 50), p90: percentile(waits, 90), max: waits.at(-1) ?? 0 },
      },
    };
  }

  /**
   * The approvals that concern one project. An approval names what it acts on in `shell_id`: a
   * shell, a run (whose project is its shell's, once it has one) or, for `project_egress_change`,
   * the project itself.
   */
  async #ofProject<T extends { action: string; shell_id: string }>(
    approvals: T[],
    projectId: string,
  ): Promise<T[]> {
    const targets = [...new Set(approvals.map((a) => a.shell_id))];
    if (targets.length === 0) return [];
    const runShells = await this.db
      .selectFrom("runs")
      .select(["id", "shell_id"])
      .where("id", "in", targets)
      .execute();
    const shellOfRun = new Map(runShells.map((r) => [r.id, r.shell_id]));
    const shellIds = [...new Set([...targets, ...shellOfRun.values()])];
    const inProject = new Set(
      (
        await this.db
          .selectFrom("shells")
          .select("id")
          .where("id", "in", shellIds)
          .where("project_id", "=", projectId)
          .execute()
      ).map((row) => row.id),
    );
    return approvals.filter((a) =>
      a.action === "project_egress_change"
        ? a.shell_id === projectId
        : inProject.has(a.shell_id) || inProject.has(shellOfRun.get(a.shell_id) ?? ""),
    );
  }
}
