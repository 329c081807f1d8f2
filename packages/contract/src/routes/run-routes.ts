import { z } from "zod";
import { ActivityEvent } from "../activity.js";
import {
  InterpreterRequest,
  InterpreterResult,
  Run,
  RunCreate,
  RunReview,
  RunReviewCreate,
  RunFrame,
  WorkspaceChanges,
  WorkspaceDiff,
} from "../runs.js";
import { PendingApproval, shellId, type RouteSpec } from "./route-spec.js";

/** Running code: interpreter turns in a shell and one-shot runs with their results and artifacts. */
export const runRoutes = {
  runInterpreter: {
    method: "POST",
    path: "/api/v1/shells/:id/interpreter",
    summary: "Run one code-interpreter turn (python or node) in the shell's warm interpreter.",
    description:
      "Turns share one interpreter per shell and language (globals, imports, files), run in order, each with a wall clock (default 60 s). The last expression's value comes back as JSON (or its repr); an exception comes back as a structured error with its traceback. A crashed or timed-out interpreter is replaced by a fresh one on the next turn (`restarted: true`). Idle interpreters end after 10 minutes, any after 1 hour.",
    tag: "interpreter",
    params: z.strictObject({ id: shellId }),
    body: InterpreterRequest,
    response: InterpreterResult,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{shell}" }, body: { code: "1 + 1", language: "python" } },
  },
  createRun: {
    method: "POST",
    path: "/api/v1/runs",
    summary:
      "Start a one-shot run: an ephemeral shell runs code or a command, reports a result and artifacts, and is torn down.",
    description:
      "Answers at once with the run `running`; follow it with `/stream`, then read `/result`. Inside python and node, user code has a `shells` object: `shells.result(value)` and `shells.artifact(path)`; any language can write JSON to the file named by `$SHELLS_RESULT`. A run of a template marked `reviewBeforeRun` answers 202 with a pending approval (`approval.shellId` is the run's id): the run is `pending_approval` until a listed approver grants it (then it starts) or denies it (then it ends `cancelled`).",
    tag: "runs",
    body: RunCreate,
    response: z.union([Run, PendingApproval]),
    successStatus: 201,
    scope: "shells:instances:create",
    idempotent: true,
    example: { body: { language: "bash", command: ["echo", "hi"] } },
  },
  listRuns: {
    method: "GET",
    path: "/api/v1/runs",
    summary: "The org's runs, newest first.",
    tag: "runs",
    query: z.strictObject({ limit: z.coerce.number().int().min(1).max(200).default(50) }),
    response: z.strictObject({ items: z.array(Run) }),
    successStatus: 200,
    scope: "shells:instances:read",
  },
  getRun: {
    method: "GET",
    path: "/api/v1/runs/:id",
    summary: "One run.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: Run,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  streamRun: {
    method: "GET",
    path: "/api/v1/runs/:id/stream",
    summary: "A run's frames: stdout, stderr, status, result, artifact, exit.",
    description:
      "With `Accept: text/event-stream`: every frame so far, then live ones until the run ends; each event's id is its `seq`, and a `Last-Event-ID` header resumes after it. Without: the frames so far as JSON.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: z.strictObject({ items: z.array(RunFrame) }),
    eventStream: RunFrame,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  getRunResult: {
    method: "GET",
    path: "/api/v1/runs/:id/result",
    summary:
      "A run's outcome: status, exit code, kill reason, the structured result and artifacts.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: Run,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  getRunActivity: {
    method: "GET",
    path: "/api/v1/runs/:id/activity",
    summary: "The activity events of a run and of its ephemeral shell, in order.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: z.strictObject({ items: z.array(ActivityEvent) }),
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  getRunChanges: {
    method: "GET",
    path: "/api/v1/runs/:id/changes",
    summary:
      "What a run changed in /workspace: files added, removed or modified, with sizes and SHA-256 before and after.",
    description:
      "Taken from the run's start (after its files were seeded) to its end; 409 `invalid_state` while it runs or when it ended before they were taken; 410 `artifact_expired` once its retention ran out. Its `run.finish` event records the manifest's hash, so an evidence bundle proves it.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: WorkspaceChanges,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  getRunDiff: {
    method: "GET",
    path: "/api/v1/runs/:id/diff",
    summary:
      "What a run changed in /workspace as unified diffs for text files and a manifest (sizes, SHA-256) for binaries.",
    description:
      "Taken at the run's end against /workspace as it started (after its files were seeded). Text files up to 1 MiB are diffed; a patch over 256 KiB, or past 4 MiB for the run, is omitted with `omitted` saying why. 409 `invalid_state` while it runs or when it ended before the diff was taken; 410 `artifact_expired` once its retention ran out. Its `run.finish` event records the diff's hash, so an evidence bundle proves it.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: WorkspaceDiff,
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" } },
  },
  readRunArtifact: {
    method: "GET",
    path: "/api/v1/runs/:id/artifacts/content",
    summary: "Download one of a run's artifacts.",
    description:
      "404 `file_not_found` for a path the run did not keep; 410 `artifact_expired` once the run's retention ran out (its manifest with hashes stays on the record).",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    query: z.strictObject({ path: z.string().min(1).max(4096) }),
    response: z.unknown(),
    rawResponse: "application/octet-stream",
    successStatus: 200,
    scope: "shells:instances:read",
    example: { params: { id: "{run}" }, query: { path: "out.txt" } },
  },
  deleteRun: {
    method: "DELETE",
    path: "/api/v1/runs/:id",
    summary:
      "Tear a run down: cancel it if still running, reclaim its shell and delete its artifacts. The record stays.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    response: Run,
    successStatus: 200,
    scope: "shells:instances:control",
    example: { params: { id: "{run}" } },
  },
  reviewRun: {
    method: "POST",
    path: "/api/v1/runs/:id/review",
    summary:
      "Review a finished run: a verdict (approved, changes_requested, rejected) and a comment.",
    description:
      "Only the org's listed approvers review, and never a run they are behind (their own, or one of an agent they created or keyed: separation of duties). A run may be reviewed again (a later verdict supersedes the earlier one on the run; all stay in its history and its evidence bundle). A run still waiting for review or still running answers 409 `invalid_state`.",
    tag: "runs",
    params: z.strictObject({ id: shellId }),
    body: RunReviewCreate,
    response: RunReview,
    successStatus: 201,
    scope: "shells:instances:control",
    example: {
      params: { id: "{reviewableRun}" },
      body: { verdict: "approved", comment: "checked" },
    },
  },
} as const satisfies Record<string, RouteSpec>;
