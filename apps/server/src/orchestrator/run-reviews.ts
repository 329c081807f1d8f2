import type { RunReview, RunReviewCreate } from "@shells/contract";
import type { Kysely, Selectable } from "kysely";
import { AppError } from "../errors.js";
import type { Caller } from "../iam/principal.js";
import { separationOfDutiesConflict } from "../iam/separation-of-duties.js";
import { newId, nowIso } from "../ids.js";
import type { ActivityService } from "../services/activity-service.js";
import type { PolicyService } from "../services/policy-service.js";
import type { Database, RunReviewTable } from "../store/schema.js";
import type { RunService } from "./run-service.js";

const toReview = (row: Selectable<RunReviewTable>): RunReview => ({
  id: row.id,
  verdict: row.verdict,
  comment: row.comment,
  reviewedBy: row.reviewed_by,
  createdAt: row.created_at,
});

/** The latest review of a run, or null when nobody reviewed it. */
export async function latestRunReview(
  db: Kysely<Database>,
  orgId: string,
  runId: string,
): Promise<RunReview | null> {
  const row = await db
    .selectFrom("run_reviews")
    .selectAll()
    .where("org_id", "=", orgId)
    .where("run_id", "=", runId)
    .orderBy("created_at", "desc")
    .orderBy("id", "desc")
    .executeTakeFirst();
  return row ? toReview(row) : null;
}

/**
 * Reviews of finished runs: a listed approver marks a run `approved`, `changes_requested` or
 * `rejected` with a comment. Who may review is who may decide approvals (the org's listed
 * approvers, users only), and never someone behind the run: its creator, or whoever controls the
 * agent that made it (`iam/separation-of-duties.ts`), so nobody signs off their own work.
 */
export class RunReviewService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly runs: RunService,
    private readonly activity: ActivityService,
    private readonly policies: PolicyService,
  ) {}

  /** Every review of a run, oldest first. */
  async list(caller: Caller, runId: string): Promise<RunReview[]> {
    const rows = await this.db
      .selectFrom("run_reviews")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("run_id", "=", runId)
      .orderBy("created_at", "asc")
      .orderBy("id", "asc")
      .execute();
    return rows.map(toReview);
  }

  async review(caller: Caller, runId: string, body: RunReviewCreate): Promise<RunReview> {
    // Answers not_found for another org's run, as for one that does not exist.
    const run = await this.runs.get(caller, runId);
    const creator = await this.db
      .selectFrom("runs")
      .select(["created_by_type", "created_by_id"])
      .where("org_id", "=", caller.orgId)
      .where("id", "=", run.id)
      .executeTakeFirstOrThrow();
    const policy = await this.policies.get(caller.orgId);
    const isApprover = caller.actor.type === "user" && policy.approvers.includes(caller.actor.id);
    const conflict = isApprover
      ? await separationOfDutiesConflict(
          this.db,
          {
            org_id: caller.orgId,
            requested_by_type: creator.created_by_type,
            requested_by_id: creator.created_by_id,
            requested_key_id: null,
          },
          caller,
        )
      : null;
    if (!isApprover || conflict) {
      const why = conflict ?? "not a listed approver";
      await this.activity.recordFor(
        caller,
        "run.review",
        { type: "run", id: run.id },
        { verdict: body.verdict, reason: why },
        "denied",
      );
      throw conflict
        ? new AppError(
            "separation_of_duties",
            `You cannot review a run you are behind (${conflict}). Another approver must.`,
            { runId: run.id, reason: conflict },
          )
        : new AppError("forbidden", "Only the org's listed approvers can review runs.");
    }
    if (run.status === "running" || run.status === "pending_approval")
      throw new AppError(
        "invalid_state",
        `Run ${run.id} is ${run.status}: only a run that ended can be reviewed.`,
        { status: run.status },
      );
    const row: Selectable<RunReviewTable> = {
      id: newId("rvw"),
      org_id: caller.orgId,
      run_id: run.id,
      verdict: body.verdict,
      comment: body.comment,
      reviewed_by: caller.actor.id,
      created_at: nowIso(),
    };
    await this.db.insertInto("run_reviews").values(row).execute();
    await this.activity.recordFor(
      caller,
      "run.review",
      { type: "run", id: run.id },
      { reviewId: row.id, verdict: row.verdict, comment: row.comment, status: run.status },
    );
    return toReview(row);
  }
}
