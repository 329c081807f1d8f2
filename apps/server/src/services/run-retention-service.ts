import type { RunRetention, RunRetentionUpdate } from "@shells/contract";
import type { FastifyBaseLogger } from "fastify";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import { nowIso } from "../ids.js";
import type { RunService } from "../orchestrator/run-service.js";
import type { Database } from "../store/schema.js";
import { findProject } from "../store/shells-store.js";
import type { ActivityService } from "./activity-service.js";

const DAY_MS = 24 * 3600 * 1000;
/** Runs looked at per store query of a sweep. */
const SWEEP_PAGE = 200;

/** What a retention service needs: the store, the history, the runs it expires, the server's default. */
export interface RunRetentionServiceDeps {
  db: Kysely<Database>;
  activity: ActivityService;
  runs: RunService;
  logger: FastifyBaseLogger;
  /** Days where neither a run's project nor its org sets any (`SHELLS_RUN_RETENTION_DAYS`). */
  defaultDays: number;
  /** The time sweeps expire runs against (default: the wall clock). */
  clock?: () => Date;
}

/**
 * Retention of what runs keep (artifacts, workspace changes, diffs): days after a run ends, set
 * by admins per org and per project (recorded as `retention.update`); a project's setting wins
 * over its org's, which wins over the server's default. The sweep (`start(intervalMs)`, run by
 * the holder of the background lease) expires the runs past it through `RunService.expire`,
 * which removes what they kept and records `run.retention.expire` for each.
 */
export class RunRetentionService {
  #timer: NodeJS.Timeout | null = null;
  #sweeping = false;

  constructor(private readonly deps: RunRetentionServiceDeps) {}

  /** The org's own setting and what is in effect where a project sets none. */
  async getOrg(caller: Caller): Promise<RunRetention> {
    return this.#answer(caller.orgId, null);
  }

  /** A project's setting and what is in effect for its runs. */
  async getProject(caller: Caller, projectName: string): Promise<RunRetention> {
    return this.#answer(caller.orgId, await this.#project(caller.orgId, projectName));
  }

  /** Sets (or with `days: null` removes) the org's setting, and records the change. */
  async setOrg(caller: Caller, body: RunRetentionUpdate): Promise<RunRetention> {
    return this.#set(caller, null, body);
  }

  /** Sets (or with `days: null` removes) a project's setting, and records the change. */
  async setProject(
    caller: Caller,
    projectName: string,
    body: RunRetentionUpdate,
  ): Promise<RunRetention> {
    return this.#set(caller, await this.#project(caller.orgId, projectName), body);
  }

  /**
   * One sweep over every org: expires each finished run whose retention ran out by `now` (the
   * service's clock unless given). Answers how many runs it expired.
   */
  async sweep(now: Date = this.deps.clock?.() ?? new Date()): Promise<number> {
    if (this.#sweeping) return 0;
    this.#sweeping = true;
    try {
      return await this.#sweep(now);
    } finally {
      this.#sweeping = false;
    }
  }

  /** Sweeps every `intervalMs` until `stop`. */
  start(intervalMs: number): void {
    this.stop();
    this.#timer = setInterval(() => {
      this.sweep().catch((error: unknown) =>
        this.deps.logger.error({ err: error }, "retention sweep failed"),
      );
    }, intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer started by `start`. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  async #sweep(now: Date): Promise<number> {
    const { db, defaultDays } = this.deps;
    const settings = await db.selectFrom("run_retention").selectAll().execute();
    const days = new Map(settings.map((r) => [`${r.org_id}/${r.project_id}`, r.days]));
    const daysOf = (orgId: string, projectId: string | null) =>
      (projectId !== null ? days.get(`${orgId}/${projectId}`) : undefined) ??
      days.get(`${orgId}/`) ??
      defaultDays;
    // No run finished after this is past any retention in effect: the query stops there.
    const shortest = Math.min(defaultDays, ...settings.map((r) => r.days));
    const horizon = new Date(now.getTime() - shortest * DAY_MS).toISOString();
    let expired = 0;
    // Pages in (finished_at, id) order; "" sorts before every timestamp and id.
    let after = { finishedAt: "", id: "" };
    for (;;) {
      const { finishedAt, id } = after;
      const rows = await db
        .selectFrom("runs")
        .leftJoin("shells", "shells.id", "runs.shell_id")
        .selectAll("runs")
        .select("shells.project_id")
        .where("runs.expired_at", "is", null)
        .where("runs.finished_at", "is not", null)
        .where("runs.finished_at", "<=", horizon)
        .where((eb) =>
          eb.or([
            eb("runs.finished_at", ">", finishedAt),
            eb.and([eb("runs.finished_at", "=", finishedAt), eb("runs.id", ">", id)]),
          ]),
        )
        .orderBy("runs.finished_at")
        .orderBy("runs.id")
        .limit(SWEEP_PAGE)
        .execute();
      for (const { project_id: projectId, ...row } of rows) {
        const retentionDays = daysOf(row.org_id, projectId);
        const until = Date.parse(row.finished_at ?? "") + retentionDays * DAY_MS;
        if (until > now.getTime()) continue;
        if (await this.deps.runs.expire(row, retentionDays, now)) expired += 1;
      }
      const last = rows.at(-1);
      if (!last || rows.length < SWEEP_PAGE) return expired;
      after = { finishedAt: last.finished_at ?? "", id: last.id };
    }
  }

  async #answer(
    orgId: string,
    project: { id: string; name: string } | null,
  ): Promise<RunRetention> {
    const rows = await this.deps.db
      .selectFrom("run_retention")
      .selectAll()
      .where("org_id", "=", orgId)
      .where("project_id", "in", project ? ["", project.id] : [""])
      .execute();
    const own = rows.find((r) => r.project_id === (project?.id ?? ""));
    const org = rows.find((r) => r.project_id === "");
    return {
      project: project?.name ?? null,
      days: own?.days ?? null,
      effectiveDays: own?.days ?? org?.days ?? this.deps.defaultDays,
      updatedAt: own?.updated_at ?? null,
      updatedBy: own ? { type: own.updated_by_type, id: own.updated_by_id } : null,
    };
  }

  async #set(
    caller: Caller,
    project: { id: string; name: string } | null,
    body: RunRetentionUpdate,
  ): Promise<RunRetention> {
    const { db, activity } = this.deps;
    const before = await this.#answer(caller.orgId, project);
    const key = { org_id: caller.orgId, project_id: project?.id ?? "" };
    if (body.days === null) {
      await db
        .deleteFrom("run_retention")
        .where("org_id", "=", key.org_id)
        .where("project_id", "=", key.project_id)
        .execute();
    } else {
      const values = {
        days: body.days,
        updated_at: nowIso(),
        updated_by_type: caller.actor.type,
        updated_by_id: caller.actor.id,
      };
      await db
        .insertInto("run_retention")
        .values({ ...key, ...values })
        .onConflict((oc) => oc.columns(["org_id", "project_id"]).doUpdateSet(values))
        .execute();
    }
    await activity.recordFor(
      caller,
      "retention.update",
      project ? { type: "project", id: project.id } : { type: "org", id: caller.orgId },
      { project: project?.name ?? null, from: before.days, to: body.days },
    );
    return this.#answer(caller.orgId, project);
  }

  async #project(orgId: string, name: string): Promise<{ id: string; name: string }> {
    const project = await findProject(this.deps.db, orgId, name);
    if (!project) throw new AppError("project_not_found", `No project named ${name} in this org.`);
    return project;
  }
}
