import type { Cap, CapStatus, ProjectCaps, RuntimeClass } from "@shells/contract";
import type { FastifyBaseLogger as Logger } from "fastify";
import type { Kysely } from "kysely";
import { AppError } from "../errors.js";
import { newId } from "../ids.js";
import type { Caller } from "../iam/principal.js";
import { KeyedMutex } from "../orchestrator/keyed-mutex.js";
import { SYSTEM_ACTOR } from "../orchestrator/reconciler.js";
import {
  CONCURRENT_STATES,
  listCaps,
  periodCapsAcrossOrgs,
  projectShellsIn,
  raiseCapAlert,
  replaceProjectCaps,
  type CapRow,
} from "../store/caps-store.js";
import type { LifecycleLock } from "../store/lifecycle-lock.js";
import type { Database } from "../store/schema.js";
import { findProject } from "../store/shells-store.js";
import type { ActivityService } from "./activity-service.js";
import { dayStart, monthStart, type MeteringService } from "./metering-service.js";
import { formatMoney, parseMoney } from "./usage-rates.js";

/** From this share of a period cap on, a `quota.warning` is raised (once per period). */
export const WARNING_PERCENT = 80;

/** What the cap service needs. */
export interface CapServiceDeps {
  db: Kysely<Database>;
  activity: ActivityService;
  metering: MeteringService;
  logger: Logger;
  /** Serialises admission per project (on every server sharing the store); in-process if omitted. */
  lock?: LifecycleLock;
}

/** Why a shell is stopped for a cap, as the shell service records it. */
export interface QuotaStop {
  /** Words for the shell's status reason and log. */
  reason: string;
  /** For the history. */
  details: Record<string, unknown>;
}

/** Stops one running shell with kill reason `quota`; false when it was not running any more. */
export type QuotaStopper = (orgId: string, shellId: string, why: QuotaStop) => Promise<boolean>;

/** A cap's use now. */
interface Use {
  /** In the cap's unit (micro-units for cost). */
  used: number | bigint;
  limit: number | bigint;
  percent: number;
  period?: { startMs: number; endMs: number };
}

/**
 * Per-project caps: concurrent shells, and running seconds or cost per UTC day or month, each for
 * every class or one. Admission (`admit`, `check`) refuses a create or start over a cap with
 * `quota_exceeded`; the sweep (`start(intervalMs)`) raises `quota.warning` at 80 % and
 * `quota.reached` at 100 % of a period cap (once per period), and stops the running shells in the
 * cap's scope with kill reason `quota` (`quota.stopped` for each).
 */
export class CapService {
  readonly #admission: LifecycleLock;
  #stopper: QuotaStopper | null = null;
  #timer: NodeJS.Timeout | null = null;
  #sweeping = false;

  constructor(private readonly deps: CapServiceDeps) {
    this.#admission = deps.lock ?? new KeyedMutex();
  }

  /** How shells are stopped when a period cap is reached (the shell service's quota stop). */
  stopWith(stopper: QuotaStopper): void {
    this.#stopper = stopper;
  }

  /** The org's caps (one project's) with their use now. */
  async list(caller: Caller, projectName?: string): Promise<CapStatus[]> {
    const projectId = projectName ? (await this.#project(caller.orgId, projectName)).id : undefined;
    const rows = await listCaps(this.deps.db, caller.orgId, projectId);
    return Promise.all(rows.map((row) => this.#status(row)));
  }

  /** Replaces a project's caps (admins) and answers them with their use. */
  async replace(caller: Caller, projectName: string, body: ProjectCaps): Promise<CapStatus[]> {
    const project = await this.#project(caller.orgId, projectName);
    const seen = new Set<string>();
    for (const cap of body.caps) {
      const key = `${cap.metric}/${"period" in cap ? cap.period : ""}/${cap.runtime ?? "*"}`;
      if (seen.has(key))
        throw new AppError(
          "validation_failed",
          `Two caps of ${cap.metric}${"period" in cap ? ` per ${cap.period}` : ""} for ${cap.runtime ?? "every class"}: keep one.`,
          { field: "caps", cap },
        );
      seen.add(key);
    }
    const now = new Date().toISOString();
    await replaceProjectCaps(
      this.deps.db,
      caller.orgId,
      project.id,
      body.caps.map((cap) => ({
        id: newId("cap", 12),
        metric: cap.metric,
        period: "period" in cap ? cap.period : null,
        runtime: cap.runtime ?? null,
        limit_value: cap.metric === "cost" ? Number(parseMoney(cap.limit)) : cap.limit,
        created_at: now,
      })),
    );
    await this.deps.activity.recordFor(
      caller,
      "usage.caps.update",
      { type: "project", id: project.id },
      { project: project.name, caps: body.caps },
    );
    return this.list(caller, project.name);
  }

  /**
   * Runs `fn` (the insert of a new shell) if no cap of the project refuses one more shell of
   * `runtime`. Admissions to one project are serialised, so two creates cannot both take the
   * last slot.
   */
  async admit<T>(
    orgId: string,
    project: { id: string; name: string },
    runtime: RuntimeClass,
    fn: () => Promise<T>,
  ): Promise<T> {
    return this.#admission.run(`caps:${project.id}`, async () => {
      await this.check(orgId, project.id, runtime);
      return fn();
    });
  }

  /** Throws `quota_exceeded` when a cap of the project refuses one more running shell of `runtime`. */
  async check(orgId: string, projectId: string, runtime: string): Promise<void> {
    const rows = await listCaps(this.deps.db, orgId, projectId);
    for (const row of rows) {
      if (row.runtime !== null && row.runtime !== runtime) continue;
      const use = await this.#use(row);
      if (use.used < use.limit) continue;
      const status = this.#describe(row, use);
      const unit =
        row.metric === "cost" ? (await this.deps.metering.rates(orgId)).currency : unitOf(row);
      throw new AppError(
        "quota_exceeded",
        `Project ${row.project_name} has reached its cap ${capLabel(row)}: ${String(status.used)} of ${String(status.cap.limit)} ${unit}${row.period ? ` this ${row.period}` : ""}.`,
        {
          quota: row.metric,
          project: row.project_name,
          cap: status.cap,
          used: status.used,
          limit: status.cap.limit,
          unit,
          ...(status.periodStart ? { periodStart: status.periodStart } : {}),
        },
      );
    }
  }

  /** Sweeps period caps every `intervalMs` until `stop`; a failed sweep is logged. */
  start(intervalMs: number): void {
    this.stop();
    if (intervalMs <= 0) return;
    this.#timer = setInterval(() => {
      this.enforce().catch((error: unknown) =>
        this.deps.logger.error({ err: error }, "cap sweep failed"),
      );
    }, intervalMs);
    this.#timer.unref();
  }

  /** Stops the timer started by `start`. */
  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * One sweep of every period cap: warns at 80 %, announces 100 % and stops the running shells
   * in the cap's scope. Announcements are raised once per cap and period.
   */
  async enforce(): Promise<void> {
    if (this.#sweeping) return;
    this.#sweeping = true;
    try {
      for (const row of await periodCapsAcrossOrgs(this.deps.db)) {
        const use = await this.#use(row);
        const period = use.period;
        if (!period) continue;
        const status = this.#describe(row, use);
        const details = {
          project: row.project_name,
          cap: status.cap,
          used: status.used,
          limit: status.cap.limit,
          percent: status.percent,
          periodStart: status.periodStart,
        };
        if (
          status.percent >= WARNING_PERCENT &&
          (await raiseCapAlert(this.deps.db, row.id, period.startMs, "warning"))
        )
          await this.#event(row, "quota.warning", { type: "project", id: row.project_id }, details);
        if (status.state !== "reached") continue;
        const running = await projectShellsIn(
          this.deps.db,
          row.org_id,
          row.project_id,
          ["running"],
          row.runtime,
        );
        if (await raiseCapAlert(this.deps.db, row.id, period.startMs, "reached"))
          await this.#event(
            row,
            "quota.reached",
            { type: "project", id: row.project_id },
            {
              ...details,
              stopping: running.map((s) => s.id),
            },
          );
        for (const shell of running) {
          const stopped = await this.#stopper?.(row.org_id, shell.id, {
            reason: `project ${row.project_name} reached its cap ${capLabel(row)}`,
            details,
          });
          if (stopped)
            await this.#event(row, "quota.stopped", { type: "shell", id: shell.id }, details);
        }
      }
    } finally {
      this.#sweeping = false;
    }
  }

  async #project(orgId: string, name: string): Promise<{ id: string; name: string }> {
    const project = await findProject(this.deps.db, orgId, name);
    if (!project) throw new AppError("project_not_found", `No project named ${name} in this org.`);
    return project;
  }

  async #status(row: CapRow): Promise<CapStatus> {
    return this.#describe(row, await this.#use(row));
  }

  async #use(row: CapRow): Promise<Use> {
    if (row.metric === "concurrent_shells") {
      const shells = await projectShellsIn(
        this.deps.db,
        row.org_id,
        row.project_id,
        CONCURRENT_STATES,
        row.runtime,
      );
      return {
        used: shells.length,
        limit: row.limit_value,
        percent: percentOf(shells.length, row.limit_value),
      };
    }
    const now = this.deps.metering.now();
    const startMs = row.period === "day" ? dayStart(now) : monthStart(now);
    const endMs =
      row.period === "day" ? startMs + 86_400_000 : monthStart(startMs + 32 * 86_400_000);
    const totals = await this.deps.metering.totals(row.org_id, {
      fromMs: startMs,
      toMs: now + 1,
      projectId: row.project_id,
      ...(row.runtime ? { runtime: row.runtime } : {}),
    });
    const period = { startMs, endMs };
    if (row.metric === "running_seconds") {
      const seconds = Math.round(totals.runningMs) / 1000;
      return {
        used: seconds,
        limit: row.limit_value,
        percent: percentOf(seconds, row.limit_value),
        period,
      };
    }
    const limit = BigInt(row.limit_value);
    const percent = limit === 0n ? 100 : Number((totals.costMicros * 10_000n) / limit) / 100;
    return { used: totals.costMicros, limit, percent, period };
  }

  #describe(row: CapRow, use: Use): CapStatus {
    const state =
      use.used >= use.limit ? "reached" : use.percent >= WARNING_PERCENT ? "warning" : "ok";
    return {
      id: row.id,
      project: row.project_name,
      cap: toCap(row),
      used: typeof use.used === "bigint" ? formatMoney(use.used) : use.used,
      percent: use.percent,
      state,
      ...(use.period
        ? {
            periodStart: new Date(use.period.startMs).toISOString(),
            periodEnd: new Date(use.period.endMs).toISOString(),
          }
        : {}),
    };
  }

  async #event(
    row: CapRow,
    action: "quota.warning" | "quota.reached" | "quota.stopped",
    target: { type: string; id: string },
    details: Record<string, unknown>,
  ): Promise<void> {
    await this.deps.activity.record({
      orgId: row.org_id,
      actor: SYSTEM_ACTOR,
      action,
      target,
      outcome: "success",
      details,
    });
  }
}

function percentOf(used: number, limit: number): number {
  return limit === 0 ? 100 : Math.round((used / limit) * 10_000) / 100;
}

/** The API's view of a stored cap. */
function toCap(row: CapRow): Cap {
  const runtime = row.runtime ? { runtime: row.runtime as RuntimeClass } : {};
  if (row.metric === "concurrent_shells")
    return { metric: row.metric, limit: row.limit_value, ...runtime };
  const period = row.period ?? "month";
  if (row.metric === "running_seconds")
    return { metric: row.metric, period, limit: row.limit_value, ...runtime };
  return { metric: row.metric, period, limit: formatMoney(BigInt(row.limit_value)), ...runtime };
}

/** `running_seconds per day (container)`: a cap named for people. */
function capLabel(row: CapRow): string {
  return `${row.metric}${row.period ? ` per ${row.period}` : ""} (${row.runtime ?? "every class"})`;
}

/** The unit of a count or time cap (a cost cap's is the rate card's currency). */
function unitOf(row: CapRow): string {
  return row.metric === "concurrent_shells" ? "shells" : "seconds";
}
