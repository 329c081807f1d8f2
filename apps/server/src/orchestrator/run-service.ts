import {
  canonicalSha256,
  type ActivityEvent,
  type ApprovalContext,
  type Artifact,
  type Language,
  type PendingApproval,
  type Run,
  type RunFrame,
  type RunOutput,
  type RouteBody,
  type SkippedArtifact,
  type WorkspaceChanges,
  type WorkspaceDiff,
} from "@shells/contract";
import { NODE_HELPER, PYTHON_HELPER, RUNNER_DIR, mainFile, runCommand } from "@shells/runner";
import type { FastifyBaseLogger } from "fastify";
import type { Kysely, Selectable } from "kysely";
import { posix } from "node:path";
import { AppError } from "../errors.js";
import { actorOf, type Caller } from "../iam/principal.js";
import { newId, nowIso } from "../ids.js";
import { sha256 } from "../audit/sha256.js";
import type { ActivityService } from "../services/activity-service.js";
import type { ClonedSource } from "../sources/git-clone.js";
import type { Database, RunTable } from "../store/schema.js";
import { shellPath } from "./file-service.js";
import {
  ARTIFACT_LIMITS,
  artifactMatcher,
  RunArtifacts,
  storedArtifacts,
  type RunArtifactsOptions,
} from "./run-artifacts.js";
import { RunOutputTail } from "./run-output-tail.js";
import { SYSTEM_ACTOR as RUN_RECOVERY_ACTOR } from "./reconciler.js";
import { workspaceChanges, workspaceManifest } from "./workspace-changes.js";
import { workspaceDiff } from "./workspace-diff.js";
import type { ShellService } from "./shell-service.js";
import type { ApprovalGate } from "./approval-gate.js";
import { latestRunReview } from "./run-reviews.js";
import type { ResolvedTemplate } from "../services/template-service.js";
import { refuseManagedOverwrite, type TemplatedFields } from "../templates/template-policy.js";

/** Limits of one-shot runs. */
export const RUN_LIMITS = {
  defaultTimeoutMs: 5 * 60 * 1000,
  ...ARTIFACT_LIMITS,
  /** Output kept as frames per run; past it output frames stop (the exec's own limit still applies). */
  frameOutputBytes: 10 * 1024 * 1024,
};

const encoder = new TextEncoder();

/** A run request with its template applied: every default filled in, the template pinned. */
type PreparedRun = RouteBody<"createRun"> & TemplatedFields & { language: Language };

/** How a run ended, as its record, its exit frame and its history say. */
interface RunOutcome {
  status: Run["status"];
  exitCode: number | null;
  killReason: string | null;
  /** JSON of the structured result, or null. */
  result: string | null;
  /** What it kept; null when it failed before it got that far. */
  artifacts: { kept: Artifact[]; skipped: SkippedArtifact[] } | null;
  /** What it changed in /workspace; null when that was not taken (cancelled, failed early). */
  workspaceChanges: WorkspaceChanges | null;
  /** The diff of those changes as kept on the host; null when not taken or not kept. */
  workspaceDiff: WorkspaceDiff | null;
  /** Why it failed (the control plane could not run it), or a result file that is not JSON. */
  error: string | null;
}

/** A run as the API shows it; `live` is the output tail of a run this server runs now. */
export function toRun(row: Selectable<RunTable>, live?: RunOutputTail): Run {
  return {
    id: row.id,
    status: row.status,
    ...(row.template !== null ? { template: row.template } : {}),
    language: row.language as Run["language"],
    runtime: row.runtime as Run["runtime"],
    shellId: row.shell_id,
    exitCode: row.exit_code,
    killReason: row.kill_reason as Run["killReason"],
    result: row.result === null ? null : (JSON.parse(row.result) as unknown),
    ...storedArtifacts(row.artifacts),
    output: live
      ? live.snapshot()
      : row.output_tail === null
        ? null
        : (JSON.parse(row.output_tail) as RunOutput),
    error: row.error,
    createdAt: row.created_at,
    finishedAt: row.finished_at,
    ...(row.expired_at !== null ? { expiredAt: row.expired_at } : {}),
  };
}

/** Refuses to answer what a run kept once its retention ran out, with `artifact_expired`. */
function refuseExpired(row: Selectable<RunTable>, what: string): void {
  if (row.expired_at !== null)
    throw new AppError(
      "artifact_expired",
      `Run ${row.id} no longer keeps its ${what}: they were removed when its retention ran out (${row.expired_at}); its record and manifest stay.`,
      { expiredAt: row.expired_at },
    );
}

/**
 * The main file of a run that names a git source's entrypoint instead of code: it runs the file
 * with the language's interpreter, from /workspace, with the `shells` helper as code runs get it.
 */
function entrypointCode(language: RouteBody<"createRun">["language"], path: string): string {
  const quoted = JSON.stringify(path);
  switch (language) {
    case "python":
      return `import os, runpy, sys\nos.chdir("/workspace")\nsys.argv = [${quoted}]\nsys.path.insert(0, os.path.dirname(${quoted}))\nrunpy.run_path(${quoted}, run_name="__main__")\n`;
    case "node":
      return `process.chdir("/workspace");\nprocess.argv[1] = ${quoted};\nrequire(${quoted});\n`;
    default:
      return `cd /workspace && exec sh '${path.replace(/'/g, "'\\''")}'\n`;
  }
}

/**
 * One-shot runs: an ephemeral shell is created, seeded, runs the code or command with output
 * streamed as frames, reports its structured result and artifacts, and is torn down. Frames are
 * stored, so a stream can be resumed from any `seq`; artifacts are kept under the data dir per org.
 */
export class RunService {
  readonly #listeners = new Map<string, Set<(frame: RunFrame) => void>>();
  readonly #cancel = new Map<string, AbortController>();
  readonly #running = new Map<string, Promise<void>>();
  /** The output tails of the runs this server runs now; a finished run's is on its record. */
  readonly #tails = new Map<string, RunOutputTail>();
  readonly #artifacts: RunArtifacts;

  constructor(
    private readonly db: Kysely<Database>,
    private readonly shells: ShellService,
    private readonly activity: ActivityService,
    dataDir: string,
    private readonly logger: FastifyBaseLogger,
    options: { artifacts?: RunArtifactsOptions; gate?: ApprovalGate } = {},
  ) {
    this.#artifacts = new RunArtifacts(dataDir, logger, options.artifacts);
    this.#gate = options.gate;
    this.#gate?.performWith(["run"], (requester, approval) =>
      this.startApproved(requester, approval.shell_id),
    );
  }

  /** Where runs of templates marked `reviewBeforeRun` wait; without it they are refused. */
  readonly #gate: ApprovalGate | undefined;

  /**
   * Starts a run, or parks it for review when its template asks for one: then the answer is the
   * pending approval, and the run starts as its requester when a listed approver grants it.
   */
  async create(caller: Caller, request: RouteBody<"createRun">): Promise<Run | PendingApproval> {
    // Refuse unmatchable patterns before any shell exists (the contract refuses them too).
    artifactMatcher(request.artifacts ?? []);
    const { input: body, template } = await this.shells.withTemplate(caller, request);
    if (template) refuseManagedOverwrite(template.definition, body.files ?? []);
    const id = newId("run", 10);
    if (template?.definition.reviewBeforeRun)
      return this.#park(caller, id, body, template, {
        policy: `template ${template.ref} requires review before run`,
      });
    const bindings = body.bindings ?? [];
    if (template?.definition.reviewBindings && bindings.length > 0)
      return this.#park(caller, id, body, template, {
        summary: `grant service bindings ${bindings.join(", ")} to a run`,
        policy: `template ${template.ref} requires review of binding grants`,
        bindings: [...bindings],
      });
    return this.#start(caller, id, body, null);
  }

  /**
   * Records a run that waits for review and parks it at the approval gate. Its request is kept
   * on the run's record until it starts; a secret environment is refused here, since the record
   * would hold it in the clear (use bindings).
   */
  async #park(
    caller: Caller,
    id: string,
    body: PreparedRun,
    template: ResolvedTemplate,
    why: ApprovalContext,
  ): Promise<PendingApproval> {
    if (body.secretEnv && Object.keys(body.secretEnv).length > 0)
      throw new AppError(
        "validation_failed",
        "A run that waits for review cannot carry secretEnv (its request is kept until it is granted); use bindings.",
        { field: "secretEnv" },
      );
    if (!this.#gate) throw new AppError("review_unavailable", "This server reviews no runs.");
    const what = body.code ?? body.command ?? body.git;
    const row: Selectable<RunTable> = {
      ...this.#newRow(caller, id, body, ""),
      status: "pending_approval",
      pending_request: JSON.stringify(body),
    };
    const pending = await this.#gate.park(
      caller,
      { id, name: id },
      "run",
      { runId: id },
      {
        ...why,
        template: template.ref,
        templateSha256: template.sha256,
        codeSha256: canonicalSha256(sha256, what ?? null),
        language: body.language,
      },
    );
    await this.db.insertInto("runs").values(row).execute();
    await this.#event(caller, id, "run.request", {
      template: template.ref,
      approvalId: pending.approval.id,
    });
    return pending;
  }

  /** Starts a run that waited for review, as its requester, once an approver granted it. */
  async startApproved(requester: Caller, id: string): Promise<void> {
    const row = await this.#row(requester, id);
    if (row.status !== "pending_approval" || row.pending_request === null)
      throw new AppError("invalid_state", `Run ${id} is ${row.status}, not waiting for review.`, {
        status: row.status,
      });
    const body = JSON.parse(row.pending_request) as PreparedRun;
    try {
      await this.#start(requester, id, body, row);
    } catch (error) {
      await this.#settle(
        row,
        `could not start after review: ${error instanceof Error ? error.message : String(error)}`,
      );
      throw error;
    }
  }

  /**
   * Ends a run whose review was denied or expired (read lazily: whenever the run is read), or
   * that could not start after it was granted.
   */
  async #settle(row: Selectable<RunTable>, why: string): Promise<Selectable<RunTable>> {
    const settled = { status: "cancelled" as const, error: why, finished_at: nowIso() };
    const updated = await this.db
      .updateTable("runs")
      .set({ ...settled, pending_request: null })
      .where("id", "=", row.id)
      .where("status", "=", "pending_approval")
      .executeTakeFirst();
    if (Number(updated.numUpdatedRows) > 0)
      await this.activity.record({
        orgId: row.org_id,
        actor: { type: "system", id: "system" },
        action: "run.finish",
        target: { type: "run", id: row.id },
        outcome: "success",
        details: { status: "cancelled", error: why, template: row.template },
      });
    return { ...row, ...settled, pending_request: null };
  }

  /** A pending run as it stands: cancelled once its review was denied, withdrawn or has expired. */
  async #current(row: Selectable<RunTable>): Promise<Selectable<RunTable>> {
    if (row.status !== "pending_approval" || !this.#gate) return row;
    const approval = await this.#gate.forRun(row.org_id, row.id);
    if (!approval || approval.state === "pending" || approval.state === "granted") return row;
    const why = {
      denied: `review denied by ${approval.decided_by ?? "an approver"}: ${approval.reason ?? ""}`,
      withdrawn: `withdrawn by ${approval.decided_by ?? "its requester"} before review: ${approval.reason ?? ""}`,
      expired: "review expired before an approver decided",
    }[approval.state];
    return this.#settle(row, why);
  }

  #newRow(caller: Caller, id: string, body: PreparedRun, shellId: string): Selectable<RunTable> {
    return {
      id,
      org_id: caller.orgId,
      shell_id: shellId,
      status: "running",
      language: body.language,
      runtime: body.runtime ?? "container",
      created_by_type: caller.actor.type,
      created_by_id: caller.actor.id,
      exit_code: null,
      kill_reason: null,
      result: null,
      artifacts: "[]",
      output_tail: null,
      workspace_changes: null,
      expired_at: null,
      template: body.template ?? null,
      pending_request: null,
      error: null,
      created_at: nowIso(),
      finished_at: null,
    };
  }

  /** Makes the run's shell and runs it; `parked`: the record of a run that waited for review. */
  async #start(
    caller: Caller,
    id: string,
    body: PreparedRun,
    parked: Selectable<RunTable> | null,
  ): Promise<Run> {
    // The clone happens here, on the host and before any shell exists: a bad ref, an unreachable
    // or oversize repo is the request's error, and the sandbox never holds the credential.
    const source = body.git ? await this.shells.cloneFor(caller, body.git, body) : null;
    const shell = await this.shells.create(
      caller,
      {
        name: id,
        language: body.language,
        ...(body.template ? { template: body.template } : {}),
        ...(body.runtime ? { runtime: body.runtime } : {}),
        ...(body.network ? { network: body.network } : {}),
        ...(body.egress ? { egress: body.egress } : {}),
        ...(body.resources ? { resources: body.resources } : {}),
        ...(body.ttlSeconds !== undefined ? { ttlSeconds: body.ttlSeconds } : {}),
        ...(body.env ? { env: body.env } : {}),
        ...(body.secretEnv ? { secretEnv: body.secretEnv } : {}),
        ...(body.bindings ? { bindings: body.bindings } : {}),
      },
      undefined,
      { reviewed: parked !== null },
    );
    const row: Selectable<RunTable> = {
      ...this.#newRow(caller, id, body, shell.id),
      runtime: shell.runtime,
      ...(parked ? { created_at: parked.created_at } : {}),
    };
    if (parked)
      await this.db
        .updateTable("runs")
        .set({
          status: "running",
          shell_id: shell.id,
          runtime: shell.runtime,
          pending_request: null,
        })
        .where("id", "=", id)
        .execute();
    else await this.db.insertInto("runs").values(row).execute();
    await this.#event(caller, id, "run.start", {
      shellId: shell.id,
      language: body.language,
      mode: body.code !== undefined ? "code" : body.command !== undefined ? "command" : "git",
      ...(body.template ? { template: body.template } : {}),
      ...(source && body.git
        ? {
            git: {
              repo: body.git.repo,
              ref: body.git.ref,
              commit: source.commit,
              files: source.files,
            },
          }
        : {}),
    });
    const controller = new AbortController();
    this.#cancel.set(id, controller);
    const tail = new RunOutputTail();
    this.#tails.set(id, tail);
    const work = this.#execute(caller, row, body, source, controller.signal, tail)
      .catch((error: unknown) => this.logger.error({ err: error, runId: id }, "run failed"))
      .finally(() => {
        this.#cancel.delete(id);
        this.#running.delete(id);
        this.#tails.delete(id);
      });
    this.#running.set(id, work);
    return this.#toRun(row);
  }

  /** One run, with its latest review. */
  async get(caller: Caller, id: string): Promise<Run> {
    const run = this.#toRun(await this.#current(await this.#row(caller, id)));
    return { ...run, review: await latestRunReview(this.db, caller.orgId, id) };
  }

  /** Resolves once the run ended (or `timeoutMs` passed), with the run as it then stands. */
  async waitFor(caller: Caller, id: string, timeoutMs: number): Promise<Run> {
    const deadline = Date.now() + timeoutMs;
    await new Promise<void>((resolve) => {
      const unsubscribe = this.subscribe(id, (frame) => {
        if (frame.type !== "exit") return;
        unsubscribe();
        resolve();
      });
      void this.get(caller, id).then((run) => {
        if (run.status !== "running") {
          unsubscribe();
          resolve();
        }
      });
      setTimeout(
        () => {
          unsubscribe();
          resolve();
        },
        Math.max(0, deadline - Date.now()),
      ).unref();
    });
    // The exit frame is emitted just before the row is final: wait for the row.
    for (let i = 0; i < 100; i += 1) {
      const run = await this.get(caller, id);
      if (run.status !== "running" || Date.now() > deadline) return run;
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.get(caller, id);
  }

  async list(caller: Caller, limit: number): Promise<Run[]> {
    const rows = await this.db
      .selectFrom("runs")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .orderBy("created_at", "desc")
      .limit(limit)
      .execute();
    const current = await Promise.all(rows.map((row) => this.#current(row)));
    return current.map((row) => this.#toRun(row));
  }

  /** Frames after `afterSeq`, in order. */
  async frames(caller: Caller, id: string, afterSeq = 0): Promise<RunFrame[]> {
    await this.#row(caller, id);
    const rows = await this.db
      .selectFrom("run_frames")
      .selectAll()
      .where("run_id", "=", id)
      .where("seq", ">", afterSeq)
      .orderBy("seq")
      .execute();
    return rows.map((r) => ({
      seq: r.seq,
      type: r.type,
      data: JSON.parse(r.data) as unknown,
      time: r.time,
    }));
  }

  /** Calls `listener` with every new frame of a run until the returned function is called. */
  subscribe(id: string, listener: (frame: RunFrame) => void): () => void {
    const set = this.#listeners.get(id) ?? new Set();
    set.add(listener);
    this.#listeners.set(id, set);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.#listeners.delete(id);
    };
  }

  async activityOf(caller: Caller, id: string): Promise<ActivityEvent[]> {
    const run = await this.#row(caller, id);
    return this.activity.forTargets(caller.orgId, [run.id, run.shell_id]);
  }

  /** What a finished run changed in /workspace; `invalid_state` when that was not taken. */
  async changes(caller: Caller, id: string): Promise<WorkspaceChanges> {
    const row = await this.#row(caller, id);
    refuseExpired(row, "workspace changes");
    const changes = this.#changesOf(row);
    if (changes) return changes;
    throw new AppError(
      "invalid_state",
      row.status === "running"
        ? `Run ${id} is still running; its workspace changes are taken when it ends.`
        : `Run ${id} recorded no workspace changes: it was cancelled, or ended before they were taken.`,
      { status: row.status },
    );
  }

  /** What a run changed in /workspace, or null when that was not taken (yet). */
  async changesOf(caller: Caller, id: string): Promise<WorkspaceChanges | null> {
    return this.#changesOf(await this.#row(caller, id));
  }

  #changesOf(row: Selectable<RunTable>): WorkspaceChanges | null {
    return row.workspace_changes === null
      ? null
      : (JSON.parse(row.workspace_changes) as WorkspaceChanges);
  }

  /**
   * What a finished run changed in /workspace as unified diffs and a binary manifest;
   * `invalid_state` when that was not taken, `artifact_expired` once its retention ran out.
   */
  async diff(caller: Caller, id: string): Promise<WorkspaceDiff> {
    const row = await this.#row(caller, id);
    refuseExpired(row, "workspace diff");
    const diff = row.status === "running" ? null : await this.#artifacts.readDiff(row.org_id, id);
    if (diff) return diff;
    throw new AppError(
      "invalid_state",
      row.status === "running"
        ? `Run ${id} is still running; its diff is taken when it ends.`
        : `Run ${id} recorded no workspace diff: it was cancelled, ended before it was taken, or the server's disk was short of its reserve.`,
      { status: row.status },
    );
  }

  /** A run's workspace diff as kept, or null when none is (for evidence bundles). */
  async diffOf(caller: Caller, id: string): Promise<WorkspaceDiff | null> {
    const row = await this.#row(caller, id);
    return row.expired_at === null ? this.#artifacts.readDiff(row.org_id, id) : null;
  }

  /**
   * Removes what a finished run kept (artifacts, workspace changes, diff) once its retention ran
   * out, marks its record expired and records `run.retention.expire` with what was removed. The
   * record, its result and its artifact manifest with hashes stay. Answers false when another
   * sweep expired it first.
   */
  async expire(row: Selectable<RunTable>, retentionDays: number, now: Date): Promise<boolean> {
    const expiredAt = now.toISOString();
    const marked = await this.db
      .updateTable("runs")
      .set({ expired_at: expiredAt, workspace_changes: null })
      .where("id", "=", row.id)
      .where("expired_at", "is", null)
      .executeTakeFirst();
    if (Number(marked.numUpdatedRows) === 0) return false;
    await this.#artifacts.remove(row.org_id, row.id);
    const hadDiff = await this.#artifacts.removeDiff(row.org_id, row.id);
    await this.activity.record({
      orgId: row.org_id,
      actor: RUN_RECOVERY_ACTOR,
      action: "run.retention.expire",
      target: { type: "run", id: row.id },
      outcome: "success",
      details: {
        retentionDays,
        finishedAt: row.finished_at,
        artifactsRemoved: storedArtifacts(row.artifacts).artifacts.length,
        workspaceChangesRemoved: row.workspace_changes !== null,
        workspaceDiffRemoved: hadDiff,
      },
    });
    return true;
  }

  async artifact(caller: Caller, id: string, path: string): Promise<Uint8Array> {
    const row = await this.#row(caller, id);
    refuseExpired(row, "artifacts");
    const run = this.#toRun(row);
    const normal = posix.normalize(path).replace(/^\/workspace\//, "");
    const known = run.artifacts.find((a) => a.path === normal);
    if (!known)
      throw new AppError(
        "file_not_found",
        `Run ${id} kept no artifact ${path}; it kept: ${run.artifacts.map((a) => a.path).join(", ") || "nothing"}.`,
      );
    return this.#artifacts.read(caller.orgId, id, known.path);
  }

  /**
   * Cancels a running run, reclaims its shell and deletes its artifacts from the host; the record
   * stays (with no artifacts).
   */
  async teardown(caller: Caller, id: string): Promise<Run> {
    const row = await this.#row(caller, id);
    // A run still waiting for review has no shell yet: tearing it down withdraws it and closes
    // its approval (so no later grant starts it).
    if (row.status === "pending_approval") {
      const why = `withdrawn by ${caller.actor.id} before review`;
      await this.#gate?.closePending(caller.orgId, row.id, actorOf(caller), why);
      return this.#toRun(await this.#settle(row, why));
    }
    const controller = this.#cancel.get(id);
    if (controller) {
      controller.abort("stopped");
      await this.db
        .updateTable("runs")
        .set({ status: "cancelled", finished_at: nowIso() })
        .where("id", "=", id)
        .where("status", "=", "running")
        .execute();
    }
    // A cancelled run stops before it keeps anything; wait for it so nothing lands after the delete.
    await this.#running.get(id);
    await this.shells
      .delete(caller, row.shell_id, undefined, { approvalId: undefined })
      .catch(() => undefined);
    const { artifacts, skippedArtifacts } = storedArtifacts(
      (await this.#row(caller, id)).artifacts,
    );
    await this.#artifacts.remove(caller.orgId, id);
    await this.db
      .updateTable("runs")
      .set({ artifacts: JSON.stringify({ kept: [], skipped: skippedArtifacts ?? [] }) })
      .where("id", "=", id)
      .execute();
    await this.#event(caller, id, "run.teardown", {
      shellId: row.shell_id,
      artifactsDeleted: artifacts.length,
    });
    return this.get(caller, id);
  }

  /**
   * Ends the runs a previous process left `running` (it died mid-run: nothing is executing them
   * any more): each becomes `failed` with kill reason `host_restart`, and its shell is marked for
   * deletion, which the reconciler then finishes (a run's shell lives only as long as the run).
   * Call it with the store to itself, before reconciliation: with replicas sharing the store a
   * `running` run may belong to a live one. Answers how many runs it ended.
   */
  async recover(): Promise<number> {
    const cut = await this.db
      .selectFrom("runs")
      .selectAll()
      .where("status", "=", "running")
      .execute();
    const error = "the control plane stopped while the run was running (host_restart)";
    for (const row of cut) {
      await this.db
        .updateTable("runs")
        .set({ status: "failed", kill_reason: "host_restart", error, finished_at: nowIso() })
        .where("id", "=", row.id)
        .where("status", "=", "running")
        .execute();
      await this.db
        .updateTable("shells")
        .set({ delete_requested_by: RUN_RECOVERY_ACTOR.id })
        .where("id", "=", row.shell_id)
        .where("status", "!=", "deleted")
        .execute();
      await this.activity.record({
        orgId: row.org_id,
        actor: RUN_RECOVERY_ACTOR,
        action: "run.finish",
        target: { type: "run", id: row.id },
        outcome: "failure",
        details: { status: "failed", killReason: "host_restart", error, template: row.template },
      });
    }
    return cut.length;
  }

  /** Waits for runs in flight (server shutdown). */
  async drain(): Promise<void> {
    for (const controller of this.#cancel.values()) controller.abort("host_restart");
    await Promise.allSettled([...this.#running.values()]);
  }

  async #execute(
    caller: Caller,
    row: Selectable<RunTable>,
    body: PreparedRun,
    source: ClonedSource | null,
    signal: AbortSignal,
    tail: RunOutputTail,
  ): Promise<void> {
    let seq = 0;
    let outputBytes = 0;
    const emit = async (type: RunFrame["type"], data: unknown) => {
      seq += 1;
      const frame: RunFrame = { seq, type, data, time: Date.now() };
      await this.db
        .insertInto("run_frames")
        .values({ run_id: row.id, seq, type, data: JSON.stringify(data), time: frame.time })
        .execute();
      for (const listener of this.#listeners.get(row.id) ?? []) listener(frame);
    };
    const resultFile = `${RUNNER_DIR}/result.json`;
    const artifactsFile = `${RUNNER_DIR}/artifacts.txt`;
    let exitCode: number | null = null;
    let killReason: string | null = null;
    let outcome: RunOutcome;
    try {
      const shell = await this.shells.runningSandbox(caller, row.shell_id);
      await emit("status", { status: "running", shellId: row.shell_id });
      const write = (path: string, data: Uint8Array, mode?: number) =>
        shell.call((b) => b.files.write(shell.shellId, path, data, mode));
      await write(`${RUNNER_DIR}/shells.py`, encoder.encode(PYTHON_HELPER));
      await write(`${RUNNER_DIR}/shells.cjs`, encoder.encode(NODE_HELPER));
      if (source)
        await shell.call((b) => b.files.importTar(shell.shellId, "/workspace", source.archive));
      for (const file of body.files ?? []) {
        const data =
          file.encoding === "base64"
            ? Buffer.from(file.content, "base64")
            : encoder.encode(file.content);
        await write(shellPath(file.path), data, file.mode);
      }
      let command = body.command;
      const code =
        body.code ??
        (body.git?.entrypoint !== undefined
          ? entrypointCode(body.language, shellPath(body.git.entrypoint))
          : undefined);
      if (code !== undefined) {
        await write(`${RUNNER_DIR}/${mainFile(body.language)}`, encoder.encode(code));
        command = runCommand(body.language);
      }
      // The workspace as the run starts (its files seeded), to say afterwards what it changed.
      const startState = await workspaceManifest(shell).catch((error: unknown) => {
        this.logger.warn({ err: error, runId: row.id }, "could not record the starting workspace");
        return null;
      });
      const decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
      const result = await this.shells.exec(
        caller,
        shell.shellId,
        {
          command: command ?? ["true"],
          env: {
            SHELLS_RESULT: resultFile,
            SHELLS_ARTIFACTS: artifactsFile,
            SHELLS_RUN_ID: row.id,
            ...(source ? { SHELLS_GIT_COMMIT: source.commit } : {}),
          },
          timeoutMs: body.timeoutMs ?? RUN_LIMITS.defaultTimeoutMs,
        },
        {
          signal,
          // Chunks arrive with secret values already masked (ShellService.exec).
          onOutput: async (stream, chunk) => {
            tail.push(stream, chunk);
            if (outputBytes >= RUN_LIMITS.frameOutputBytes) return;
            outputBytes += chunk.length;
            await emit(stream, decoders[stream].decode(chunk, { stream: true }));
          },
        },
      );
      exitCode = result.exitCode;
      killReason = result.killReason ?? null;
      const structured = await this.#readResult(shell, resultFile);
      if (structured.present) await emit("result", structured.value);
      // A cancelled run keeps nothing: its teardown is deleting what it would keep.
      const { kept, skipped } = signal.aborted
        ? { kept: [], skipped: [] }
        : await this.#artifacts.collect(
            caller.orgId,
            row.id,
            shell,
            body.artifacts ?? [],
            artifactsFile,
          );
      for (const artifact of kept) await emit("artifact", artifact);
      const endState =
        startState && !signal.aborted ? await workspaceManifest(shell).catch(() => null) : null;
      const changes = startState && endState ? workspaceChanges(startState, endState) : null;
      const diff =
        startState && endState && changes
          ? await this.#keepDiff(caller.orgId, row.id, startState, endState, changes)
          : null;
      outcome = {
        status: signal.aborted
          ? "cancelled"
          : exitCode === 0 && !killReason
            ? "succeeded"
            : "failed",
        exitCode,
        killReason,
        result: structured.present ? JSON.stringify(structured.value) : null,
        artifacts: { kept, skipped },
        workspaceChanges: changes,
        workspaceDiff: diff,
        error: structured.error ?? null,
      };
    } catch (failure) {
      outcome = {
        status: "failed",
        exitCode,
        killReason,
        result: null,
        artifacts: null,
        workspaceChanges: null,
        workspaceDiff: null,
        error: failure instanceof Error ? failure.message : String(failure),
      };
    }
    // The shell goes before the run is final: once a caller sees the run ended, its history is
    // complete (the shell's deletion, and the egress decisions its proxy writes on the way out).
    await this.shells
      .delete(caller, row.shell_id, undefined, { approvalId: undefined })
      .catch((e: unknown) => this.logger.warn({ err: e, runId: row.id }, "run teardown failed"));
    const { status, error } = outcome;
    await emit("exit", {
      exitCode: outcome.exitCode,
      killReason: outcome.killReason,
      status,
      ...(outcome.artifacts ? {} : { error }),
    });
    await this.db
      .updateTable("runs")
      .set({
        status,
        exit_code: outcome.exitCode,
        kill_reason: outcome.killReason,
        result: outcome.result,
        ...(outcome.artifacts ? { artifacts: JSON.stringify(outcome.artifacts) } : {}),
        output_tail: JSON.stringify(tail.snapshot()),
        workspace_changes: outcome.workspaceChanges && JSON.stringify(outcome.workspaceChanges),
        error,
        finished_at: nowIso(),
      })
      .where("id", "=", row.id)
      .execute();
    await this.#event(
      caller,
      row.id,
      "run.finish",
      outcome.artifacts
        ? {
            status,
            ...(row.template !== null ? { template: row.template } : {}),
            exitCode: outcome.exitCode,
            killReason: outcome.killReason,
            artifacts: outcome.artifacts.kept.length,
            artifactsSkipped: outcome.artifacts.skipped.length,
            hasResult: outcome.result !== null,
            // What an evidence bundle checks the run's record and artifacts against.
            artifactManifest: outcome.artifacts.kept,
            resultSha256:
              outcome.result === null
                ? null
                : canonicalSha256(sha256, JSON.parse(outcome.result) as unknown),
            ...(outcome.workspaceChanges
              ? {
                  workspaceChanges: outcome.workspaceChanges.changes.length,
                  workspaceChangesSha256: canonicalSha256(sha256, outcome.workspaceChanges),
                }
              : {}),
            ...(outcome.workspaceDiff
              ? {
                  workspaceDiffFiles: outcome.workspaceDiff.files.length,
                  workspaceDiffSha256: canonicalSha256(sha256, outcome.workspaceDiff),
                }
              : {}),
          }
        : { status, error, ...(row.template !== null ? { template: row.template } : {}) },
    );
  }

  /** The run's workspace diff, kept on the host; null when it could not be kept. */
  async #keepDiff(
    orgId: string,
    runId: string,
    ...[before, after, changes]: Parameters<typeof workspaceDiff>
  ): Promise<WorkspaceDiff | null> {
    try {
      const diff = await workspaceDiff(before, after, changes);
      if (await this.#artifacts.writeDiff(orgId, runId, diff)) return diff;
      this.logger.warn(
        { runId },
        "the data dir is short of its reserve: the run's diff is not kept",
      );
    } catch (error) {
      this.logger.warn({ err: error, runId }, "could not keep the run's workspace diff");
    }
    return null;
  }

  async #readResult(
    shell: Awaited<ReturnType<ShellService["runningSandbox"]>>,
    path: string,
  ): Promise<{ present: boolean; value: unknown; error?: string }> {
    let bytes: Uint8Array;
    try {
      bytes = await shell.call((b) => b.files.read(shell.shellId, path, 8 * 1024 * 1024));
    } catch (error) {
      if (error instanceof AppError && error.code === "file_not_found")
        return { present: false, value: null };
      throw error;
    }
    try {
      return { present: true, value: JSON.parse(new TextDecoder().decode(bytes)) as unknown };
    } catch {
      return { present: false, value: null, error: "the result file does not hold JSON" };
    }
  }

  /** A run as the API shows it, with the live output tail while this server runs it. */
  #toRun(row: Selectable<RunTable>): Run {
    return toRun(row, this.#tails.get(row.id));
  }

  async #row(caller: Caller, id: string): Promise<Selectable<RunTable>> {
    const row = await this.db
      .selectFrom("runs")
      .selectAll()
      .where("org_id", "=", caller.orgId)
      .where("id", "=", id)
      .executeTakeFirst();
    if (!row) throw new AppError("not_found", `No run ${id}.`, { resource: "run", id });
    return row;
  }

  async #event(caller: Caller, runId: string, action: string, details: Record<string, unknown>) {
    await this.activity.record({
      orgId: caller.orgId,
      actor: actorOf(caller),
      action,
      target: { type: "run", id: runId },
      outcome: "success",
      details,
    });
  }
}
